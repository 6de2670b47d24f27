"""ProbCover (Yehuda, Dekel, Hacohen & Weinshall, NeurIPS 2022): greedy max coverage.

Every point x covers the ball B_δ(x) = {x' : ‖φ(x) − φ(x')‖ < δ} of the L2-normalized
features (the authors' code normalizes its embeddings). Points within δ of a labeled
point start covered; then, `budget` times, the unlabeled point whose ball holds the most
still-uncovered points is picked (ties: lower pool index) and its ball becomes covered.
Once everything is covered the remaining picks are uniformly random (from the key).

δ (option `delta`; 0 = choose it) follows the paper's purity rule: cluster the features
into C clusters with k-means and take the largest δ whose purity — the fraction of points
whose ball holds only points of their own cluster — is at least `purity` (α = 0.95).
x's ball is pure iff δ ≤ r(x), the distance from x to the nearest point of another
cluster, so purity(δ) = mean[r ≥ δ] and the largest δ is an order statistic of r.

The graph is never stored: degrees are counted in blocks of the pool, then updated per
pick from the newly covered points only. Memory O(chunk² + N·d).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax.acquisition import distances, kmeans
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import register


def normalize(feats: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return (feats / np.maximum(norms, 1e-12)).astype(np.float32)


@jax.jit
def _block_other_min(a, la, b, lb):
    d = jnp.where(la[:, None] != lb[None, :], distances.sq_dist_block(a, b), jnp.inf)
    return jnp.min(d, axis=1)


def other_cluster_distance(feats: np.ndarray, labels: np.ndarray, *,
                           chunk: int = distances.DEFAULT_CHUNK) -> np.ndarray:
    """r(x): distance to the nearest point with another label, (N,) (inf if none)."""
    n = len(feats)
    c = distances.block_size(n, chunk)
    out = np.empty(n, np.float32)
    for s, e in distances.blocks(n, c):
        a = jnp.asarray(distances.pad_rows(feats[s:e], c))
        la = jnp.asarray(distances.pad_rows(labels[s:e], c))
        best = jnp.full((c,), jnp.inf, jnp.float32)
        for cs, ce in distances.blocks(n, c):
            b = jnp.asarray(distances.pad_rows(feats[cs:ce], c))  # padding repeats a real
            lb = jnp.asarray(distances.pad_rows(labels[cs:ce], c))  # point: minima unchanged
            best = jnp.minimum(best, _block_other_min(a, la, b, lb))
        out[s:e] = np.asarray(best)[:e - s]
    return np.sqrt(out)


def purity_delta(r: np.ndarray, alpha: float) -> float:
    """The largest δ with mean[r ≥ δ] ≥ alpha: the (N − ⌈αN⌉)-th smallest r."""
    n = len(r)
    m = max(1, math.ceil(alpha * n - 1e-9))
    return float(np.sort(r)[n - m])


@jax.jit
def _block_count(a, b, b_weight, delta_sq):
    return jnp.sum((distances.sq_dist_block(a, b) < delta_sq) * b_weight[None, :], axis=1)


def ball_counts(points: np.ndarray, targets: np.ndarray, weight: np.ndarray, delta: float, *,
                chunk: int = distances.DEFAULT_CHUNK) -> np.ndarray:
    """Σ_y weight[y]·[‖x − y‖ < δ] for every row x of points, over rows y of targets."""
    out = np.zeros(len(points), np.int64)
    if len(targets) == 0 or len(points) == 0:
        return out
    pc, tc = distances.block_size(len(points), chunk), distances.block_size(len(targets), chunk)
    dsq = jnp.float32(delta * delta)
    for s, e in distances.blocks(len(points), pc):
        a = jnp.asarray(distances.pad_rows(points[s:e], pc))
        total = jnp.zeros((pc,), jnp.float32)
        for cs, ce in distances.blocks(len(targets), tc):
            b = jnp.asarray(distances.pad_rows(targets[cs:ce], tc))
            w = np.zeros(tc, np.float32)
            w[:ce - cs] = weight[cs:ce]
            total = total + _block_count(a, b, jnp.asarray(w), dsq)
        out[s:e] = np.asarray(total)[:e - s].astype(np.int64)
    return out


def max_coverage(feats: np.ndarray, is_labeled: np.ndarray, budget: int, delta: float,
                 key) -> tuple[np.ndarray, float]:
    """Positions of `budget` greedy picks and the fraction covered after them."""
    covered = distances.min_sq_distances(feats, feats[is_labeled]) < np.float32(delta) ** 2
    degree = ball_counts(feats, feats, (~covered).astype(np.float32), delta)
    candidate = ~is_labeled
    dev = jnp.asarray(feats)
    picks: list[int] = []
    while len(picks) < budget:
        masked = np.where(candidate, degree, -1)
        best = int(np.argmax(masked))
        if masked[best] <= 0:
            break
        picks.append(best)
        candidate[best] = False
        near = np.asarray(distances.sq_dist_to_point(dev, dev[best])) < np.float32(delta) ** 2
        newly = np.flatnonzero(near & ~covered)
        covered[newly] = True
        degree -= ball_counts(feats, feats[newly], np.ones(len(newly), np.float32), delta)
    if len(picks) < budget:  # everything covered: random picks among the rest
        rest = np.flatnonzero(candidate)
        perm = np.asarray(jax.random.permutation(key, len(rest)))
        picks += rest[perm[:budget - len(picks)]].tolist()
    return np.asarray(picks, np.int64), float(covered.mean())


@register("probcover")
def make_probcover(delta: float = 0.0, purity: float = 0.95, normalize_features: bool = True):
    if delta < 0 or not 0 < purity <= 1:
        raise ValueError(f"probcover needs delta >= 0 and 0 < purity <= 1, got {delta}, {purity}")

    def probcover(ctx: Context, budget: int, key) -> np.ndarray:
        check_budget(ctx, budget)
        indices = np.sort(np.concatenate([np.asarray(ctx.labeled), np.asarray(ctx.unlabeled)]))
        is_labeled = np.isin(indices, ctx.labeled)
        feats = distances.context_features(ctx, indices)
        if normalize_features:
            feats = normalize(feats)
        cluster_key, pick_key = jax.random.split(key)
        radius = delta
        if radius == 0:
            _, labels = kmeans.kmeans(feats, min(ctx.num_classes, len(feats)), cluster_key)
            radius = purity_delta(other_cluster_distance(feats, labels), purity)
        picks, coverage = max_coverage(feats, is_labeled, budget, radius, pick_key)
        ctx.record["probcover_delta"] = radius
        ctx.record["probcover_coverage"] = coverage
        return indices[picks]

    return probcover
