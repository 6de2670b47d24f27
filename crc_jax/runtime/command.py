"""Every command's shape: logging set up, the work run, and how it ends.

    sys.exit(command.run(work, interrupted=lambda: "what was kept; what to do"))

`experiments.main`, `report`, `retrain`, `figures`, `ntk_compare`, `tables`, `mechanism`,
`replication` and `crc-jax` all end through `run`:

  * an error a user can act on (crc_jax.errors: a bad argument, config value or input
    file, a run directory or project that cannot be used, a missing device or extra, a
    diverged training run, a file system that refuses a write) is one line,
    `error: ...`, on stderr and exit status 2 (EXIT_USAGE);
  * JAX that cannot start its backend (JAX_PLATFORMS naming a platform that is unknown or
    cannot start, a plugin that fails to load) is one line too, with JAX's reason
    (crc_jax.runtime.devices.backend_failure);
  * Ctrl-C is one line, `interrupted: ...` saying what was kept, and exit status 130. In a
    process of its own the command ends through crc_jax.runtime.interrupt.leave (os._exit
    once its output is flushed): an interrupt inside XLA (e.g. mid-compile) can leave
    JAX's threads in a state that crashes the interpreter's normal teardown.

Log lines go through tqdm.write, so a line never lands in the middle of a progress bar;
TensorFlow's, TFDS's, absl's and JAX's chatter is kept to errors, except JAX's backend
warnings (`jax._src.xla_bridge`: a GPU or TPU present but its plugin missing or failing,
so JAX falls back to the CPU), which are never filtered out. A command called in-process
(a test, a notebook) leaves the caller's logging and signal handlers alone.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from tqdm.auto import tqdm

from crc_jax.errors import (
    EXIT_INTERRUPTED, EXIT_USAGE, ConfigError, DataError, DeviceUnavailable, MissingExtra,
    StorageError, TrainingDiverged, UsageError)
from crc_jax.runtime import interrupt

# The errors every command reports as one line (a command adds its own with `errors=`).
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError, ConfigError, DataError, StorageError, DeviceUnavailable, MissingExtra,
    TrainingDiverged, OSError)
SAVED = "what was saved is whole; run the command again"
TIME_FORMAT = "%(asctime)s %(message)s"

QUIET_LOGGERS = ("jax", "absl", "tensorflow", "tensorflow_datasets", "orbax", "etils", "h5py",
                 "matplotlib", "werkzeug")
# JAX's logger for backend start-up: its warnings say why JAX falls back to the CPU.
KEPT_LOGGERS = ("jax._src.xla_bridge",)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument is a UsageError (one line, exit status 2) instead of
    the usage text and argparse's own exit."""

    def error(self, message):
        raise UsageError(message)


class TqdmHandler(logging.Handler):
    """Writes each record with tqdm.write, which clears and redraws any open bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(level: int = logging.INFO, fmt: str = TIME_FORMAT) -> None:
    """Replace the root logger's handlers (absl's included) with one tqdm-aware handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in KEPT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def error_line(err: BaseException) -> str:
    """The one line of a user's error: a refused read or write names the file."""
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    return str(err)


def run(work: Callable[[], int | None], *, interrupted: Callable[[], str] = lambda: SAVED,
        errors: tuple[type[BaseException], ...] = (), own_process: bool = True,
        log_format: str | None = TIME_FORMAT) -> int:
    """Run a command's `work` and return its exit status (0 when it returns None).

    interrupted: what the Ctrl-C line says was kept (asked when Ctrl-C comes, so it can
    name what the command has parsed by then). errors: exceptions this command also
    reports as one line. own_process: the command is the process (its `main` got no
    argv): logging is set up (with `log_format`; None: the command sets it up itself, as
    absl's app.run installs its own handler first), Ctrl-C is handled even where JAX
    swallows it, and an interrupted process ends at once; in-process callers keep their
    own set-up."""
    if own_process and log_format is not None:
        setup_logging(fmt=log_format)
    if own_process:
        interrupt.install(interrupted)
    try:
        return work() or 0
    except KeyboardInterrupt:
        if own_process:
            interrupt.leave(interrupted())
        print(f"\ninterrupted: {interrupted()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS + errors as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:   # JAX's backend failed to start (JAX_PLATFORMS, a plugin)
        from crc_jax.runtime import devices

        line = devices.backend_failure(err)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE
