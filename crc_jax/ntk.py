"""The empirical neural tangent kernel of a model, and the rank-aware λ⁺min of CRC.

Definition. For logits f(θ, x) ∈ R^C and a subset S of the parameters θ,

    K̂_cc'(x, x') = Σ_{p ∈ S} ∂f_c(x)/∂θ_p · ∂f_c'(x')/∂θ_p        (C×C blocks)
    K̃(x, x')     = Σ_c K̂_cc(x, x')                                  (class trace)

K̃ is a **sum** over classes, as in the paper (§3.1). neural-tangents' `trace_axes`
**averages**, so K̃ = C · nt.empirical_ntk_fn(f, trace_axes=(-1,))(x1, x2, θ_S).

Subsets: "all"; "last", the parameters of the final dense layer that produces the
logits (the top-level module "head" of the model contract, else the last top-level
module); or a predicate on a parameter's path, e.g. `lambda path: path[0] != "stem"`.
For the last dense layer logits = Φ W + b, so K̃ = C·(ΦΦᵀ + 1) on its input features Φ
(`last_layer_ntk`), which CRC's fast path uses.

Implementation ("Jacobian contraction", as neural-tangents calls it). Per-sample
Jacobians J(x) ∈ R^{C×P} come from `vmap` over samples of reverse mode (C `vjp`s per
sample; forward mode, P `jvp`s, when P < C), then K̃ = J̄1 J̄2ᵀ with J̄ = J reshaped to
(n, C·P): n1·n2·C·P flops (C² times that for blocks). Memory is bounded by computing
Jacobians in batches of at most `batch_size` samples (by default as many as fit in
256 MiB) and assembling the kernel block by block. Matmuls run at HIGHEST precision
(no TF32). Every function here is pure and traceable, so it may be jitted whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

Subset = str | Callable[[tuple], bool]

HIGHEST = jax.lax.Precision.HIGHEST
JACOBIAN_BUDGET_BYTES = 1 << 28   # one batch of per-sample Jacobians
FLOAT32_EPS = float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------- subsets

def key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def last_layer_name(params) -> str:
    """The top-level module holding the final dense layer: "head", else the last one."""
    if isinstance(params, Mapping):
        keys = [str(k) for k in params.keys()]
        if not keys:
            raise ValueError("params are empty")
        return "head" if "head" in keys else keys[-1]
    if isinstance(params, (list, tuple)):
        nonempty = [i for i, p in enumerate(params) if jax.tree_util.tree_leaves(p)]
        if not nonempty:
            raise ValueError("params are empty")
        return str(nonempty[-1])
    raise ValueError(f"cannot find the last layer in params of type {type(params).__name__}")


def parameter_paths(params) -> list[tuple]:
    """The path (tuple of names) of every parameter leaf, in `tree_leaves` order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [tuple(key_name(k) for k in path) for path, _ in flat]


def parameter_mask(params, subset: Subset) -> list[bool]:
    """Which leaves (in `tree_leaves` order) `subset` differentiates."""
    paths = parameter_paths(params)
    if subset == "all":
        mask = [True] * len(paths)
    elif subset == "last":
        top = last_layer_name(params)
        mask = [bool(p) and p[0] == top for p in paths]
    elif callable(subset):
        mask = [bool(subset(p)) for p in paths]
    else:
        raise ValueError(f"subset must be 'all', 'last' or a predicate on parameter paths, got {subset!r}")
    if not any(mask):
        raise ValueError(f"parameter subset {subset!r} selects no parameters")
    return mask


def count_parameters(params, subset: Subset = "all") -> int:
    """Number of scalar parameters in `subset`."""
    leaves = jax.tree_util.tree_leaves(params)
    return sum(int(np.prod(l.shape)) for l, m in zip(leaves, parameter_mask(params, subset)) if m)


