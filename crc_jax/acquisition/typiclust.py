"""TypiClust (Hacohen, Dekel & Weinshall, ICML 2022): typical points of uncovered clusters.

For the low-budget regime: cluster the features of the whole pool (labeled and
unlabeled) with k-means into K = min(|L| + budget, max_clusters) clusters, drop clusters
of at most `min_cluster_size` points, and order the rest by (number of labeled points
ascending, size descending, cluster id). Pick i takes cluster i mod (#clusters) in that
order and selects its most typical unlabeled, not yet picked point,

    typicality(x) = 1 / (mean_{x' ∈ kNN(x)} ‖φ(x) − φ(x')‖² + 1e-5),

with the k = min(knn, ⌊n_c / 2⌋) nearest neighbours taken among those n_c candidates of
the same cluster (as in the authors' code: K = 20, clusters of ≤ 5 dropped, at most 500
clusters; its faiss IndexFlatL2 search returns squared distances, hence the square).
The paper uses self-supervised features; here the features are the model's penultimate
ones, as the Context gives them: over a pretrained backbone with a linear head those are
the backbone's features. It needs no labels (K = budget then), so it is a cold-start
strategy: the paper's setting is exactly the first batch.
"""

from __future__ import annotations

import numpy as np

from crc_jax.acquisition import distances, kmeans
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import register


def typicality(feats: np.ndarray, knn: int) -> np.ndarray:
    """1 / (mean squared distance to the knn nearest other rows + 1e-5), (n,)."""
    if len(feats) == 1 or knn < 1:
        return np.ones(len(feats))
    k = min(knn, len(feats) - 1)
    nearest = distances.k_smallest_sq_distances(feats, k).astype(np.float64)
    return 1.0 / (nearest.mean(axis=1) + 1e-5)


def cluster_order(labels: np.ndarray, is_labeled: np.ndarray, k: int,
                  min_cluster_size: int) -> np.ndarray:
    """Cluster ids by (labeled count asc, size desc, id), without clusters of <= min size
    (all clusters kept when that would drop every one)."""
    sizes = np.bincount(labels, minlength=k)
    existing = np.bincount(labels[is_labeled], minlength=k)
    ids = np.arange(k)
    keep = ids[sizes > min_cluster_size]
    if len(keep) == 0:
        keep = ids[sizes > 0]
    order = np.lexsort((keep, -sizes[keep], existing[keep]))
    return keep[order]


def select(feats: np.ndarray, labels: np.ndarray, is_labeled: np.ndarray, budget: int, *,
           knn: int, min_cluster_size: int) -> np.ndarray:
    """Positions of `budget` TypiClust picks, given cluster labels of every position."""
    k = int(labels.max()) + 1
    order = cluster_order(labels, is_labeled, k, min_cluster_size)
    available = ~is_labeled
    picks: list[int] = []
    i = 0
    while len(picks) < budget:
        cluster = order[i % len(order)]
        i += 1
        members = np.flatnonzero((labels == cluster) & available)
        if len(members) == 0:
            if not np.any(available[np.isin(labels, order)]):  # every kept cluster exhausted
                order = np.unique(labels[available])
                i = 0
            continue
        scores = typicality(feats[members], min(knn, len(members) // 2))
        pick = members[int(np.argmax(scores))]
        picks.append(pick)
        available[pick] = False
    return np.asarray(picks, np.int64)


@register("typiclust", cold_start=True)
def make_typiclust(knn: int = 20, min_cluster_size: int = 5, max_clusters: int = 500,
                   max_iter: int = 100):
    if knn < 1 or min_cluster_size < 0 or max_clusters < 1:
        raise ValueError("typiclust needs knn >= 1, min_cluster_size >= 0, max_clusters >= 1")

    def typiclust(ctx: Context, budget: int, key) -> np.ndarray:
        check_budget(ctx, budget)
        indices = np.sort(np.concatenate([np.asarray(ctx.labeled), np.asarray(ctx.unlabeled)]))
        is_labeled = np.isin(indices, ctx.labeled)
        feats = distances.context_features(ctx, indices)
        k = min(len(ctx.labeled) + budget, max_clusters, len(indices))
        _, labels = kmeans.kmeans(feats, k, key, max_iter=max_iter)
        ctx.record["typiclust_clusters"] = int(k)
        return indices[select(feats, labels, is_labeled, budget, knn=knn,
                              min_cluster_size=min_cluster_size)]

    return typiclust
