"""CRC (Algorithm 1): scores against brute-force eigvalsh, Proposition 2, rank-aware λ⁺min."""

import json

import jax
import numpy as np
import pytest

from conftest import TinyCNN  # the shared tiny model (tests/conftest.py)
from crc_jax import ntk
from crc_jax.acquisition import Context, from_spec
from crc_jax.acquisition.crc import crc as crc_lib


def get(spec, **options):
    """The strategy of `spec`, with `options` as its defaults (the spec's own win)."""
    return from_spec(spec, options)

C = 4
WIDTH = 16          # d; the last-layer kernel has rank d + 1 = 17


MODEL = TinyCNN(num_classes=C, width=WIDTH, conv_features=3)


def apply_fn(variables, x):
    return MODEL.apply(variables, x)


def features_fn(variables, x):
    return MODEL.apply(variables, x, return_features=True)[1]


@pytest.fixture(scope="module")
def variables():
    v = MODEL.init(jax.random.PRNGKey(0), np.zeros((1, 5, 5, 2), np.float32))
    return {"params": v["params"],
            "batch_stats": jax.tree_util.tree_map(lambda s: s + 0.2, v["batch_stats"])}


def images(n, seed=1):
    return np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, 5, 5, 2)))


def make_ctx(variables, x, labeled, *, features=True, labels=None):
    labeled = np.asarray(labeled)
    unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
    return Context(apply_fn=apply_fn, variables=variables, x=x, labeled=labeled, unlabeled=unlabeled,
                   num_classes=C, features_fn=features_fn if features else None, batch_size=32,
                   oracle=None if labels is None else (lambda idx: labels[idx]))


def brute_force(variables, x, labeled, groups, subset):
    """eigvalsh of the explicit (|L|+G)² trace NTK, r-th largest, r = min(n, ρ)."""
    def f(p, xx):
        return apply_fn({**variables, "params": p}, xx)
    phi = np.asarray(features_fn(variables, x), np.float64)
    rho = ntk.feature_rank(phi) if subset == "last" else np.inf
    out = []
    for g in groups:
        s = np.concatenate([labeled, g]).astype(int)
        if subset == "last":     # the definition: C·(ΦΦᵀ + 1), in float64
            k = C * (phi[s] @ phi[s].T + 1.0)
        else:
            k = np.asarray(ntk.empirical_ntk(f, variables["params"], x[s], subset="all"), np.float64)
        ev = np.linalg.eigvalsh(k)
        out.append(ev[len(s) - int(min(len(s), rho))])
    return np.array(out)


@pytest.mark.parametrize("n_labeled,group_size", [(5, 4), (20, 5)])   # |L|+G = 9 < d+1, 25 > d+1
@pytest.mark.parametrize("subset,features", [("last", True), ("last", False), ("all", False)])
def test_scores_equal_brute_force(variables, n_labeled, group_size, subset, features):
    x = images(60)
    labeled = np.arange(n_labeled)
    ctx = make_ctx(variables, x, labeled, features=features)
    rng = np.random.default_rng(n_labeled)
    groups = np.stack([rng.choice(ctx.unlabeled, group_size, replace=False) for _ in range(5)])
    scores = crc_lib.score_groups(ctx, groups, subset=subset)
    ref = brute_force(variables, x, labeled, groups, subset)
    assert ref.min() > 1e-3 * ref.max() > 0        # well-posed: no degenerate group
    np.testing.assert_allclose(scores, ref, rtol=1e-4)
    # the strategy's own scorer is the same function
    np.testing.assert_allclose(get("crc", group_size=group_size, subset=subset).fn.score_groups(ctx, groups),
                               scores, rtol=1e-12)


def tripled_pool(n_distinct=40, seed=2):
    """Every image three times; copies of image i sit at i, i + n, i + 2n."""
    base = images(n_distinct, seed)
    return np.concatenate([base, base, base]), n_distinct


def image_ids(indices, n_distinct):
    return np.asarray(indices) % n_distinct


