"""K-means (Lloyd's algorithm with k-means++ initialization), jitted and chunked.

TypiClust clusters the pool into |L| + budget clusters; ProbCover's purity rule clusters
it into C. Both need k-means on up to ~73k × 128 features: assignments are computed in
blocks of rows against all k centers (memory O(chunk·k + N·d)), centers updated with a
segment sum. An emptied cluster keeps its previous center. Stops when no assignment
changes, or after `max_iter` iterations.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax.acquisition import distances


@jax.jit
def _block_assign(a, centers):
    return jnp.argmin(distances.sq_dist_block(a, centers), axis=1)


def assign(feats: np.ndarray, centers: np.ndarray | jax.Array, *,
           chunk: int = distances.DEFAULT_CHUNK) -> np.ndarray:
    """Index of the nearest center of each row (first on ties), (N,) int64."""
    c = distances.block_size(len(feats), chunk)
    centers = jnp.asarray(centers, jnp.float32)
    out = np.empty(len(feats), np.int64)
    for s, e in distances.blocks(len(feats), c):
        out[s:e] = np.asarray(_block_assign(jnp.asarray(distances.pad_rows(feats[s:e], c)),
                                            centers))[:e - s]
    return out


@partial(jax.jit, static_argnames="k")
def _update_centers(feats, labels, old_centers, k):
    sums = jax.ops.segment_sum(feats, labels, num_segments=k)
    counts = jax.ops.segment_sum(jnp.ones(len(feats), feats.dtype), labels, num_segments=k)
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], old_centers)


def lloyd(feats: np.ndarray, centers: np.ndarray | jax.Array, *, max_iter: int = 100):
    """Lloyd iterations from `centers`; returns (centers (k, d), labels (N,))."""
    feats = np.asarray(feats, np.float32)
    centers = jnp.asarray(centers, jnp.float32)
    k = int(centers.shape[0])
    labels = assign(feats, centers)
    dev_feats = jnp.asarray(feats)
    for _ in range(max_iter):
        centers = _update_centers(dev_feats, jnp.asarray(labels), centers, k)
        new = assign(feats, centers)
        if np.array_equal(new, labels):
            break
        labels = new
    return np.asarray(centers), labels


@jax.jit
def _draw_d2(key, d2):
    return jax.random.categorical(key, jnp.log(d2))


def kmeans_pp_init(feats: np.ndarray | jax.Array, k: int, key) -> np.ndarray:
    """k-means++ (Arthur & Vassilvitskii 2007): a uniform first center, then D² sampling."""
    feats = jnp.asarray(feats, jnp.float32)
    n = int(feats.shape[0])
    if not 0 < k <= n:
        raise ValueError(f"need 0 < k <= {n} clusters, got {k}")
    first = int(jax.random.randint(jax.random.fold_in(key, 0), (), 0, n))
    picks = [first]
    d2 = distances.sq_dist_to_point(feats, feats[first])
    for t in range(1, k):
        if float(jnp.sum(d2)) <= 0.0:  # fewer distinct points than k: take unpicked ones
            rest = np.setdiff1d(np.arange(n), picks)
            picks += rest[:k - len(picks)].tolist()
            break
        i = int(_draw_d2(jax.random.fold_in(key, t), d2))
        picks.append(i)
        d2 = jnp.minimum(d2, distances.sq_dist_to_point(feats, feats[i]))
    return np.asarray(feats[np.asarray(picks)])


def kmeans(feats: np.ndarray, k: int, key, *, max_iter: int = 100):
    """k-means++ then Lloyd; returns (centers (k, d), labels (N,))."""
    return lloyd(feats, kmeans_pp_init(feats, k, key), max_iter=max_iter)
