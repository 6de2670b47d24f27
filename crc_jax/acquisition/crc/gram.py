"""The trace-NTK Gram matrices that CRC scores, built once per acquisition.

A `Gram` holds candidate groups (an (n_groups, G) array of pool indices) and a base set
B (the labeled set, grown by the sequential variants), and scores groups by

    s(g) = λ⁺min(K̃(B ∪ g, B ∪ g)) at r = min(|B| + G, the largest rank any scored group reaches)

(the rule: crc_jax.acquisition.crc.spectra and backend_gram; docs/design.md "CRC, exactly").

Two kinds of Gram return the same scores:

  FeatureGram   subset "last" on a final dense layer: K̃ = C·ZZᵀ with Z = [Φ, 1]. Φ comes
                from `ctx.features_fn`, or is derived from the dense head itself
                (crc_jax.acquisition.features), so a hand-built Context gets the fast
                path too. Φ is computed once for the whole pool. The non-zero spectrum of
                K̃(S, S) is C times that of ZₛᵀZₛ, so each group costs one eigvalsh of
                side min(|B| + G, d + 1): the (d+1)² side is Z_BᵀZ_B (precomputed) +
                Z_gᵀZ_g, the kernel side borders Z_B Z_Bᵀ. Ranks: float64 Grams of float32
                features, tolerance (d+1)²·ε₃₂²·λmax (spectra.feature_rtol).
  JacobianGram  any subset: K̃(B, B), K̃(B, candidates) and the within-group blocks K̃(g, g)
                from per-sample Jacobians, each candidate's Jacobian computed once (base
                Jacobians too when they fit in memory); each group costs one eigvalsh of
                side |B| + G. Ranks: kernel entries contracted in float32, tolerance
                (|B| + G)·ε₃₂·λmax (spectra.kernel_rtol).

Each runs on one of two backends (`backend`, see device_spectra): "host" decomposes in
float64 on the host CPU (`spectra`), groups in chunks of about 16 MiB of matrices;
"device" keeps features, kernels and scores on the accelerator and decomposes with a
jitted, batched eigvalsh (float64 where the device has it, else float32 scores with the
finalists rescored on the host in float64), and `top` hands back only the chosen rows
and the score vector. Nothing pool-by-pool is ever formed.

Features and Jacobians are computed data-parallel over the devices of `mesh`
(crc_jax.runtime.sharding; default every device): each batch of images is split over the
devices, the variables replicated. Per-sample quantities do not mix samples, so the
scores equal the single-device ones.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from crc_jax import ntk
from crc_jax.runtime import sharding
from crc_jax.acquisition.crc import device_spectra as dev
from crc_jax.acquisition import features as feat
from crc_jax.acquisition.crc import spectra
from crc_jax.acquisition.crc.backend_gram import BackendGram
from crc_jax.acquisition.crc.device_spectra import HOST, Spectra
from crc_jax.acquisition.context import Context

log = logging.getLogger(__name__)


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


# --------------------------------------------------------------------------- backends

class FeatureGram(BackendGram):
    """Last-layer CRC scores from penultimate features: K̃ = C·(ΦΦᵀ + 1).

    features_fn: (variables, x) -> Φ; default ctx.features_fn (see `build` for the
    derived one). spectra: where the eigenvalues are computed (default the host).
    """

    z: Any        # host float64 Z (pool features, + a ones column with a head bias), or None
    z_dev: Any    # the same on the device (float64, or float32 for the prefilter), or None
    _rank: Any    # rank of Z over the pool (an int, or a device scalar on the float64 device
                  # path): reported in the journal, not used to score
    _live: int | None   # columns of Z that are not all zero (bounds every group's rank)

    def __init__(self, ctx: Context, groups: np.ndarray, *, mesh=None, spectra: Spectra = HOST,
                 features_fn=None):
        self.groups = np.asarray(groups)
        self.scale = float(ctx.num_classes)
        self.spectra = spectra
        bias = feat.head_has_bias(ctx.params)
        fn = ctx.features_fn if features_fn is None else features_fn
        if fn is None:
            raise ValueError("FeatureGram needs a features_fn (the context has none)")
        self.base = np.asarray(ctx.labeled, dtype=np.int64)
        self.z_dev = None
        self._live = None
        self._base_gram: tuple[int, Any] | None = None
        if spectra.device_float64:       # everything stays on the device
            phi = feat.pool_features_on_device(ctx, fn, mesh=mesh)      # the model in float32
            with spectra.precision():
                self.z_dev, gram = dev.gram_of(phi.astype(jnp.float64), bias=bias)
                rtol = self.z_dev.shape[1] * ntk.FLOAT32_EPS
                self._rank = dev.rank_from_gram(gram, rtol)
            self.z = None
        else:                           # host float64 Z: all scores, or the finalists
            phi_host = feat.pool_features(ctx, fn, mesh=mesh)
            self._rank = ntk.feature_rank(phi_host, bias=bias)
            z = phi_host.astype(np.float64)
            self.z = np.concatenate([z, np.ones((len(z), 1))], axis=1) if bias else z
            self._live = int(np.count_nonzero(np.any(self.z != 0, axis=0)))
            if spectra.prefilter:
                self.z_dev = jnp.asarray(self.z, dtype=jnp.float32)
        self.width = (self.z if self.z is not None else self.z_dev).shape[1]
        log.debug("FeatureGram (%s): pool %d, width %d", spectra, len(ctx.x), self.width)

    def extend_base(self, rows) -> None:
        self.base = np.concatenate([self.base, self.groups[np.asarray(rows)].ravel()])

    def _device_base_gram(self):
        """Z_BᵀZ_B on the device, updated by the rows added since the last call (a fixed
        shape per round, so the sequential variants do not recompile as B grows)."""
        done, gram = self._base_gram if self._base_gram is not None else (0, None)
        if gram is None or done > len(self.base):
            done, gram = 0, jnp.zeros((self.width, self.width), self.z_dev.dtype)
        if done < len(self.base):
            z_new = self.z_dev[jnp.asarray(self.base[done:])]
            gram = gram + jnp.matmul(z_new.T, z_new, precision=ntk.HIGHEST)
        self._base_gram = (len(self.base), gram)
        return gram

    def _side(self) -> tuple[int, int]:
        """(matrix side, n = |B| + G): the kernel side n while n ≤ d + 1, else d + 1."""
        n = len(self.base) + self.groups.shape[1]
        return min(n, self.width), n

    def _rtol(self) -> float:
        return spectra.feature_rtol(self.width)

    def _rank_bound(self) -> int:
        side = self._side()[0]
        return side if self._live is None else min(side, self._live)

    def _host_spectra(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        side, n = self._side()
        z_b = self.z[self.base]
        if n <= self.width:   # kernel side, n²: border Z_B Z_Bᵀ with the group's rows
            k_bb = z_b @ z_b.T

            def matrices(r):
                zg = self.z[self.groups[r]]
                return spectra.bordered(k_bb, zg @ z_b.T, np.matmul(zg, np.swapaxes(zg, 1, 2)))
        else:                 # feature side, (d+1)²: Z_BᵀZ_B + Z_gᵀZ_g
            gram_base = z_b.T @ z_b

            def matrices(r):
                return spectra.updated(gram_base, self.z[self.groups[r]])
        ranks, lam = spectra.score_rows(rows, side, matrices, self._rtol())
        return ranks, self.scale * lam

    def _base_matrix(self):
        """C·Z_B Z_Bᵀ (= K̃(B, B)) while |B| ≤ d + 1, else C·Z_BᵀZ_B (its non-zero spectrum)."""
        if self.z is not None:
            z_b = self.z[self.base]
            return self.scale * (z_b @ z_b.T if len(self.base) <= self.width else z_b.T @ z_b)
        assert self.z_dev is not None
        z_b = self.z_dev[jnp.asarray(self.base)]
        m = (jnp.matmul(z_b, z_b.T, precision=ntk.HIGHEST) if len(self.base) <= self.width
             else self._device_base_gram())
        return self.scale * m

    def _sq_norms(self, idx: np.ndarray) -> np.ndarray:
        """‖z_i‖² of pool rows `idx` (any shape), float64 on the host."""
        if self.z is not None:
            return np.sum(self.z[idx] ** 2, axis=-1)
        assert self.z_dev is not None      # no host Z: the float64 device path holds it
        z = self.z_dev[jnp.asarray(idx)]
        return np.asarray(jax.device_get(jnp.sum(z * z, axis=-1)), dtype=np.float64)

    def _base_trace(self) -> float:
        return self.scale * float(self._sq_norms(self.base).sum())

    def _group_traces(self, rows: np.ndarray) -> np.ndarray:
        return self.scale * self._sq_norms(self.groups[rows]).sum(axis=-1)

    def _device_spectra(self, rows: np.ndarray, slack: float, u_idx: int) -> dev.Summaries:
        side, n = self._side()
        z = self.z_dev
        args: tuple
        if n <= self.width:
            z_b = z[jnp.asarray(self.base)]
            k_bb = jnp.matmul(z_b, z_b.T, precision=ntk.HIGHEST)
            kernel, args = dev.kernel_side, (z, z_b, k_bb)
        else:
            kernel, args = dev.feature_side, (z, self._device_base_gram())
        per = dev.rows_per_chunk(side, len(rows), z.dtype.itemsize)
        summ = dev.score_chunks(kernel, args, self.groups[rows], per, rtol=self._rtol(),
                                slack=slack, u_idx=u_idx)
        return dataclasses.replace(summ, lam=self.scale * summ.lam, at_u=self.scale * summ.at_u,
                                   trace=self.scale * summ.trace)


class JacobianGram(BackendGram):
    """CRC scores from per-sample Jacobians over any parameter subset.

    On the host backend the kernel blocks are float64 NumPy arrays; on the device backend
    they stay device arrays (float64, or float32 for the prefilter).
    """

    def __init__(self, ctx: Context, groups: np.ndarray, *, subset="last",
                 budget_bytes: int = ntk.JACOBIAN_BUDGET_BYTES, mesh=None,
                 spectra: Spectra = HOST):
        self.groups = np.asarray(groups)
        self.ctx = ctx
        self.spectra = spectra
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.f, self.params = ctx.apply_fn, sharding.replicate(self.mesh, ctx.variables)
        self.subset = variables_subset(ctx, subset)
        self.cand = self.groups.ravel()
        x = ctx.x
        self.batch = ntk.jacobian_batch_size(self.f, self.params, x[:1], subset=self.subset,
                                             budget_bytes=budget_bytes)
        self.base = np.asarray(ctx.labeled, dtype=np.int64)
        self._rank = self._head_rank() if subset == "last" else None   # the journal's ρ
        with spectra.precision():
            self._build(x)

    def _head_rank(self) -> int | None:
        """Rank of [Φ, 1] over the pool when the head is dense (Φ: its input), else None."""
        fn = feat.head_features_fn(self.ctx)
        if fn is None:
            return None
        phi = sharding.map_batches(fn, self.params, self.ctx.x, batch_size=self.ctx.batch_size,
                                   mesh=self.mesh)
        return ntk.feature_rank(phi, bias=feat.head_has_bias(self.ctx.params))

    def _keep(self, k):
        """A contracted block as the backend holds it: float64 NumPy, or a device array."""
        if not self.spectra.on_device:
            return _host(k).astype(np.float64)
        return jnp.asarray(k, dtype=self.spectra.dtype)

    def _xp(self):
        return jnp if self.spectra.on_device else np

    def _build(self, x) -> None:
        jac, xp = self._jac, self._xp()
        held_base = None
        if len(self.base) == 0:
            self.k_bb = xp.zeros((0, 0), dtype=self.spectra.dtype)
        elif len(self.base) <= self.batch:
            held_base = jac(x[self.base])
            self.k_bb = self._keep(ntk.contract_jit(held_base, held_base, trace=True))
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
            k_gg.append(self._keep(_within_groups(jc, g)))
            k_bc.append(self._base_cross(jc, held_base))
        self.k_gg = xp.concatenate(k_gg)
        self.k_bc = xp.concatenate(k_bc, axis=1)
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

    def _base_blocks(self):
        """K̃(B, B) block by block when the base Jacobians do not fit in memory at once
        (the upper block triangle, mirrored; as ntk.empirical_ntk, on the mesh)."""
        x, base, b = self.ctx.x, self.base, self.batch
        chunks = [base[s:s + b] for s in range(0, len(base), b)]
        blocks = [[None] * len(chunks) for _ in chunks]
        for i, ci in enumerate(chunks):
            ji = self._jac(x[ci])
            for j in range(i, len(chunks)):
                jj = ji if j == i else self._jac(x[chunks[j]])
                blocks[i][j] = self._keep(ntk.contract_jit(ji, jj, trace=True))
                blocks[j][i] = blocks[i][j].T
        return self._xp().block(blocks)

    def _base_cross(self, jc, held_base):
        """K̃(B, chunk): against held base Jacobians, or base blocks recomputed."""
        xp = self._xp()
        if len(self.base) == 0:
            return xp.zeros((0, jc[0].shape[0]), dtype=self.spectra.dtype)
        if held_base is not None:
            return self._keep(ntk.contract_jit(held_base, jc, trace=True))
        return xp.concatenate(
            [self._keep(ntk.contract_jit(self._jac(self.ctx.x[self.base[s:s + self.batch]]), jc,
                                         trace=True))
             for s in range(0, len(self.base), self.batch)], axis=0)

    def extend_base(self, rows) -> None:
        rows = np.asarray(rows)
        g = self.groups.shape[1]
        pos = (rows[:, None] * g + np.arange(g)).ravel()
        new = self.cand[pos]
        xp = self._xp()
        with self.spectra.precision():
            jn = self._jac(self.ctx.x[new])
            if self.cand_jac is not None:
                k_nc = self._keep(ntk.contract_jit(jn, self.cand_jac, trace=True))
            else:
                k_nc = xp.concatenate(
                    [self._keep(ntk.contract_jit(jn, self._jac(self.ctx.x[self.cand[s:s + self.batch]]),
                                                 trace=True))
                     for s in range(0, len(self.cand), self.batch)], axis=1)
            k_bn = self.k_bc[:, pos]
            self.k_bb = xp.block([[self.k_bb, k_bn], [k_bn.T, k_nc[:, pos]]])
            self.k_bc = xp.concatenate([self.k_bc, k_nc], axis=0)
        self.base = np.concatenate([self.base, new])

    def _side(self) -> tuple[int, int]:
        n = len(self.base) + self.groups.shape[1]
        return n, n

    def _rtol(self) -> float:
        return spectra.kernel_rtol(self._side()[0])

    def _base_matrix(self):
        return self.k_bb

    def _base_trace(self) -> float:
        return float(np.asarray(self._xp().trace(self.k_bb))) if len(self.base) else 0.0

    def _group_traces(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._xp().trace(self.k_gg[rows], axis1=1, axis2=2), np.float64)

    def _host_spectra(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = self.groups.shape[1]
        n = self._side()[0]
        pos = rows[:, None] * g + np.arange(g)                               # (b, G)
        k_bb = np.asarray(self.k_bb, dtype=np.float64)                       # host copies of
        k_bg = np.asarray(self.k_bc[:, pos.ravel()], dtype=np.float64)       # what `rows` need
        k_bg = k_bg.reshape(len(k_bb), len(rows), g)
        k_gg = np.asarray(self.k_gg[rows], dtype=np.float64)

        def matrices(r):
            return spectra.bordered(k_bb, np.moveaxis(k_bg[:, r], 0, 2), k_gg[r])

        return spectra.score_rows(np.arange(len(rows)), n, matrices, self._rtol())

    def _device_spectra(self, rows: np.ndarray, slack: float, u_idx: int) -> dev.Summaries:
        n = self._side()[0]
        per = dev.rows_per_chunk(n, len(rows), self.k_gg.dtype.itemsize)
        return dev.score_chunks(dev.jacobian_side, (self.k_bb, self.k_bc, self.k_gg), rows, per,
                                rtol=self._rtol(), slack=slack, u_idx=u_idx)


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


def build(ctx: Context, groups: np.ndarray, *, subset="last", mesh=None,
          backend: str | Spectra = "auto"):
    """The Gram for `subset`: features for "last" on a dense head (from ctx.features_fn, or
    derived from the head), Jacobians otherwise; features and Jacobians are computed on
    the devices of `mesh` (default every device), eigenvalues where `backend` says: a
    Spectra (what CRC's strategies resolve once, when built), or a backend name ("auto":
    the host on a CPU, the device on a GPU/TPU; device_spectra.spectra_for)."""
    spectra = dev.spectra_for(backend)
    if subset == "last":
        fn = ctx.features_fn if ctx.features_fn is not None else feat.head_features_fn(ctx)
        if fn is not None:
            return FeatureGram(ctx, groups, mesh=mesh, spectra=spectra, features_fn=fn)
    return JacobianGram(ctx, groups, subset=subset, mesh=mesh, spectra=spectra)
