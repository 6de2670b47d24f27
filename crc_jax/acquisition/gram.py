"""The trace-NTK Gram matrices that CRC scores, built once per acquisition.

A `Gram` holds candidate groups (an (n_groups, G) array of pool indices) and a base set
B (the labeled set, grown by the sequential variants), and scores groups by

    s(g) = λ⁺min(K̃(B ∪ g, B ∪ g)),   r = min(|B| + G, ρ)   (ntk.min_positive_eigenvalue)

Two backends return the same scores:

  FeatureGram   subset "last" with `ctx.features_fn`: K̃ = C·ZZᵀ with Z = [Φ, 1]. Φ is
                computed once for the whole pool (whose [Φ, 1] gives the rank ρ). The
                non-zero spectrum of K̃(S, S) is C times that of ZₛᵀZₛ, so each group costs
                one eigvalsh of side min(|B| + G, d + 1): the (d+1)² side is Z_BᵀZ_B
                (precomputed) + Z_gᵀZ_g, the kernel side borders the precomputed Z_B Z_Bᵀ.
  JacobianGram  any subset: K̃(B, B), K̃(B, candidates) and the within-group blocks K̃(g, g)
                from per-sample Jacobians, each candidate's Jacobian computed once (base
                Jacobians too when they fit in memory); each group costs one eigvalsh of
                side |B| + G. ρ: for "last", the rank of [Φ, 1] with Φ = ∂f₀/∂W_head[:, 0]
                over the pool; for "all" or a predicate, |B| + G (docs/design.md).

Eigenvalues are computed in float64 on the host (`spectra`) from float32 features or
kernels; groups are scored in chunks of about 16 MiB of matrices, and nothing
pool-by-pool is ever formed.

Features and Jacobians are computed data-parallel over the devices of `mesh`
(crc_jax.sharding; default every device): each batch of images is split over the
devices, the variables replicated. Per-sample quantities do not mix samples, so the
scores equal the single-device ones.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from crc_jax import ntk, sharding
from crc_jax.acquisition import spectra
from crc_jax.acquisition.context import Context

log = logging.getLogger(__name__)


def pool_features(ctx: Context, indices: Optional[np.ndarray] = None, *,
                  mesh=None) -> np.ndarray:
    """Penultimate features Φ (n, d) of pool images, in batches of ctx.batch_size split
    over the devices of `mesh` (default every device)."""
    mesh = sharding.make_mesh() if mesh is None else mesh
    indices = None if indices is None else np.asarray(indices)
    out = sharding.map_batches(ctx.features_fn, ctx.variables, ctx.x,
                               batch_size=ctx.batch_size, mesh=mesh, indices=indices)
    return out.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class InParams:
    """Path predicate over a whole variables dict: the leaves under "params" that `subset`
    selects ("all", a top-level module name, or a predicate on the path inside "params").

    Differentiating `apply_fn(variables, x)` with this predicate keeps batch statistics
    fixed without a closure, so jitted kernels are reused across acquisitions.
    """

    subset: Any

    def __call__(self, path: tuple) -> bool:
        if not path or path[0] != "params":
            return False
        if self.subset == "all":
            return True
        if callable(self.subset):
            return bool(self.subset(path[1:]))
        return path[1:2] == (self.subset,)


def variables_subset(ctx: Context, subset) -> InParams:
    """The `InParams` predicate for "all", "last" (the "head" module) or a predicate."""
    if subset == "last":
        return InParams(ntk.last_layer_name(ctx.params))
    return InParams(subset)


def head_has_bias(params) -> bool:
    head = params.get(ntk.last_layer_name(params), {})
    return "bias" in head


# --------------------------------------------------------------------------- backends

class FeatureGram:
    """Last-layer CRC scores from penultimate features: K̃ = C·(ΦΦᵀ + 1)."""

    def __init__(self, ctx: Context, groups: np.ndarray, *, mesh=None):
        self.groups = np.asarray(groups)
        self.scale = float(ctx.num_classes)
        bias = head_has_bias(ctx.params)
        phi = pool_features(ctx, mesh=mesh)
        self.rank = ntk.feature_rank(phi, bias=bias)
        z = phi.astype(np.float64)
        self.z = np.concatenate([z, np.ones((len(z), 1))], axis=1) if bias else z
        self.base = np.asarray(ctx.labeled, dtype=np.int64)
        log.debug("FeatureGram: pool %s, rank %d of %d", phi.shape, self.rank, self.z.shape[1])

    def extend_base(self, rows) -> None:
        self.base = np.concatenate([self.base, self.groups[np.asarray(rows)].ravel()])

    def score(self, rows: Optional[np.ndarray] = None) -> np.ndarray:
        rows = np.arange(len(self.groups)) if rows is None else np.asarray(rows)
        g, d = self.groups.shape[1], self.z.shape[1]
        n = len(self.base) + g
        z_b = self.z[self.base]
        if n <= d:   # kernel side, n²: border Z_B Z_Bᵀ with the group's rows
            k_bb = z_b @ z_b.T

            def matrices(r):
                zg = self.z[self.groups[r]]
                return spectra.bordered(k_bb, zg @ z_b.T, np.matmul(zg, np.swapaxes(zg, 1, 2)))
        else:        # feature side, (d+1)²: Z_BᵀZ_B + Z_gᵀZ_g
            gram_base = z_b.T @ z_b

            def matrices(r):
                return spectra.updated(gram_base, self.z[self.groups[r]])
        return self.scale * spectra.score_rows(rows, min(n, d), matrices, min(n, self.rank))


class JacobianGram:
    """CRC scores from per-sample Jacobians over any parameter subset."""

    def __init__(self, ctx: Context, groups: np.ndarray, *, subset="last",
                 budget_bytes: int = ntk.JACOBIAN_BUDGET_BYTES, mesh=None):
        self.groups = np.asarray(groups)
        self.ctx = ctx
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.f, self.params = ctx.apply_fn, sharding.replicate(self.mesh, ctx.variables)
        self.subset = variables_subset(ctx, subset)
        self.cand = self.groups.ravel()
        x = ctx.x
        self.batch = ntk.jacobian_batch_size(self.f, self.params, x[:1], subset=self.subset,
                                             budget_bytes=budget_bytes)
        self.base = np.asarray(ctx.labeled, dtype=np.int64)
        self.rank = self._rank() if subset == "last" else None
        jac = self._jac

        held_base = None
        if len(self.base) == 0:
            self.k_bb = np.zeros((0, 0))
        elif len(self.base) <= self.batch:
            held_base = jac(x[self.base])
            self.k_bb = _host(ntk.contract_jit(held_base, held_base, trace=True)).astype(np.float64)
        else:
            self.k_bb = self._base_blocks()
        g = self.groups.shape[1]
        per_chunk = max(1, self.batch // g)
        k_bc, k_gg, cand_jac = [], [], []
        hold_cand = len(self.cand) <= self.batch
        starts = range(0, len(self.groups), per_chunk)
        for s in tqdm(starts, desc="CRC Jacobians", disable=None if len(starts) > 20 else True,
                      leave=False):
            members = self.groups[s:s + per_chunk].ravel()
            jc = jac(x[members])
            if hold_cand:
                cand_jac.append(jc)
            k_gg.append(_host(_within_groups(jc, g)))
            k_bc.append(self._base_cross(jc, held_base))
        self.k_gg = np.concatenate(k_gg).astype(np.float64)
        self.k_bc = np.concatenate(k_bc, axis=1).astype(np.float64)
        self.cand_jac = (tuple(jnp.concatenate(p) for p in zip(*cand_jac)) if hold_cand else None)

    def _jac(self, x: np.ndarray):
        """Per-sample Jacobians of host images `x`, computed split over the mesh's devices.

        The rows are padded to a multiple of the device count, and the result is gathered
        onto every device (replicated) with the padding dropped, so the contractions that
        follow run as on one device. They must: contracting two row-split Jacobian arrays
        under GSPMD, XLA's CPU code summed WRN-28's ~10⁵-long parameter axis so loosely
        that K̃ was off by ~1e-3 relative (7e-4 vs 2.5e-7 unsplit; jax 0.5.3, 4 forced
        devices), enough to turn CRC scores negative; the Jacobians themselves, computed
        per device with shard_map, match the single-device ones (4e-7 relative).
        """
        if not sharding.is_parallel(self.mesh):
            return ntk.jacobians_jit(self.f, self.params, jnp.asarray(x), subset=self.subset)
        padded, n = sharding.pad_rows(np.asarray(x), sharding.num_devices(self.mesh))
        fn = sharding.per_sample(_JacobianFn(self.f, self.subset), self.mesh)
        j = sharding.replicate(self.mesh, fn(self.params, sharding.shard_batch(self.mesh, padded)))
        return j if len(padded) == n else tuple(a[:n] for a in j)

    def _base_blocks(self) -> np.ndarray:
        """K̃(B, B) block by block when the base Jacobians do not fit in memory at once
        (the upper block triangle, mirrored; as ntk.empirical_ntk, on the mesh)."""
        x, base, b = self.ctx.x, self.base, self.batch
        chunks = [base[s:s + b] for s in range(0, len(base), b)]
        offsets = np.cumsum([0] + [len(c) for c in chunks])
        k = np.empty((len(base), len(base)))
        for i, ci in enumerate(chunks):
            ji = self._jac(x[ci])
            for j in range(i, len(chunks)):
                jj = ji if j == i else self._jac(x[chunks[j]])
                block = _host(ntk.contract_jit(ji, jj, trace=True))
                k[offsets[i]:offsets[i + 1], offsets[j]:offsets[j + 1]] = block
                k[offsets[j]:offsets[j + 1], offsets[i]:offsets[i + 1]] = block.T
        return k

    def _base_cross(self, jc, held_base) -> np.ndarray:
        """K̃(B, chunk): against held base Jacobians, or base blocks recomputed."""
        if len(self.base) == 0:
            return np.zeros((0, jc[0].shape[0]))
        if held_base is not None:
            return _host(ntk.contract_jit(held_base, jc, trace=True))
        return np.concatenate(
            [_host(ntk.contract_jit(self._jac(self.ctx.x[self.base[s:s + self.batch]]), jc, trace=True))
             for s in range(0, len(self.base), self.batch)], axis=0)

    def _rank(self) -> Optional[int]:
        """Rank of [Φ, 1] over the pool, Φ = ∂f₀/∂W_head[:, 0] (the head's input)."""
        params = self.ctx.params
        top = ntk.last_layer_name(params)
        head = params[top]
        kernel = head.get("kernel") if hasattr(head, "get") else None
        if kernel is None or kernel.ndim != 2 or kernel.shape[1] != self.ctx.num_classes:
            log.warning("last layer %r is not a dense kernel: CRC uses rank |L ∪ g|", top)
            return None
        out = sharding.map_batches(_HeadInputFn(self.f, top), self.params, self.ctx.x,
                                   batch_size=self.ctx.batch_size, mesh=self.mesh)
        return ntk.feature_rank(out, bias="bias" in head)

    def extend_base(self, rows) -> None:
        rows = np.asarray(rows)
        g = self.groups.shape[1]
        pos = (rows[:, None] * g + np.arange(g)).ravel()
        new = self.cand[pos]
        jn = self._jac(self.ctx.x[new])
        if self.cand_jac is not None:
            k_nc = _host(ntk.contract_jit(jn, self.cand_jac, trace=True)).astype(np.float64)
        else:
            k_nc = np.concatenate(
                [_host(ntk.contract_jit(jn, self._jac(self.ctx.x[self.cand[s:s + self.batch]]),
                                        trace=True)).astype(np.float64)
                 for s in range(0, len(self.cand), self.batch)], axis=1)
        k_bn = self.k_bc[:, pos]
        self.k_bb = np.block([[self.k_bb, k_bn], [k_bn.T, k_nc[:, pos]]])
        self.k_bc = np.concatenate([self.k_bc, k_nc], axis=0)
        self.base = np.concatenate([self.base, new])

    def score(self, rows: Optional[np.ndarray] = None) -> np.ndarray:
        rows = np.arange(len(self.groups)) if rows is None else np.asarray(rows)
        g = self.groups.shape[1]
        n = len(self.base) + g
        rank = n if self.rank is None else min(n, self.rank)

        def matrices(r):
            pos = r[:, None] * g + np.arange(g)                              # (b, G)
            return spectra.bordered(self.k_bb, np.moveaxis(self.k_bc[:, pos], 0, 2), self.k_gg[r])

        return spectra.score_rows(rows, n, matrices, rank)


def _host(x) -> np.ndarray:
    """A device result as a NumPy array (gathered from other hosts when spread over them)."""
    return sharding.to_host(x)


@partial(jax.jit, static_argnums=(1,))
def _within_groups(j, g: int):
    """(k, G, G) trace-NTK blocks within consecutive groups of g samples."""
    n = j[0].shape[0]
    return sum(jnp.einsum("kgp,khp->kgh", a.reshape(n // g, g, -1), a.reshape(n // g, g, -1),
                          precision=ntk.HIGHEST) for a in j)


@dataclasses.dataclass(frozen=True)
class _JacobianFn:
    """(variables, x) -> per-sample Jacobians; hashable, so its compiled form is cached."""

    apply_fn: Any
    subset: Any

    def __call__(self, variables, x):
        return ntk.jacobians(self.apply_fn, variables, x, subset=self.subset)


@dataclasses.dataclass(frozen=True)
class _HeadInputFn:
    """(variables, x) -> ∂f₀/∂W_top[:, 0] per sample; hashable, so its compiled form is cached."""

    apply_fn: Any
    top: str

    def __call__(self, variables, x):
        return _head_input(self.apply_fn, variables, x, top=self.top)


def _head_input(apply_fn, variables, x, *, top):
    """Per-sample ∂f₀/∂W_top[:, 0]: the input features of a final dense layer `top`."""
    params = variables["params"]

    def f0(w, xi):
        head = {**params[top], "kernel": params[top]["kernel"].at[:, 0].set(w)}
        return apply_fn({**variables, "params": {**params, top: head}}, xi[None])[0, 0]

    return jax.vmap(jax.grad(f0), in_axes=(None, 0))(params[top]["kernel"][:, 0], x)


def build(ctx: Context, groups: np.ndarray, *, subset="last", mesh=None):
    """The backend for `subset`: features when possible, Jacobians otherwise; both compute
    on the devices of `mesh` (default every device)."""
    if subset == "last" and ctx.features_fn is not None:
        return FeatureGram(ctx, groups, mesh=mesh)
    return JacobianGram(ctx, groups, subset=subset, mesh=mesh)