def _split(params, subset: Subset):
    """(differentiated leaves, merge) with merge(leaves) -> the full params pytree."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    mask = parameter_mask(params, subset)
    diff = tuple(l for l, m in zip(leaves, mask) if m)

    def merge(new):
        it = iter(new)
        return treedef.unflatten([next(it) if m else l for l, m in zip(leaves, mask)])

    return diff, merge


# --------------------------------------------------------------------------- Jacobians

def jacobians(apply_fn, params, x, *, subset: Subset = "last"):
    """Per-sample Jacobians of the logits: a tuple, one (n, C, *leaf.shape) per leaf of `subset`.

    One call holds n·C·P floats; use `empirical_ntk` for memory-bounded kernels.
    """
    diff, merge = _split(params, subset)

    def f_single(d, xi):
        return apply_fn(merge(d), xi[None])[0]

    num_classes = jax.eval_shape(f_single, diff, x[0]).shape[0]
    num_params = sum(int(np.prod(l.shape)) for l in diff)
    # Reverse mode costs C backward passes per sample, forward mode P forward passes.
    jac = jax.jacfwd if num_params < num_classes else jax.jacrev
    return jax.vmap(jac(f_single), in_axes=(None, 0))(diff, x)


def contract(j1, j2, *, trace: bool = True):
    """Σ over parameters of J1 J2ᵀ: (n1, n2) class trace, or (n1, n2, C, C) blocks."""
    n1, n2 = j1[0].shape[0], j2[0].shape[0]
    if trace:
        return sum(jnp.matmul(a.reshape(n1, -1), b.reshape(n2, -1).T, precision=HIGHEST)
                   for a, b in zip(j1, j2))
    c1, c2 = j1[0].shape[1], j2[0].shape[1]
    return sum(jnp.einsum("ncp,mdp->nmcd", a.reshape(n1, c1, -1), b.reshape(n2, c2, -1),
                          precision=HIGHEST)
               for a, b in zip(j1, j2))


# Jitted once at module level (apply_fn and subset static), so repeated calls with the
# same model reuse the compiled code.
jacobians_jit = jax.jit(jacobians, static_argnums=(0,), static_argnames=("subset",))
contract_jit = jax.jit(contract, static_argnames=("trace",))


def jacobian_batch_size(apply_fn, params, x, *, subset: Subset = "last",
                        budget_bytes: int = JACOBIAN_BUDGET_BYTES) -> int:
    """How many per-sample Jacobians fit in `budget_bytes` (at least 1)."""
    out = jax.eval_shape(apply_fn, params, x[:1])
    per_sample = out.shape[-1] * count_parameters(params, subset) * 4
    return max(1, int(budget_bytes // per_sample))


def _transpose_block(k, trace):
    return k.T if trace else jnp.transpose(k, (1, 0, 3, 2))


def empirical_ntk(apply_fn: Callable[[Any, Any], Any], params, x1, x2=None, *,
                  trace: bool = True, subset: Subset = "last",
                  batch_size: int | None = None):
    """The empirical NTK of `apply_fn(params, x) -> logits (N, C)` between x1 and x2.

    trace=True: (n1, n2) class trace K̃ = Σ_c K̂_cc (a sum, not neural-tangents' mean);
    trace=False: (n1, n2, C, C) blocks K̂. `subset`: "all", "last" or a path predicate.
    x2=None means x2 = x1 (each Jacobian is then computed once per block pair, and
    only the upper block triangle). Jacobians are computed `batch_size` samples at a
    time (default: as many as fit in 256 MiB), so memory is bounded for large inputs.
    """
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    b = batch_size or jacobian_batch_size(apply_fn, params, x1, subset=subset)
    jac = partial(jacobians_jit, apply_fn, params, subset=subset)
    n1, n2 = x1.shape[0], x2.shape[0]
    rows = [slice(i, min(i + b, n1)) for i in range(0, n1, b)]
    cols = [slice(j, min(j + b, n2)) for j in range(0, n2, b)]

    if len(cols) == 1 and not symmetric:
        j2 = jac(x2)   # hold the small side, stream the other
        return jnp.concatenate([contract_jit(jac(x1[r]), j2, trace=trace) for r in rows], axis=0)
    if len(rows) == 1 and not symmetric:
        j1 = jac(x1)
        return jnp.concatenate([contract_jit(j1, jac(x2[c]), trace=trace) for c in cols], axis=1)

    blocks: list[list[Any]] = [[None] * len(cols) for _ in rows]
    for i, r in enumerate(rows):
        ji = jac(x1[r])
        for j, c in enumerate(cols):
            if symmetric and j < i:
                blocks[i][j] = _transpose_block(blocks[j][i], trace)
                continue
            jj = ji if symmetric and j == i else jac(x2[c])
            blocks[i][j] = contract_jit(ji, jj, trace=trace)
    return jnp.concatenate([jnp.concatenate(row, axis=1) for row in blocks], axis=0)


def ntk_diagonal(apply_fn, params, x, *, trace: bool = False, subset: Subset = "all",
                 batch_size: int | None = None):
    """Per-sample NTK K̂(x, x): (n, C, C) blocks, or (n,) class traces; memory-bounded."""
    b = batch_size or jacobian_batch_size(apply_fn, params, x, subset=subset)
    out = []
    for start in range(0, x.shape[0], b):
        out.append(_diag_jit(apply_fn, params, x[start:start + b], subset=subset, trace=trace))
    return jnp.concatenate(out, axis=0)


@partial(jax.jit, static_argnums=(0,), static_argnames=("subset", "trace"))
def _diag_jit(apply_fn, params, x, *, subset, trace):
    j = jacobians(apply_fn, params, x, subset=subset)
    n, c = j[0].shape[:2]
    if trace:
        return sum(jnp.sum(jnp.square(a.reshape(n, -1)), axis=1) for a in j)
    return sum(jnp.einsum("ncp,ndp->ncd", a.reshape(n, c, -1), a.reshape(n, c, -1), precision=HIGHEST)
               for a in j)


def last_layer_ntk(features1, num_classes: int, features2=None, *, bias: bool = True):
    """Closed form of the trace NTK over a final dense layer: C·(Φ1Φ2ᵀ + 1) (no +1 without bias)."""
    f2 = features1 if features2 is None else features2
    k = jnp.matmul(features1, f2.T, precision=HIGHEST)
    return num_classes * (k + 1.0 if bias else k)


# --------------------------------------------------------------------------- λ⁺min and ranks

def min_positive_eigenvalue(K, rank):
    """λ⁺min of CRC: the r-th largest eigenvalue of K (…, n, n), r = min(n, rank).

    Rank-aware (docs/design.md "CRC, exactly"): while |L ∪ g| ≤ ρ this is λmin, so a set
    holding a repeated sample scores 0 (Proposition 2); beyond the rank ρ of the pool's
    kernel it is the smallest eigenvalue that can be positive. `rank` may be an int or
    an array broadcasting against the leading axes. Batched over leading axes.
    """
    K = jnp.asarray(K)
    n = K.shape[-1]
    ev = jnp.linalg.eigvalsh(K)                      # ascending
    r = jnp.clip(jnp.minimum(n, jnp.asarray(rank)), 1, n)
    idx = jnp.broadcast_to(n - r, ev.shape[:-1]).astype(jnp.int32)
    return jnp.take_along_axis(ev, idx[..., None], axis=-1)[..., 0]


def feature_rank(features, *, bias: bool = True, rtol: float | None = None,
                 chunk_bytes: int = 1 << 26) -> int:
    """Numerical rank of Z = [Φ, 1] (Φ without bias): the rank of the last-layer trace NTK.

    A singular value of Z counts when above rtol·σmax, rtol = (d+1)·ε_float32 by default:
    features come out of float32 arithmetic, and NumPy's float64 default tolerance would
    count their noise as rank. The squared singular values are the eigenvalues of the
    smaller Gram matrix, ZᵀZ ((d+1)², for N ≥ d+1) or ZZᵀ (N², for N < d+1): both hold
    the same non-zero eigenvalues. Computed in float64, accumulated in blocks of about
    `chunk_bytes` of Z, so the cost is O(N·d·min(N, d)) time and O(min(N, d)²) memory
    beyond the features: 20 vectors of d = 100,000 take a 20×20 matrix.
    """
    gram = smaller_gram(features, bias=bias, chunk_bytes=chunk_bytes)
    rtol = (np.asarray(features).shape[1] + int(bias)) * FLOAT32_EPS if rtol is None else rtol
    return rank_from_gram(gram, rtol)


def smaller_gram(features, *, bias: bool = True, side: str | None = None,
                 chunk_bytes: int = 1 << 26) -> np.ndarray:
    """ZᵀZ or ZZᵀ of Z = [Φ, 1] in float64, whichever is smaller (`side` "features" or
    "samples" forces one): the same non-zero eigenvalues. Φ is read in blocks (rows for
    ZᵀZ, columns for ZZᵀ) of about `chunk_bytes` as float64, never copied whole."""
    phi = np.asarray(features)
    n, d = phi.shape[0], phi.shape[1] + int(bias)
    side = side or ("features" if d <= n else "samples")
    if side == "features":
        gram = np.zeros((d, d))
        step = max(1, chunk_bytes // (8 * max(d, 1)))
        for start in range(0, n, step):
            z = phi[start:start + step].astype(np.float64)
            if bias:
                z = np.concatenate([z, np.ones((z.shape[0], 1))], axis=1)
            gram += z.T @ z
        return gram
    if side != "samples":
        raise ValueError(f"side must be 'features' or 'samples', got {side!r}")
    gram = np.full((n, n), float(bias))                     # the ones column: 1·1ᵀ
    step = max(1, chunk_bytes // (8 * max(n, 1)))
    for start in range(0, phi.shape[1], step):
        block = phi[:, start:start + step].astype(np.float64)
        gram += block @ block.T
    return gram


def rank_from_gram(gram, rtol: float) -> int:
    """How many eigenvalues of a Gram matrix ZᵀZ (or ZZᵀ) exceed rtol²·λmax: the numerical
    rank of Z at relative tolerance rtol on its singular values."""
    if gram.shape[0] == 0:
        return 0
    ev = np.linalg.eigvalsh(gram)
    if ev[-1] <= 0:
        return 0
    return int(np.sum(ev > (rtol ** 2) * ev[-1]))


def device_gram(z):
    """ZᵀZ or ZZᵀ of a device array Z (N, w), whichever is smaller (ranks: as smaller_gram)."""
    if z.shape[1] <= z.shape[0]:
        return jnp.matmul(z.T, z, precision=HIGHEST)
    return jnp.matmul(z, z.T, precision=HIGHEST)


def kernel_rank(K, *, rtol: float | None = None) -> int:
    """Numerical rank of a PSD kernel computed in float32.

    Eigenvalues of a float32 kernel carry errors of order n·ε_float32·λmax; those
    below rtol·λmax (rtol = n·ε_float32 by default) count as zero.
    """
    K = np.asarray(K, dtype=np.float64)
    ev = np.linalg.eigvalsh((K + K.T) / 2)
    rtol = K.shape[0] * FLOAT32_EPS if rtol is None else rtol
    if ev[-1] <= 0:
        return 0
    return int(np.sum(ev > rtol * ev[-1]))
