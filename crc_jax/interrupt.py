"""Ctrl-C in a command-line process: one line, exit status 130, every time.

Two things go wrong with a plain KeyboardInterrupt in a process that runs JAX:

  * an interrupt that lands in JAX's garbage-collection callback (`_xla_gc_callback`) is
    printed as "Exception ignored" and lost: the command runs on (jax-ml/jax#18246);
  * after an interrupt inside XLA (e.g. mid-compile) the interpreter's normal teardown can
    crash (SIGSEGV) on JAX's threads.

`install(message)` makes Ctrl-C raise KeyboardInterrupt as usual, so code in progress
cleans up (an append cut back, a half-made project removed), and makes sure the process
then ends: `leave(message)` prints the line and calls os._exit once output is flushed;
a lost interrupt ends it too, at once when it reaches sys.unraisablehook, else after
`grace` seconds. The storage layer is safe against a kill at any moment, so ending
without the interpreter's teardown loses nothing saved.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

EXIT_INTERRUPTED = 130
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
