"""Several train steps per dispatch: one jitted `lax.scan` over a chunk of K steps.

Each call of a jitted step costs a dispatch from Python (and, on an accelerator, a launch
and a host round trip for the metrics). `scan_steps(train_step)` runs K consecutive steps
in one call: batches and keys stacked along a new leading axis of length K, the state
threaded through `lax.scan`, the metrics stacked (K,). Step i of the chunk sees exactly
the batch and key that step i would get one call at a time, and the state it leaves is
the next step's input, so the result is that of K separate calls up to XLA compiling the
step's body inside a loop (the same operations; fusion may group float sums differently:
tests/test_multistep.py measures the difference).

Config: `train.steps_per_dispatch` (1 = one step a call; crc_jax.train.fit runs an epoch's
steps in chunks of K and the remainder one at a time).

Meant for accelerators. On CPU (jaxlib 0.10.2) XLA runs a step inside a rolled loop far
slower than the same step as its own call: measured 7-30x per step for small conv steps
(RESULTS.md, "Train step"), so keep 1 there; a warning says so.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import jax

from crc_jax.runtime import sharding

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=32)
def scan_steps(train_step: Callable, mesh=None) -> Callable:
    """(state, batches, keys) -> (state, metrics stacked over the chunk), jitted, state donated.

    batches: the step's batch dict with every leaf stacked along a new axis 0 of length K;
    keys: (K, ...) PRNG keys. On a multi-device `mesh` the batch axis (axis 1) is split over
    the devices (place the chunk with
    `sharding.shard_batch(mesh, batches, axis=1)`) and the state stays replicated.
    Cached on (train_step, mesh): every fit of a run reuses one compiled chunk.
    """

    if jax.default_backend() == "cpu":
        log.warning("train.steps_per_dispatch > 1 on CPU: XLA:CPU runs a train step inside a "
                    "lax.scan several times slower than one step a call (RESULTS.md); use 1 on CPU")

    def chunk(state, batches, keys):
        return jax.lax.scan(lambda s, xs: train_step(s, *xs), state, (batches, keys))

    if not sharding.is_parallel(mesh):
        return jax.jit(chunk, donate_argnums=(0,))
    return jax.jit(chunk, out_shardings=sharding.replicated(mesh), donate_argnums=(0,))
