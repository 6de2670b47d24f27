"""Ctrl-C in a command-line process: one line, exit status 130, every time.

Two things go wrong with a plain KeyboardInterrupt in a process that runs JAX:

  * an interrupt that lands in JAX's garbage-collection callback (`_xla_gc_callback`) is
    printed as "Exception ignored" and lost: the command runs on (jax-ml/jax#18246);
  * after an interrupt inside XLA (e.g. mid-compile) the interpreter's normal teardown can
    crash (SIGSEGV) on JAX's threads.

`install(message)` makes Ctrl-C raise KeyboardInterrupt as usual, so code in progress
cleans up (a half-made project removed), and makes sure the process then ends:
`leave(message)` prints the line and calls os._exit once output is flushed; a lost
interrupt ends it too, at once when it reaches sys.unraisablehook, else after `grace`
seconds. The storage layer is safe against a kill at any moment, so ending without the
interpreter's teardown loses nothing saved.

`deferred()` holds Ctrl-C back across a write that must end whole (an append and its
fsync, crc_jax.durable): a KeyboardInterrupt raised between the last byte and the return
would make the writer cut back a line it had saved, so a completed step or label would be
lost at that instant. The interrupt is handled as soon as the block ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import NoReturn

from crc_jax.errors import EXIT_INTERRUPTED

_leaving = threading.Lock()


def leave(message: str) -> NoReturn:
    """Print "interrupted: MESSAGE" on stderr, flush, and end the process with status 130
    (once: a second caller, e.g. the fallback timer, waits for the first; a second Ctrl-C
    meanwhile is ignored, so it cannot cut this short)."""
    with contextlib.suppress(ValueError):   # ValueError: not the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _leaving.acquire()
    sys.stderr.write(f"\ninterrupted: {message}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def install(message: Callable[[], str], *, grace: float = 2.0) -> None:
    """Handle Ctrl-C (SIGINT) in this process (call from the main thread): KeyboardInterrupt
    is raised; if it is lost, `leave(message())` ends the process anyway."""
    default_hook = sys.unraisablehook

    def on_sigint(signum: int, frame: object) -> None:
        timer = threading.Timer(grace, lambda: leave(message()))
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    def unraisable(info: sys.UnraisableHookArgs) -> None:
        if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
            leave(message())
        default_hook(info)

    signal.signal(signal.SIGINT, on_sigint)
    sys.unraisablehook = unraisable


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT back for the block: one arriving meanwhile (or already caught by Python
    but not yet handled) goes, when the block ends, to the handler that was installed
    (KeyboardInterrupt by default). Python runs signal handlers in the main thread only,
    so elsewhere this changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list = []
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, lambda signum, frame: pending.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            _deliver(previous, pending[0])


def _deliver(handler, frame) -> None:
    """Run `handler` (a value signal.getsignal returned) for a held-back SIGINT."""
    if callable(handler):
        handler(signal.SIGINT, frame)
    elif handler != signal.SIG_IGN:   # SIG_DFL, or None (a handler set outside Python)
        os.kill(os.getpid(), signal.SIGINT)
