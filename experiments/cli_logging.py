"""Logging for the command-line tools: crc_jax's own messages, one per line, through
tqdm so that a log line never lands in the middle of a progress bar; TensorFlow's,
TFDS's, absl's and JAX's chatter kept to errors, except JAX's backend warnings
(`jax._src.xla_bridge`: a GPU or TPU present but its plugin missing or failing, so JAX
falls back to the CPU), which are never filtered out."""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

QUIET_LOGGERS = ("jax", "absl", "tensorflow", "tensorflow_datasets", "orbax", "etils", "h5py",
                 "matplotlib")
# JAX's logger for backend start-up: its warnings say why JAX falls back to the CPU.
KEPT_LOGGERS = ("jax._src.xla_bridge",)


class TqdmHandler(logging.Handler):
    """Writes each record with tqdm.write, which clears and redraws any open bars."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup(level: int = logging.INFO) -> None:
    """Replace the root logger's handlers (absl's included) with one tqdm-aware handler."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in KEPT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
