"""Penultimate features Φ of the pool, for CRC's last-layer fast path.

For a final dense layer logits = ΦW + b the last-layer trace NTK is C·(ΦΦᵀ + 1), so CRC
needs only Φ. It comes from `ctx.features_fn` when the caller gives one; otherwise it is
derived from the model itself: Φ = ∂f₀/∂W_head[:, 0] (the head's input), one forward pass
per image (reverse mode stops at the head). `head_features_fn` checks the derivation on a
few images (their logits must equal ΦW + b), so a head that is not a plain dense layer
falls back to per-sample Jacobians instead of returning wrong scores.

Both maps run data-parallel over the devices of a mesh (crc_jax.runtime.sharding); `pool_features`
brings Φ to the host, `pool_features_on_device` keeps it on the device for the device
backend of group scores.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax import ntk
from crc_jax.runtime import sharding
from crc_jax.acquisition.context import Context

log = logging.getLogger(__name__)

CHECK_IMAGES = 4                   # images on which a derived Φ is checked against the logits


def pool_features(ctx: Context, features_fn: Callable, indices: np.ndarray | None = None, *,
                  mesh=None) -> np.ndarray:
    """Φ (n, d) of pool images on the host (float32), in batches of ctx.batch_size."""
    mesh = sharding.make_mesh() if mesh is None else mesh
    indices = None if indices is None else np.asarray(indices)
    out = sharding.map_batches(features_fn, ctx.variables, ctx.x,
                               batch_size=ctx.batch_size, mesh=mesh, indices=indices)
    return out.astype(np.float32)


def pool_features_on_device(ctx: Context, features_fn: Callable, *, mesh=None) -> jax.Array:
    """Φ (N, d) of the whole pool as a float32 device array: images go up batch by batch,
    nothing comes back to the host."""
    mesh = sharding.make_mesh() if mesh is None else mesh
    fn = sharding.per_sample(features_fn, mesh)
    variables = sharding.replicate(mesh, ctx.variables)
    n_dev = sharding.num_devices(mesh)
    outs = []
    for start in range(0, len(ctx.x), ctx.batch_size):
        chunk, n = sharding.pad_rows(np.asarray(ctx.x[start:start + ctx.batch_size]), n_dev)
        out = fn(variables, sharding.shard_batch(mesh, chunk))
        outs.append(out if len(chunk) == n else out[:n])
    return jnp.concatenate(outs).astype(jnp.float32)


def dense_head(params, num_classes: int) -> str | None:
    """Name of the top-level module when it is a plain dense layer (a (d, C) kernel and an
    optional bias, nothing else), else None."""
    top = ntk.last_layer_name(params)
    head = params[top]
    if not isinstance(head, Mapping) or not set(head) <= {"kernel", "bias"} or "kernel" not in head:
        return None
    kernel = head["kernel"]
    if kernel.ndim != 2 or kernel.shape[1] != num_classes:
        return None
    return top


def head_features_fn(ctx: Context) -> Callable | None:
    """(variables, x) -> Φ derived from a dense head, checked on a few pool images; None when
    the model has no dense head or the check fails (a warning says why)."""
    top = dense_head(ctx.params, ctx.num_classes)
    if top is None:
        log.warning("last layer %r is not a dense kernel: CRC scores from Jacobians",
                    ntk.last_layer_name(ctx.params))
        return None
    fn = HeadInputFn(ctx.apply_fn, top)
    x = jnp.asarray(ctx.x[:CHECK_IMAGES])
    phi = jax.jit(fn)(ctx.variables, x)
    head = ctx.params[top]
    rebuilt = jnp.matmul(phi, head["kernel"], precision=ntk.HIGHEST) + head.get("bias", 0.0)
    logits = ctx.apply_fn(ctx.variables, x)
    scale = float(jnp.max(jnp.abs(logits))) + 1.0
    if not float(jnp.max(jnp.abs(rebuilt - logits))) <= 1e-4 * scale:
        log.warning("logits are not ΦW + b of the head %r: CRC scores from Jacobians", top)
        return None
    return fn


def head_has_bias(params) -> bool:
    head = params.get(ntk.last_layer_name(params), {})
    return "bias" in head


@dataclasses.dataclass(frozen=True)
class HeadInputFn:
    """(variables, x) -> ∂f₀/∂W_top[:, 0] per sample: the input features of a final dense
    layer `top`. Hashable, so its compiled form is cached."""

    apply_fn: Any
    top: str

    def __call__(self, variables, x):
        params = variables["params"]
        top = self.top

        def f0(w, xi):
            head = {**params[top], "kernel": params[top]["kernel"].at[:, 0].set(w)}
            return self.apply_fn({**variables, "params": {**params, top: head}}, xi[None])[0, 0]

        return jax.vmap(jax.grad(f0), in_axes=(None, 0))(params[top]["kernel"][:, 0], x)