@pytest.mark.parametrize("subset", ["last", "all"])
def test_proposition_2_no_repeats(variables, subset):
    x, n = tripled_pool()
    labeled = np.arange(3)                           # images 0-2; their copies stay unlabeled
    ctx = make_ctx(variables, x, labeled)
    labeled_ids = set(image_ids(labeled, n))

    def repeat_free(idx, within_groups_of):
        for g in np.asarray(idx).reshape(-1, within_groups_of):
            ids = image_ids(g, n)
            if len(set(ids)) < len(ids) or labeled_ids & set(ids):
                return False
        return True

    for seed in range(3):
        key = jax.random.PRNGKey(seed)
        # |L| + G = 7 < 17: no chosen group holds two copies or a copy of a labeled image
        picked = get("crc", group_size=4, subset=subset)(ctx, 8, key)
        assert repeat_free(picked, 4)
        scores = np.asarray(ctx.record["crc"]["all_scores"])
        groups = crc_lib.random_groups(key, ctx.unlabeled, 4)
        degenerate = np.array([not repeat_free(g, 4) for g in groups])
        assert degenerate.any() and (~degenerate).any()
        assert scores[degenerate].max() < 1e-5 * scores.max() < scores[~degenerate].min()
        # G = budget: the whole batch is repeat-free (the search space holds clean groups)
        assert any(repeat_free(g, 8) for g in crc_lib.random_groups(key, ctx.unlabeled, 8))
        assert repeat_free(get("crc", group_size=8, subset=subset)(ctx, 8, key), 8)
        # sequential: groups picked one at a time, rescored against L ∪ picked
        seq = get("crc", group_size=4, subset=subset, sequential=True)(ctx, 12, key)
        assert repeat_free(seq, 12)
        assert ctx.record["crc"]["sequential"] is True
    # the myopic baseline picks all copies of its favourite image
    ent = get("entropy")(ctx, 8, jax.random.PRNGKey(0))
    assert not repeat_free(ent, 8)


def test_sequential_first_group_is_algorithm_1_top_group(variables):
    x = images(60)
    ctx = make_ctx(variables, x, np.arange(6))
    key = jax.random.PRNGKey(5)
    one = get("crc", group_size=3)(ctx, 9, key)
    top_score = max(ctx.record["crc"]["all_scores"])
    seq = get("crc", group_size=3, sequential=True)(ctx, 9, key)
    np.testing.assert_array_equal(seq[:3], one[:3])
    assert ctx.record["crc"]["chosen_scores"][0] == pytest.approx(top_score, rel=1e-12)
    assert len(set(seq)) == 9 and set(seq) <= set(ctx.unlabeled)


def test_repeated_image_scores_zero_below_rank(variables):
    x = images(40)
    labeled = np.arange(6)
    ctx = make_ctx(variables, x, labeled)
    groups = np.array([[10, 11, 12, 13], [10, 11, 12, 10], [10, 11, 12, 3]])   # clean, repeat, labeled
    # features: exact zeros up to float64 rounding; Jacobians: float32 kernel noise
    for features, tol in ((True, 1e-10), (False, 1e-5)):
        s = crc_lib.score_groups(make_ctx(variables, x, labeled, features=features), groups)
        assert s[0] > 1e-2
        assert abs(s[1]) < tol * s[0] and abs(s[2]) < tol * s[0]
    s = crc_lib.score_groups(ctx, groups, subset="all")
    assert abs(s[1]) < 1e-5 * s[0] and abs(s[2]) < 1e-5 * s[0]


def test_above_rank_score_is_smallest_positive_gram_eigenvalue(variables):
    x = images(60)
    labeled = np.arange(20)                       # |L| + G = 24 > d + 1 = 17
    ctx = make_ctx(variables, x, labeled)
    groups = np.array([[30, 31, 32, 33], [40, 41, 42, 40]])  # the repeat no longer matters
    s = crc_lib.score_groups(ctx, groups)
    phi = np.asarray(features_fn(variables, x), np.float64)
    for g, score in zip(groups, s):
        z = np.concatenate([phi[np.concatenate([labeled, g])], np.ones((24, 1))], axis=1)
        ev = np.linalg.eigvalsh(C * z.T @ z)                     # (d+1)² feature Gram
        # phi is float32, recomputed here in another batch shape than the strategy's, so its
        # last bits may differ; Weyl: |Δλ| <= ‖ΔG‖ <= ~2·ε₃₂·‖G‖
        assert abs(score - ev[ev > 1e-9 * ev[-1]].min()) <= 4 * np.finfo(np.float32).eps * ev[-1]
        assert score > 1e-3


