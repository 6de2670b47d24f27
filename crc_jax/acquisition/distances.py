"""Squared Euclidean distances between feature sets, in fixed-size blocks.

The geometric baselines (core-set, TypiClust, ProbCover, BADGE) need distances between
pool points, but a pool-by-pool matrix of an SVHN-sized pool (73,257²) is 21 GB in
float32. Everything here works on blocks of `chunk` rows by `chunk` columns, padded to
a power of two (`block_size`) so the jitted kernels compile for a few sizes only, however
the pool, the labeled set or a cluster grows, and reduces each block (a minimum, a
count) before the next: memory is O(chunk² + N·d), whatever N is.

    ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b   (clipped at 0; float32 on the device)

`context_features` gives the features these strategies measure distances on: the
Context's penultimate features (`features_fn`), or, without one, those derived from a
dense head (crc_jax.acquisition.features.head_features_fn).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

DEFAULT_CHUNK = 1024


def context_features(ctx, indices) -> np.ndarray:
    """Penultimate features (n, d) float32 of pool indices, as the Context gives them."""
    from crc_jax.acquisition import features

    fn = ctx.features_fn if ctx.features_fn is not None else features.head_features_fn(ctx)
    if fn is None:
        raise ValueError("this strategy needs penultimate features: the Context has no "
                         "features_fn and the model no plain dense head")
    return features.pool_features(ctx, fn, np.asarray(indices))


@jax.jit
def sq_dist_block(a, b):
    """(n, d), (m, d) -> (n, m) squared distances."""
    d = (jnp.sum(a * a, axis=1)[:, None] + jnp.sum(b * b, axis=1)[None, :] - 2.0 * a @ b.T)
    return jnp.maximum(d, 0.0)


@jax.jit
def sq_dist_to_point(points, center):
    """(n, d), (d,) -> (n,) squared distances, by direct differences (no cancellation)."""
    return jnp.sum(jnp.square(points - center[None, :]), axis=1)


def pad_rows(x: np.ndarray, size: int) -> np.ndarray:
    """x with rows appended (copies of its first row) up to `size` rows."""
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[:1], size - len(x), axis=0)])


def block_size(n: int, chunk: int = DEFAULT_CHUNK) -> int:
    """The block side for n rows: the next power of two >= n (at least 8), at most chunk."""
    return min(chunk, 1 << max(3, (max(n, 1) - 1).bit_length()))


def blocks(n: int, chunk: int):
    """(start, stop) pairs covering range(n) in steps of `chunk`."""
    return [(s, min(s + chunk, n)) for s in range(0, n, chunk)]


@jax.jit
def _block_min(a, b):
    return jnp.min(sq_dist_block(a, b), axis=1)


def min_sq_distances(points: np.ndarray, centers: np.ndarray, *,
                     chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """min_c ‖x − c‖² for every row x of `points` (n,); +inf when there are no centers."""
    points = np.asarray(points, np.float32)
    centers = np.asarray(centers, np.float32)
    out = np.full(len(points), np.inf, np.float32)
    if len(centers) == 0 or len(points) == 0:
        return out
    pc, cc = block_size(len(points), chunk), block_size(len(centers), chunk)
    for s, e in blocks(len(points), pc):
        a = jnp.asarray(pad_rows(points[s:e], pc))
        best = jnp.full((pc,), jnp.inf, jnp.float32)
        for cs, ce in blocks(len(centers), cc):
            best = jnp.minimum(best, _block_min(a, jnp.asarray(pad_rows(centers[cs:ce], cc))))
            # (padding repeats a real center, so it never lowers a minimum)
        out[s:e] = np.asarray(best)[:e - s]
    return out


def k_smallest_sq_distances(points: np.ndarray, k: int, *,
                            chunk: int = DEFAULT_CHUNK) -> np.ndarray:
    """(n, k) squared distances of each point to its k nearest *other* points, ascending.

    The point itself (distance 0 at its own index) is excluded; needs k < n.
    """
    points = np.asarray(points, np.float32)
    n = len(points)
    if not 0 < k < n:
        raise ValueError(f"need 0 < k < n, got k={k}, n={n}")
    c = block_size(n, chunk)
    kb = 1 << (k - 1).bit_length()  # top-k width rounded up to a power of two (compiles)
    out = np.empty((n, k), np.float32)
    for s, e in blocks(n, c):
        a = jnp.asarray(pad_rows(points[s:e], c))
        best = jnp.full((c, kb), jnp.inf, jnp.float32)
        for cs, ce in blocks(n, c):
            b = jnp.asarray(pad_rows(points[cs:ce], c))
            valid = np.arange(cs, cs + c) < ce  # padded columns are not neighbours
            d = _block_with_self_excluded(a, b, jnp.asarray(valid), s, cs, kb)
            best = -jax.lax.top_k(-jnp.concatenate([best, d], axis=1), kb)[0]
        out[s:e] = np.asarray(best)[:e - s, :k]
    return out


@partial(jax.jit, static_argnames="k")
def _block_with_self_excluded(a, b, valid_b, row_start, col_start, k):
    d = jnp.where(valid_b[None, :], sq_dist_block(a, b), jnp.inf)
    rows = row_start + jnp.arange(a.shape[0])[:, None]
    cols = col_start + jnp.arange(b.shape[0])[None, :]
    d = jnp.where(rows == cols, jnp.inf, d)
    return -jax.lax.top_k(-d, min(k, b.shape[0]))[0]
