"""Data parallelism over the local devices with `jax.sharding` (GSPMD), and multi-host start-up.

One 1-D mesh with axis "data" spans the devices. Batches are split along their leading
axis (`NamedSharding(mesh, P("data"))`); the train state and model variables are
replicated (`P()`). Jitted steps then run partitioned: XLA's SPMD partitioner inserts
the all-reduces, so a step's gradients, BatchNorm statistics and means are those of the
global batch and the result equals the single-device step up to the order of float sums.
Per-example randomness is drawn from keys split over the global batch inside the step,
so augmentation does not depend on how many devices share the batch.

With one device every helper here is the identity (NumPy inputs stay NumPy, jit places
them as before), so single-device runs are unchanged.

Multi-host (TPU pods, multi-node GPU): `initialize_distributed(config.distributed)` calls
`jax.distributed.initialize` before any other JAX work; afterwards `jax.devices()` lists
every host's devices and the mesh spans them all. Each host computes the same batch from
the same seeded index arrays; `shard_batch` hands every device the slice it owns
(`jax.make_array_from_callback`: each process supplies only its own devices' rows), and
`to_host` gathers outputs that are spread over hosts. Who writes, and how the processes
agree, is crc_jax.runtime.distributed's job.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, TypeGuard
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

log = logging.getLogger(__name__)

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis "data" over `devices` (default: every device, all hosts)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def num_devices(mesh: Mesh | None) -> int:
    return 1 if mesh is None else int(mesh.devices.size)


def is_parallel(mesh: Mesh | None) -> TypeGuard[Mesh]:
    """Whether `mesh` spans more than one device (otherwise sharding is skipped)."""
    return num_devices(mesh) > 1


def data_sharding(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """The batch axis (leading, or `axis`: 1 for stacked steps) split over "data", the rest whole."""
    return NamedSharding(mesh, P(*([None] * axis), DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def check_divisible(size: int, mesh: Mesh | None, *, what: str = "batch size") -> None:
    """Raise ValueError unless `size` splits evenly over the mesh's devices."""
    n = num_devices(mesh)
    if size % n:
        raise ValueError(f"{what} {size} must be divisible by the {n} devices of the data-parallel "
                         f"mesh (each device takes {what} / {n}); pick a multiple of {n}")


def _put(x, sharding: NamedSharding):
    """Place one array (the same value on every host) with `sharding`; each device gets its slice."""
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if jax.process_count() == 1 or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    x = np.asarray(x)  # multi-host: every host holds the whole value and gives its devices theirs
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def shard_batch(mesh: Mesh | None, tree, *, axis: int = 0):
    """Split every leaf of `tree` along its batch axis over the mesh (identity on one device).

    The batch axis is the leading one, or `axis` (1 for chunks of stacked steps,
    crc_jax.multistep). It must be divisible by the device count: a ValueError says which
    leaf is not.
    """
    if not is_parallel(mesh):
        return tree
    sharding = data_sharding(mesh, axis)

    def put(path, x):
        shape = np.shape(x)
        if len(shape) <= axis:
            raise ValueError(f"shard_batch: leaf {jax.tree_util.keystr(path)} has no axis {axis}; "
                             "batches need a batch axis")
        check_divisible(shape[axis], mesh, what=f"batch leaf {jax.tree_util.keystr(path)} of size")
        return _put(x, sharding)

    return jax.tree_util.tree_map_with_path(put, tree)


def replicate(mesh: Mesh | None, tree):
    """A copy of every leaf on every device of the mesh (identity on one device).

    The train state and model variables are replicated so that a jitted step sees every
    input on the same devices; its outputs stay replicated (GSPMD all-reduces gradients).
    """
    if not is_parallel(mesh):
        return tree
    sharding = replicated(mesh)
    return jax.tree_util.tree_map(lambda x: _put(x, sharding), tree)