def test_dead_feature_columns_do_not_zero_every_score(variables):
    dead = [0, 5, 9]
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    dense = dict(params["Dense_0"])
    dense["kernel"] = dense["kernel"].at[:, dead].set(0.0)
    dense["bias"] = dense["bias"].at[np.array(dead)].set(0.0)
    v = {"params": {**params, "Dense_0": dense}, "batch_stats": variables["batch_stats"]}
    x = images(60)
    labeled = np.arange(20)
    ctx = make_ctx(v, x, labeled)
    phi = np.asarray(features_fn(v, x))
    assert np.all(phi[:, dead] == 0)
    groups = np.array([[30, 31, 32, 33], [40, 41, 42, 43], [50, 51, 52, 53]])
    s = crc_lib.score_groups(ctx, groups)
    assert s.min() > 1e-3
    for g in groups:      # the plain λmin of the (d+1)² Gram is 0: three directions are dead
        z = np.concatenate([phi[np.concatenate([labeled, g])], np.ones((24, 1))], axis=1)
        ev = np.linalg.eigvalsh(C * z.T.astype(np.float64) @ z)
        assert abs(ev[0]) < 1e-12 * ev[-1] and ev[len(dead)] > 1e-3
    np.testing.assert_allclose(s, brute_force(v, x, labeled, groups, "last"), rtol=1e-6)
    # the Jacobian path gets the same rank from the head's input
    s_jac = crc_lib.score_groups(make_ctx(v, x, labeled, features=False), groups)
    np.testing.assert_allclose(s_jac, s, rtol=1e-4)


def test_class_balanced_groups(variables):
    x = images(60)
    labels = np.arange(60) % C
    ctx = make_ctx(variables, x, np.arange(4), labels=labels)
    picked = get("crc", group_size=8, class_balanced=True)(ctx, 8, jax.random.PRNGKey(0))
    assert np.bincount(labels[picked], minlength=C).tolist() == [2] * C
    assert len(set(picked)) == 8 and set(picked) <= set(ctx.unlabeled)
    # every candidate group was balanced: 56 unlabeled, 14 per class -> 7 groups
    assert ctx.record["crc"]["n_groups"] == 7
    # a class-balanced group smaller than the budget is refused where the budget is checked
    with pytest.raises(ValueError, match="class-balanced group is the whole budget"):
        get("crc", group_size=4, class_balanced=True).check_budget(8)
    with pytest.raises(ValueError, match="oracle"):
        get("crc", class_balanced=True)(make_ctx(variables, x, np.arange(4)), 8, jax.random.PRNGKey(0))


def test_max_groups_and_record(variables):
    x = images(60)
    ctx = make_ctx(variables, x, np.arange(4))
    picked = get("crc:max_groups=5", group_size=2)(ctx, 4, jax.random.PRNGKey(1))
    rec = json.loads(json.dumps(ctx.record))["crc"]
    assert rec["n_groups"] == 5 and len(rec["all_scores"]) == 5 and len(rec["score_quantiles"]) == 101
    assert sorted(rec["all_scores"], reverse=True)[:2] == pytest.approx(rec["chosen_scores"])
    groups = crc_lib.random_groups(jax.random.PRNGKey(1), ctx.unlabeled, 2, 5)
    assert {tuple(g) for g in picked.reshape(-1, 2)} <= {tuple(g) for g in groups}
    with pytest.raises(ValueError, match="max_groups"):
        get("crc", group_size=2, max_groups=1)(ctx, 4, jax.random.PRNGKey(1))


def test_greedy_adds_the_best_single_candidate(variables):
    x = images(30)
    labeled = np.arange(3)
    ctx = make_ctx(variables, x, labeled)
    picked = get("crc_greedy")(ctx, 3, jax.random.PRNGKey(0))
    assert len(set(picked)) == 3 and set(picked) <= set(ctx.unlabeled)
    base = list(labeled)
    for p in picked:                    # each pick maximizes λ⁺min(L ∪ picked ∪ {x})
        cand = np.setdiff1d(ctx.unlabeled, base)
        s = brute_force(variables, x, np.array(base), cand[:, None], "last")
        assert p == cand[np.argmax(s)]
        base.append(p)
    assert len(ctx.record["crc_greedy"]["chosen_scores"]) == 3
