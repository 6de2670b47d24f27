"""Core-set (Sener & Savarese, ICLR 2018): greedy k-center on penultimate features.

With the labeled set L as the initial centers, repeat `budget` times

    u* = argmax_{u ∈ U} min_{c ∈ centers} ‖φ(u) − φ(c)‖²,   centers ← centers ∪ {u*}

on the features φ the Context gives (`features_fn`, Euclidean, no normalization): each
pick is the unlabeled point farthest from everything labeled or picked so far (the
2-approximation of the k-center problem). Ties go to the lower pool index. Memory is
O(N·d): the distances to L are taken in blocks, then one (N,) vector of minima is
updated per pick.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax.acquisition import distances
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import register


@jax.jit
def _pick_and_update(feats, min_d):
    """Pick argmax of min_d (first on ties), then fold the new center into min_d."""
    i = jnp.argmax(min_d)
    new_d = jnp.minimum(min_d, distances.sq_dist_to_point(feats, feats[i]))
    return i, new_d.at[i].set(-jnp.inf)


def k_center_greedy(feats: np.ndarray, centers: np.ndarray, budget: int) -> np.ndarray:
    """Positions (into `feats`) of `budget` greedy k-center picks, given initial centers.

    `feats` must be in ascending pool-index order for ties to go to the lower index.
    With no initial centers every minimum is +inf, so the first pick is position 0.
    """
    host_d = distances.min_sq_distances(feats, centers)
    min_d = jnp.asarray(np.where(np.isinf(host_d), np.float32(np.finfo(np.float32).max), host_d))
    dev_feats = jnp.asarray(feats)
    picks: list[int] = []
    for _ in range(budget):
        i, min_d = _pick_and_update(dev_feats, min_d)
        picks.append(int(i))
    return np.asarray(picks, np.int64)


@register("coreset")
def make_coreset():
    def coreset(ctx: Context, budget: int, key) -> np.ndarray:
        del key
        check_budget(ctx, budget)
        unlabeled = np.sort(np.asarray(ctx.unlabeled))
        feats = distances.context_features(ctx, unlabeled)
        labeled = np.asarray(ctx.labeled)
        centers = (distances.context_features(ctx, labeled) if len(labeled)
                   else np.zeros((0, feats.shape[1]), np.float32))
        return unlabeled[k_center_greedy(feats, centers, budget)]

    return coreset
