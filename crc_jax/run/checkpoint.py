"""Checkpoints inside training, so a killed run resumes mid-fit instead of from scratch.

Every `every` epochs the fit loop saves the train state (params, optimizer, EMA, batch
statistics, step), the best-so-far evaluation variables and the early-stopping record
(epoch, best epoch and accuracy, history) with orbax, atomically (orbax writes a
temporary folder and renames it), keeping the last two. Data order and augmentation keys
are folded from (key, epoch), so nothing else is needed to continue bit-identically.
Orbax is imported only when checkpointing is on.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import serialization

from crc_jax.runtime import distributed
from crc_jax.runtime import faults
from crc_jax.errors import RunDirError

log = logging.getLogger(__name__)


class _NoMissingMetrics(logging.Filter):
    """Drop orbax's warning + error about per-step metrics on every resume: we save none
    (no `best_fn`), yet CheckpointManager looks for them when it opens a directory."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.funcName == "metrics"
                    and record.pathname.endswith("checkpoint_manager.py"))


class TrainCheckpointer:
    """Save/restore (state, best variables, progress) under `directory` every `every` epochs."""

    def __init__(self, directory, *, every: int, fingerprint: str = ""):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        absl_logger = logging.getLogger("absl")  # orbax logs through absl
        if not any(isinstance(f, _NoMissingMetrics) for f in absl_logger.filters):
            absl_logger.addFilter(_NoMissingMetrics())
        self.directory = Path(directory).resolve()
        self.every = int(every)
        self.fingerprint = fingerprint
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                                 enable_async_checkpointing=False))

    def due(self, epoch: int) -> bool:
        return self.every > 0 and epoch % self.every == 0

    def save(self, epoch: int, state, best_variables, progress: dict) -> None:
        ocp = self._ocp
        tree = {"state": serialization.to_state_dict(state), "best": best_variables}
        meta = dict(progress, epoch=epoch, fingerprint=self.fingerprint)
        dying = faults.armed("checkpoint")
        if dying:  # die while orbax is writing the temporary folder
            _kill_once_writing(self.directory, epoch)
        self._manager.save(epoch, args=ocp.args.Composite(
            tree=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)))
        self._manager.wait_until_finished()
        if dying:  # the write finished before the watcher saw it: die right after it
            faults.kill_now()
        log.debug("checkpoint saved at epoch %d in %s", epoch, self.directory)

    def restore(self, template_state, template_best) -> tuple[Any, Any, dict] | None:
        """(state, best variables, progress) of the latest checkpoint, or None if there is none."""
        ocp = self._ocp
        epoch = self._manager.latest_step()
        if epoch is None:
            return None
        # The fingerprint first: another model's tree would fail inside orbax, unexplained.
        meta = dict(self._manager.restore(epoch, args=ocp.args.Composite(
            meta=ocp.args.JsonRestore()))["meta"])
        if meta.pop("fingerprint", "") != self.fingerprint:
            raise RunDirError(f"{self.directory}: checkpoint from another config or model; "
                              "remove it or use another --workdir")
        template = {"state": serialization.to_state_dict(template_state), "best": template_best}
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(epoch, args=ocp.args.Composite(
            tree=ocp.args.StandardRestore(abstract)))
        state = serialization.from_state_dict(template_state, restored["tree"]["state"])
        # Host copies: with several processes, orbax refuses to save again arrays that sit
        # on one process's device (the state is placed on the mesh by fit, these are not).
        best = jax.tree_util.tree_map(np.asarray, restored["tree"]["best"])
        log.info("resuming training from the checkpoint of epoch %d", epoch)
        return state, best, meta

    def close(self, *, remove: bool = False) -> None:
        self._manager.close()
        if remove:
            distributed.barrier("crc_jax.run.checkpoint.close")  # no process still reads it
            if distributed.is_writer():
                shutil.rmtree(self.directory, ignore_errors=True)


def _kill_once_writing(directory: Path, epoch: int) -> None:
    """Fault injection: SIGKILL this process as soon as orbax's temporary folder for
    `epoch` exists, i.e. in the middle of the write (orbax renames it when done)."""

    def watch():
        while not any(directory.glob(f"{epoch}.orbax-checkpoint-tmp*")):
            time.sleep(0.0005)
        faults.kill_now()

    threading.Thread(target=watch, daemon=True).start()
