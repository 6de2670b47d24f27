"""BADGE, core-set, TypiClust, ProbCover, BALD and k-means against brute-force versions
written here from the papers' definitions, with full pool-by-pool distance matrices in
float64 NumPy (which the implementations never form)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from crc_jax.acquisition import Context, badge, from_spec, kmeans, probcover, typiclust
from crc_jax.acquisition import distances


def get(spec, **options):
    """The strategy of `spec`, with `options` as its defaults (the spec's own win)."""
    return from_spec(spec, options)

C = 4


def sq_dists(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def make_ctx(feats, labeled, head=None, **kw):
    """A Context whose "images" are the features themselves, with a linear head."""
    feats = np.asarray(feats, np.float32)
    head = np.eye(feats.shape[1], C, dtype=np.float32) * 3 if head is None else head
    labeled = np.asarray(labeled, np.int64)
    return Context(apply_fn=lambda v, x: x @ v["params"]["w"], variables={"params": {"w": head}},
                   x=feats, labeled=labeled,
                   unlabeled=np.setdiff1d(np.arange(len(feats)), labeled), num_classes=C,
                   features_fn=lambda v, x: x, batch_size=7, **kw)


def blobs(n, d, centers, seed):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(centers, d))
    return (means[rng.integers(0, centers, n)] + rng.normal(size=(n, d))).astype(np.float32)


# ---------------------------------------------------------------- chunked distances

def test_chunked_distance_helpers_equal_dense_ones(np_rng):
    p, c = np_rng.normal(size=(37, 5)), np_rng.normal(size=(11, 5))
    np.testing.assert_allclose(distances.min_sq_distances(p, c, chunk=8),
                               sq_dists(p, c).min(1), rtol=1e-4, atol=1e-4)
    d = sq_dists(p, p)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(distances.k_smallest_sq_distances(p, 3, chunk=8),
                               np.sort(d, axis=1)[:, :3], rtol=1e-4, atol=1e-4)
    assert np.isinf(distances.min_sq_distances(p, np.zeros((0, 5)))).all()


# ---------------------------------------------------------------- core-set

def brute_coreset(feats, labeled, budget):
    d = sq_dists(feats, feats)
    unlabeled = np.setdiff1d(np.arange(len(feats)), labeled)
    centers = list(labeled)
    picks = []
    for _ in range(budget):
        best, best_d = None, -1.0
        for u in unlabeled:
            if u in picks:
                continue
            m = min((d[u, c] for c in centers), default=np.inf)
            if m > best_d:
                best, best_d = u, m
        picks.append(best)
        centers.append(best)
    return np.array(picks)


@pytest.mark.parametrize("labeled", [[3, 17, 40], []])
def test_coreset_is_greedy_k_center(np_rng, labeled):
    feats = np_rng.normal(size=(60, 6))
    ctx = make_ctx(feats, labeled)
    picked = get("coreset")(ctx, 8, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(picked, brute_coreset(feats, np.array(labeled, int), 8))


# ---------------------------------------------------------------- BADGE

def brute_badge_embeddings(ctx):
    feats = np.asarray(ctx.x, np.float64)
    logits = feats @ np.asarray(ctx.variables["params"]["w"], np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    onehot = np.eye(C)[p.argmax(1)]
    # the gradient of CE(softmax(W^T φ + b), ŷ) w.r.t. the kernel W, flattened
    return np.stack([np.outer(f, pi - oi).ravel() for f, pi, oi in zip(feats, p, onehot)])


def test_badge_embedding_distances_equal_explicit_gradients(np_rng):
    ctx = make_ctx(np_rng.normal(size=(30, 5)), [])
    g = brute_badge_embeddings(ctx)
    a = badge.gradient_factors(np.asarray(jax.nn.softmax(ctx.x @ ctx.variables["params"]["w"])))
    for i in (0, 7, 29):
        np.testing.assert_allclose(badge._sq_dist_to_pick(jnp.asarray(a), jnp.asarray(ctx.x), i),
                                   ((g - g[i]) ** 2).sum(1), rtol=1e-4, atol=1e-5)


def test_badge_selection_equals_brute_force_d2_sampling(np_rng):
    ctx = make_ctx(np_rng.normal(size=(50, 5)), [1, 2, 3, 4])
    key = jax.random.PRNGKey(5)
    picked = get("badge")(ctx, 6, key)
    g = brute_badge_embeddings(ctx)[ctx.unlabeled]
    picks = [int(np.argmax((g ** 2).sum(1)))]
    for t in range(1, 6):
        d2 = sq_dists(g, g[picks]).min(1)
        picks.append(int(jax.random.categorical(jax.random.fold_in(key, t), jnp.log(d2))))
    np.testing.assert_array_equal(picked, ctx.unlabeled[picks])


def test_badge_second_seed_follows_d2_distribution():
    # 5 points: the largest-norm one is the first seed; the second must be drawn with
    # probability D²/ΣD². Chi-square over 3000 keys (rejects a wrong law, e.g. uniform).
    a = np.array([[0.5, -0.5], [0.9, -0.9], [0.2, -0.2], [0.6, -0.6], [0.3, -0.3]], np.float32)
    phi = np.array([[1, 0], [2, 1], [0, 1], [1, 2], [3, 0]], np.float32)
    g = np.stack([np.outer(f, x).ravel() for f, x in zip(phi, a)]).astype(np.float64)
    first = int(np.argmax((g ** 2).sum(1)))
    d2 = ((g - g[first]) ** 2).sum(1)
    expected = d2 / d2.sum()
    n = 3000
    counts = np.zeros(5)
    for s in range(n):
        seeds = badge.kmeans_pp_seeds(a, phi, 2, jax.random.PRNGKey(s))
        assert seeds[0] == first
        counts[seeds[1]] += 1
    assert counts[first] == 0
    mask = expected > 0
    chi2 = (((counts - n * expected)[mask]) ** 2 / (n * expected[mask])).sum()
    assert chi2 < stats.chi2.ppf(0.999, mask.sum() - 1), (counts / n, expected)


# ---------------------------------------------------------------- k-means

def brute_lloyd(x, centers, iters=100):
    x = np.asarray(x, np.float64)
    centers = np.asarray(centers, np.float64).copy()
    labels = sq_dists(x, centers).argmin(1)
    for _ in range(iters):
        for k in range(len(centers)):
            if np.any(labels == k):
                centers[k] = x[labels == k].mean(0)
        new = sq_dists(x, centers).argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
    return centers, labels


def test_lloyd_equals_brute_force_from_the_same_start():
    x = blobs(200, 3, 5, seed=1)
    init = kmeans.kmeans_pp_init(x, 5, jax.random.PRNGKey(0))
    assert len(np.unique(init, axis=0)) == 5 and all(any((r == x).all(1)) for r in init)
    centers, labels = kmeans.lloyd(x, init)
    ref_centers, ref_labels = brute_lloyd(x, init)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_allclose(centers, ref_centers, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- TypiClust

def brute_typiclust(feats, labels, labeled, budget, knn=20, min_size=5):
    k = labels.max() + 1
    is_labeled = np.isin(np.arange(len(feats)), labeled)
    clusters = [c for c in range(k) if (labels == c).sum() > min_size]
    clusters.sort(key=lambda c: ((labels[is_labeled] == c).sum(), -(labels == c).sum(), c))
    taken = set(labeled)
    picks = []
    for i in range(budget):
        c = clusters[i % len(clusters)]
        members = [j for j in range(len(feats)) if labels[j] == c and j not in taken]
        d = sq_dists(feats[members], feats[members])
        np.fill_diagonal(d, np.inf)
        kk = min(knn, len(members) // 2)
        typ = 1.0 / (np.sort(d, axis=1)[:, :kk].mean(1) + 1e-5)
        picks.append(members[int(np.argmax(typ))])
        taken.add(picks[-1])
    return np.array(picks)


def test_typiclust_picks_typical_points_of_uncovered_large_clusters():
    feats = blobs(120, 4, 6, seed=2)
    labeled = np.array([0, 50, 51])
    ctx = make_ctx(feats, labeled)
    key = jax.random.PRNGKey(4)
    picked = get("typiclust", knn=6)(ctx, 9, key)
    # the same clustering (k-means is checked above), then the selection by brute force
    _, labels = kmeans.kmeans(feats, len(labeled) + 9, key)
    np.testing.assert_array_equal(picked, brute_typiclust(feats, labels, labeled, 9, knn=6))
    assert ctx.record["typiclust_clusters"] == 12


def test_typiclust_selection_wraps_around_clusters():
    # 3 kept clusters, budget 5: clusters are visited in order, twice for the first two
    feats = blobs(60, 2, 3, seed=3)
    labels = kmeans.lloyd(feats, feats[[0, 1, 2]])[1]
    labeled = np.array([int(np.flatnonzero(labels == labels[0])[0])])
    is_labeled = np.isin(np.arange(60), labeled)
    got = typiclust.select(feats, labels, is_labeled, 5, knn=4, min_cluster_size=5)
    np.testing.assert_array_equal(got, brute_typiclust(feats, labels, labeled, 5, knn=4))


# ---------------------------------------------------------------- ProbCover

def brute_probcover(feats, labeled, budget, delta):
    within = sq_dists(feats, feats) < delta ** 2          # the graph: x -> y iff ‖x−y‖ < δ
    covered = within[labeled].any(0) if len(labeled) else np.zeros(len(feats), bool)
    picks = []
    for _ in range(budget):
        degree = (within & ~covered[None, :]).sum(1)
        degree[labeled] = -1
        degree[picks] = -1
        best = int(np.argmax(degree))
        if degree[best] <= 0:
            break
        picks.append(best)
        covered |= within[best]
    return np.array(picks), covered.mean()


@pytest.mark.parametrize("delta", [0.4, 0.9])
def test_probcover_is_greedy_max_coverage(delta):
    feats = probcover.normalize(blobs(90, 3, 5, seed=5))
    labeled = np.array([4, 30])
    ctx = make_ctx(feats, labeled)
    picked = get("probcover", delta=delta)(ctx, 7, jax.random.PRNGKey(0))
    ref, coverage = brute_probcover(feats, labeled, 7, delta)
    np.testing.assert_array_equal(picked[:len(ref)], ref)
    if len(ref) == 7:
        assert ctx.record["probcover_coverage"] == pytest.approx(coverage)


def test_probcover_fills_randomly_once_all_is_covered():
    feats = probcover.normalize(blobs(40, 3, 2, seed=6))
    ctx = make_ctx(feats, [0])
    picked = get("probcover", delta=5.0)(ctx, 5, jax.random.PRNGKey(0))   # one ball covers all
    assert len(set(picked.tolist())) == 5 and 0 not in picked
    assert ctx.record["probcover_coverage"] == 1.0


def test_purity_delta_is_the_largest_pure_enough_radius():
    feats = probcover.normalize(blobs(70, 3, 3, seed=7))
    labels = kmeans.lloyd(feats, feats[[0, 1, 2]])[1]
    d = np.sqrt(sq_dists(feats, feats))

    def purity(delta):  # fraction of balls B_δ(x) holding only x's cluster
        return np.mean([np.all(labels[d[i] < delta] == labels[i]) for i in range(len(feats))])

    got = probcover.purity_delta(probcover.other_cluster_distance(feats, labels), 0.9)
    candidates = np.unique(d)
    best = max(c for c in candidates if purity(c) >= 0.9)
    assert got == pytest.approx(best, rel=1e-4, abs=1e-5)
    assert purity(got * (1 - 1e-6)) >= 0.9


# ---------------------------------------------------------------- BALD

def test_bald_is_mutual_information_of_mc_dropout_passes(np_rng):
    from crc_jax import models

    model = models.get("mlp", num_classes=C, width=16, dropout=0.5)
    x = np_rng.normal(size=(23, 6)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    ctx = Context(apply_fn=lambda v, xb: model.apply(v, xb), variables=variables, x=x,
                  labeled=np.arange(3), unlabeled=np.arange(3, 23), num_classes=C,
                  stochastic_apply_fn=lambda v, xb, k: model.apply(v, xb, rngs={"dropout": k}),
                  batch_size=8)
    key, samples = jax.random.PRNGKey(9), 5
    picked = get("bald", samples=samples)(ctx, 4, key)
    # the documented key scheme: pass t of the batch starting at position s uses
    # fold_in(fold_in(key, t), s); the score is H(mean p) − mean H(p), in float64 here
    scores = []
    for s in range(0, 20, 8):
        idx = ctx.unlabeled[s:s + 8]
        p = np.stack([np.asarray(jax.nn.softmax(model.apply(
            variables, x[idx], rngs={"dropout": jax.random.fold_in(jax.random.fold_in(key, t), s)})),
            np.float64) for t in range(samples)])
        h = lambda q: -(q * np.log(q)).sum(-1)  # noqa: E731
        scores.append(h(p.mean(0)) - h(p).mean(0))
    scores = np.concatenate(scores)
    assert scores.std() > 1e-3 and np.all(scores >= -1e-6)
    np.testing.assert_array_equal(np.sort(picked), np.sort(ctx.unlabeled[np.argsort(-scores)[:4]]))


def test_bald_needs_dropout(np_rng):
    ctx = make_ctx(np_rng.normal(size=(10, 4)), [0])
    with pytest.raises(ValueError, match="dropout"):
        get("bald")(ctx, 2, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="samples"):
        get("bald", samples=1)
