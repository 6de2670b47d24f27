"""Feeding fit's train steps: batches gathered on the device, or assembled on the host.

On the host path every step gathers its images with NumPy fancy indexing and transfers
them (B + μB images per step, ~12 MiB for FixMatch at B=64, μ=7 on 32×32×3). On the
device path the labeled and unlabeled pools are placed on the device once per fit (an
SVHN pool is under 1 GiB) and each step sends only its index arrays: a small jitted gather
builds the batch on the device and the step runs on it, both dispatched asynchronously,
so no image crosses the bus during training. On several devices
the pools are replicated and the gathered batch is split over the devices, as on the
host path.

`feed="auto"` takes the device path on a GPU/TPU when the pools fit in
DEVICE_FEED_MAX_BYTES and in a quarter of the device's memory, the host path otherwise.
On a CPU the "device" is host memory, so there is no transfer to save, and the extra
dispatch per step made fit epochs slower when measured (busy 2-core machine): auto
keeps the host path there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import numpy as np

from crc_jax import multistep
from crc_jax.runtime import sharding

FEEDS = ("auto", "host", "device")
DEVICE_FEED_MAX_BYTES = 2 << 30


def check_feed(feed: str) -> None:
    if feed not in FEEDS:
        raise ValueError(f"feed must be one of {', '.join(FEEDS)}; got {feed!r}")


def feeds_on_device(feed: str, arrays, platform: str | None = None) -> bool:
    """Whether `feed` puts `arrays` (the pools; None entries ignored) on the device of
    `platform` (default: JAX's default backend)."""
    check_feed(feed)
    if feed != "auto":
        return feed == "device"
    if (jax.default_backend() if platform is None else platform) == "cpu":
        return False
    need = sum(np.asarray(a).nbytes for a in arrays if a is not None)
    limit = sharding.device_bytes_limit()
    return need <= DEVICE_FEED_MAX_BYTES and (limit is None or need <= limit // 4)


@functools.lru_cache(maxsize=16)
def device_gather(mesh, axis: int = 0) -> Callable:
    """(pools, idx) -> the batch {"x_l", "y_l"[, "x_u"]} gathered on the device, jitted;
    idx = {"l": labeled rows[, "u": unlabeled rows]}. On several devices the batch comes
    out split over them along `axis` (1 for a chunk of steps, rows of shape (K, B)), as
    `sharding.shard_batch` places a host batch. The step itself stays a separate call, so a
    wrapped `train_step` still runs once per step."""

    def gather(pools, idx):
        batch = {"x_l": pools["x_l"][idx["l"]], "y_l": pools["y_l"][idx["l"]]}
        if "x_u" in pools:
            batch["x_u"] = pools["x_u"][idx["u"]]
        return batch

    if sharding.is_parallel(mesh):
        return jax.jit(gather, out_shardings=sharding.data_sharding(mesh, axis))
    return jax.jit(gather)


class BatchFeeder:
    """feeder(state, labeled_rows, unlabeled_rows, key) -> train_step's (state, metrics);
    feeder.chunk(...) the same for K steps in one call (crc_jax.multistep)."""

    def __init__(self, train_step: Callable, mesh, *, x_labeled, y_labeled, x_unlabeled=None,
                 feed: str = "auto"):
        self.mesh = mesh
        self.train_step = train_step
        self.with_unlabeled = x_unlabeled is not None
        self.on_device = feeds_on_device(feed, (x_labeled, y_labeled, x_unlabeled))
        self.step = sharding.data_parallel(train_step, mesh)
        pools = {"x_l": x_labeled, "y_l": y_labeled}
        if self.with_unlabeled:
            pools["x_u"] = x_unlabeled
        if self.on_device:
            pools = (sharding.replicate(mesh, pools) if sharding.is_parallel(mesh)
                     else jax.device_put(pools))
            self.gather = device_gather(mesh)
        self.pools = pools

    def __call__(self, state, lab_rows: np.ndarray, unl_rows: np.ndarray | None, key):
        if self.on_device:
            idx = {"l": lab_rows} if not self.with_unlabeled else {"l": lab_rows, "u": unl_rows}
            return self.step(state, self.gather(self.pools, idx), key)
        batch = {"x_l": self.pools["x_l"][lab_rows], "y_l": self.pools["y_l"][lab_rows]}
        if self.with_unlabeled:
            batch["x_u"] = self.pools["x_u"][unl_rows]
        return self.step(state, sharding.shard_batch(self.mesh, batch), key)

    def chunk(self, state, lab_rows: np.ndarray, unl_rows: np.ndarray | None, keys):
        """K steps in one dispatch: rows (K, B) and (K, μB), keys (K, ...); the metrics come
        back stacked (K,). Step i gets the batch and key that `self(...)` would give it."""
        multi = multistep.scan_steps(self.train_step, self.mesh)
        if self.on_device:
            idx = {"l": lab_rows} if not self.with_unlabeled else {"l": lab_rows, "u": unl_rows}
            return multi(state, device_gather(self.mesh, axis=1)(self.pools, idx), keys)
        batches = {"x_l": self.pools["x_l"][lab_rows], "y_l": self.pools["y_l"][lab_rows]}
        if self.with_unlabeled:
            batches["x_u"] = self.pools["x_u"][unl_rows]
        return multi(state, sharding.shard_batch(self.mesh, batches, axis=1), keys)
