"""Multi-process runs over jax.distributed: start-up, one writer, agreement between processes.

JAX's multi-controller model runs one Python process per host (or, for tests, several on
one machine), every process runs the same program, and jitted computations over a mesh
that spans every process's devices exchange data through collectives (CPU: gloo over
TCP). A run stays in lock-step this way:

- Process 0 is the only writer of the run directory (lock, config.json, journals, summary,
  report): `is_writer()` guards every write. What it reads there (the journal to resume
  from, whether the directory could be bound to this config) reaches the other processes
  through `from_writer`, so every process takes the same decision and only process 0 needs
  the run directory. Checkpoints are the exception: orbax writes them collectively and
  every process restores them, so their directory must be one that every process sees.
- Each process contributes its devices' slices of every batch (`crc_jax.runtime.sharding`), and
  outputs spread over processes are gathered once with `process_allgather`.
- Acquisitions are computed by every process, then process 0's are taken (`agree`): float
  differences between hosts can never make the processes label different images.

With one process every helper here is the identity (or a plain call).
"""

from __future__ import annotations

import json
import logging
from typing import Any
from collections.abc import Callable

import jax
import numpy as np

log = logging.getLogger(__name__)

# jax.distributed.initialize's own default; a peer silent this long is declared lost.
DEFAULT_HEARTBEAT_TIMEOUT = 100


def initialize(config) -> None:
    """jax.distributed.initialize from config.distributed, when `enabled` (multi-host runs).

    Empty/zero/negative fields are left to JAX's auto-detection (TPU pods, SLURM, Open MPI):
    on a Cloud TPU pod `enabled=True` alone is enough. `heartbeat_timeout` bounds how long
    a process runs on after a peer died. Must run before any JAX computation.
    """
    if not config.enabled:
        return
    kwargs: dict[str, Any] = {}
    if config.coordinator_address:
        kwargs["coordinator_address"] = str(config.coordinator_address)
    if int(config.num_processes) > 0:
        kwargs["num_processes"] = int(config.num_processes)
    if int(config.process_id) >= 0:
        kwargs["process_id"] = int(config.process_id)
    timeout = int(config.get("heartbeat_timeout", DEFAULT_HEARTBEAT_TIMEOUT))
    if timeout != DEFAULT_HEARTBEAT_TIMEOUT:
        kwargs["heartbeat_timeout_seconds"] = timeout
    jax.distributed.initialize(**kwargs)
    # debug: a bad config value must stay the only line (main logs the devices after the
    # check); no jax.process_index() here: it would start JAX's backend before the caller's
    # devices.select and devices.check
    log.debug("jax.distributed: initialized with %s", kwargs)


def is_multiprocess() -> bool:
    return jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes the run directory (process 0; the only one, alone)."""
    return jax.process_index() == 0


def _broadcast_bytes(data: bytes) -> bytes:
    """Process 0's `data` on every process (the others' argument is ignored)."""
    from jax.experimental import multihost_utils

    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    capacity = 1 << max(size - 1, 0).bit_length()  # a power of two: few distinct compiles
    buf = np.zeros(capacity, np.uint8)
    if is_writer():
        buf[:size] = np.frombuffer(data, np.uint8)
    out = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return out[:size].tobytes()


def broadcast_json(value: Any) -> Any:
    """Process 0's JSON-able `value` on every process (identity with one process)."""
    if not is_multiprocess():
        return value
    data = json.dumps(value).encode() if is_writer() else b""
    return json.loads(_broadcast_bytes(data).decode())


def from_writer(fn: Callable[[], Any], *, errors: tuple = ()) -> Any:
    """fn() run on process 0 only; its JSON-able result, or its error, on every process.

    An exception of a type in `errors` raised by fn on process 0 is raised again on every
    process with the same message, so all of them stop together (a process left alone
    would wait in its next collective). With one process: fn().
    """
    if not is_multiprocess():
        return fn()
    outcome = None
    if is_writer():
        try:
            outcome = {"value": fn()}
        except errors as err:
            outcome = {"error": type(err).__name__, "message": str(err)}
    outcome = broadcast_json(outcome)
    if "error" in outcome:
        by_name = {e.__name__: e for e in errors}
        raise by_name[outcome["error"]](outcome["message"])
    return outcome["value"]


def agree(values: np.ndarray, *, what: str = "value") -> np.ndarray:
    """Process 0's integer array `values` on every process; a warning if another differed."""
    values = np.asarray(values)
    if not is_multiprocess():
        return values
    from jax.experimental import multihost_utils

    ours = values.astype(np.int32)
    theirs = np.asarray(multihost_utils.broadcast_one_to_all(ours)).astype(values.dtype)
    if not np.array_equal(theirs, values):
        log.warning("process %d computed another %s than process 0; using process 0's",
                    jax.process_index(), what)
    return theirs


def barrier(name: str) -> None:
    """Wait until every process reaches `name` (nothing with one process)."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