@functools.lru_cache(maxsize=32)
def data_parallel(step_fn: Callable, mesh: Mesh | None) -> Callable:
    """`step_fn(state, batch, key) -> (state, metrics)` with every output replicated.

    Left to itself, the partitioner may hand back some small state leaves split over the
    devices (whatever is cheapest for that step), so the next call would see new input
    shardings and compile again; pinning the outputs to "replicated" keeps one compiled
    step. The state (argument 0) is donated, as by the SSL steps themselves. Identity on
    one device; cached, so every fit of a run reuses one compiled step.
    """
    if not is_parallel(mesh):
        return step_fn
    return jax.jit(step_fn, out_shardings=replicated(mesh), donate_argnums=(0,))


@functools.lru_cache(maxsize=64)
def per_sample(fn: Callable, mesh: Mesh | None) -> Callable:
    """Jitted `fn(variables, x)` run on each device's rows of x alone (`shard_map`).

    For maps that treat samples independently (evaluation-mode features, per-sample
    Jacobians): every device applies `fn` to its slice with replicated variables, and the
    outputs (leading axis = rows) stay split over the devices; no communication, and no
    sharding propagation through `fn` (on jax 0.5.3, XLA's SPMD partitioner fails a
    RET_CHECK on the reshapes inside vmapped per-sample Jacobians of a CNN). The row count
    must be a multiple of the device count (`pad_rows`). On one device: `jax.jit(fn)`.
    Cached on (fn, mesh).
    """
    if not is_parallel(mesh):
        return jax.jit(fn)
    return jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(DATA_AXIS)), out_specs=P(DATA_AXIS),
                                 check_vma=False))


def pad_rows(x: np.ndarray, multiple: int) -> tuple[np.ndarray, int]:
    """Pad `x` along axis 0 (repeating its first row) to a multiple of `multiple`.

    Returns (padded, n) with n the original length: outputs are sliced back to [:n].
    Repeating a real row keeps padded inputs in range (no NaN from all-zero images).
    """
    n = len(x)
    pad = -n % multiple
    if pad == 0:
        return x, n
    return np.concatenate([x, np.repeat(x[:1], pad, axis=0)]), n


def to_host(tree) -> Any:
    """NumPy copies of the leaves of `tree`, gathering leaves spread over several hosts."""

    def fetch(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree_util.tree_map(fetch, tree)


def map_batches(fn: Callable, variables, x: np.ndarray, *, batch_size: int,
                mesh: Mesh | None = None, indices: np.ndarray | None = None) -> Any:
    """fn(variables, x[chunk]) over chunks of `batch_size` rows (of x[indices] when given),
    data-parallel over `mesh`.

    `fn` must treat samples independently (it runs through `per_sample`). Each chunk is
    padded to a multiple of the device count, split over the devices, and its output rows
    (a pytree with leading axis = rows) come back to the host with the padding dropped;
    outputs are concatenated along axis 0. Variables are replicated once. With one device
    this is plain batching under `jax.jit(fn)`.
    """
    fn = per_sample(fn, mesh)
    n_dev = num_devices(mesh)
    variables = replicate(mesh, variables)
    total = len(x) if indices is None else len(indices)
    if total == 0:
        raise ValueError("map_batches needs at least one row")
    outs = []
    for start in range(0, total, batch_size):
        rows = slice(start, start + batch_size) if indices is None else indices[start:start + batch_size]
        chunk, n = pad_rows(np.asarray(x[rows]), n_dev)
        out = to_host(fn(variables, shard_batch(mesh, chunk)))
        outs.append(jax.tree_util.tree_map(lambda a, n=n: a[:n], out))
    return jax.tree_util.tree_map(lambda *parts: np.concatenate(parts), *outs)


def initialize_distributed(config) -> None:
    """jax.distributed.initialize from config.distributed, when enabled (crc_jax.runtime.distributed)."""
    from crc_jax.runtime import distributed

    distributed.initialize(config)


def device_bytes_limit() -> int | None:
    """This process's first device's memory in bytes, when it reports one (GPU/TPU; not CPU)."""
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 -- backends without memory stats raise various errors
        return None
    return None if not stats else stats.get("bytes_limit")
