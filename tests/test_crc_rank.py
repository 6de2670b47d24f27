"""CRC's rank rule against a float64 brute force that shares no code with crc_jax.

The rule (docs/design.md "CRC, exactly"): every candidate group g gets the numerical rank
ρ_g of K̃(L ∪ g); the groups are scored at r = min(|L ∪ g|, max_g ρ_g), s(g) = the r-th
largest eigenvalue where ρ_g = r, else 0. The reference builds every group's kernel
explicitly in float64 (features or jax.jacrev Jacobians recomputed in float64), takes a
full eigvalsh per group and counts ranks with a tolerance far from every eigenvalue of
the test data (asserted), so it does not depend on crc_jax's exact tolerance.

Cases: |L| + G ≤ ρ; |L| + G > ρ; a rank-deficient labeled set (the labeled features span
fewer directions than the pool's, and no group reaches the pool's rank: under a fixed
index r = min(|L| + G, ρ_pool) every score was 0 and the pick float noise); a repeated
pool (Proposition 2). Host, float64 device and float32 prefilter backends agree.
"""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crc_jax.acquisition import Context, from_spec
from crc_jax.acquisition.crc import crc as crc_lib
from crc_jax.acquisition.crc import gram as gram_lib

C = 3
BACKENDS = ("host", "device", "device_f32")
REF_RTOL = 1e-9          # the reference's rank tolerance: no test eigenvalue lies near it
GAP = 1e-4               # ... asserted: eigenvalues are below REF_RTOL·GAP or above REF_RTOL/GAP


class Linear(nn.Module):
    """logits = x W + b: the pool images are the penultimate features, and the trace NTK
    over all parameters is the last layer's, C·(xxᵀ + 1), whose rank is at most D + 1."""

    @nn.compact
    def __call__(self, x, return_features=False):
        logits = nn.Dense(C, name="head")(x)
        return (logits, x) if return_features else logits


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, return_features=False):
        h = nn.tanh(nn.Dense(8)(x))
        logits = nn.Dense(C, name="head")(h)
        return (logits, h) if return_features else logits


def make_ctx(model, x, labeled):
    labeled = np.asarray(labeled, np.int64)
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    return Context(apply_fn=model.apply, variables=variables, x=x, labeled=labeled,
                   unlabeled=np.setdiff1d(np.arange(len(x)), labeled), num_classes=C,
                   features_fn=lambda v, xx: model.apply(v, xx, return_features=True)[1],
                   batch_size=32)


# ------------------------------------------------------------------ the float64 reference

def kernel64(ctx, subset):
    """K̃ over the whole pool in float64, from the parameters alone."""
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), ctx.variables)
        x64 = jnp.asarray(ctx.x, jnp.float64)
        if subset == "last":
            phi = np.asarray(ctx.features_fn(v64, x64))
            z = np.concatenate([phi, np.ones((len(phi), 1))], axis=1)
            return C * z @ z.T
        jac = jax.jacrev(lambda p: ctx.apply_fn({"params": p}, x64))(v64["params"])
        flat = np.concatenate([np.asarray(j).reshape(len(ctx.x), C, -1)
                               for j in jax.tree_util.tree_leaves(jac)], axis=2)
        return np.einsum("icp,jcp->ij", flat, flat)


def reference(ctx, groups, subset, base=None):
    """(scores, ranks, r) by the rule, one full eigvalsh per group."""
    kern = kernel64(ctx, subset)
    base = ctx.labeled if base is None else base
    ranks, spectra = [], []
    for g in groups:
        s = np.concatenate([base, g]).astype(int)
        ev = np.linalg.eigvalsh(kern[np.ix_(s, s)])[::-1]          # descending
        rel = ev / ev[0]
        assert not np.any((rel > REF_RTOL * GAP) & (rel < REF_RTOL / GAP)), rel  # well separated
        ranks.append(int(np.sum(rel > REF_RTOL)))
        spectra.append(ev)
    ranks = np.array(ranks)
    r = int(ranks.max())
    scores = np.array([ev[r - 1] if rk == r else 0.0 for ev, rk in zip(spectra, ranks)])
    return scores, ranks, r


def grams(ctx, groups, subset):
    return {b: gram_lib.build(ctx, groups, subset=subset, backend=b) for b in BACKENDS}


def check_all_backends(ctx, groups, subset, k):
    """Every backend's scores, ranks, r and top k against the reference."""
    ref, ref_ranks, r = reference(ctx, groups, subset)
    want = np.argsort(-ref, kind="stable")[:k]
    for backend, gram in grams(ctx, groups, subset).items():
        rows, chosen, scores = gram.top(None, k)
        assert gram.rank_used == r, backend
        np.testing.assert_array_equal(rows, want, err_msg=backend)
        np.testing.assert_allclose(chosen, ref[want], rtol=1e-4, err_msg=backend)
        if backend != "device_f32":        # the prefilter keeps float32 scores off the top
            np.testing.assert_array_equal(gram.group_ranks, ref_ranks, err_msg=backend)
            np.testing.assert_allclose(scores, ref, rtol=1e-4, atol=0, err_msg=backend)
            np.testing.assert_array_equal(scores == 0, ref == 0, err_msg=backend)
        f32 = backend == "device_f32"      # float32 scores off the top: float32 noise
        np.testing.assert_allclose(gram.score(), gram.top(None, k)[2], rtol=1e-4 if f32 else 1e-12,
                                   atol=1e-5 * ref.max() if f32 else 0)
    return ref, ref_ranks, r


# ------------------------------------------------------------------ pools

def deficient_pool():
    """A pool whose labeled set is rank-deficient: 20 labeled points in a 9-dimensional
    subspace of R¹² (with the bias: rank 10), most unlabeled points in it too, and three
    points each with one more direction (e9, e10, e11): the pool's rank is 13."""
    rng = np.random.default_rng(0)
    x = np.zeros((60, 12), np.float32)
    x[:, :9] = rng.normal(size=(60, 9))
    x[40, 9], x[45, 10], x[50, 11] = 1.5, -1.2, 1.0
    return x, np.arange(20)


# ------------------------------------------------------------------ the four regimes

@pytest.mark.parametrize("subset", ["last", "all"])
def test_below_the_rank_scores_are_lambda_min(subset):
    """|L| + G = 8 ≤ ρ (9 for the last layer, more for all parameters): r = |L| + G."""
    x = np.random.default_rng(1).normal(size=(40, 8)).astype(np.float32)
    ctx = make_ctx(MLP(), x, np.arange(5))
    groups = crc_lib.random_groups(jax.random.PRNGKey(0), ctx.unlabeled, 3)
    ref, ranks, r = check_all_backends(ctx, groups, subset, 2)
    assert r == 8 and (ranks == 8).all() and ref.min() > 0


@pytest.mark.parametrize("subset", ["last", "all"])
def test_beyond_the_rank_scores_are_the_smallest_positive_eigenvalue(subset):
    """|L| + G = 24 > ρ = 13 (Linear: all parameters are the last layer, so the Jacobian
    route meets the rank too): r = 13, every group's smallest positive eigenvalue."""
    x = np.random.default_rng(2).normal(size=(60, 12)).astype(np.float32)
    ctx = make_ctx(Linear(), x, np.arange(20))
    groups = crc_lib.random_groups(jax.random.PRNGKey(1), ctx.unlabeled, 4)
    ref, ranks, r = check_all_backends(ctx, groups, subset, 3)
    assert r == 13 and (ranks == 13).all() and ref.min() > 0


@pytest.mark.parametrize("subset", ["last", "all"])
def test_rank_deficient_labeled_set_scores_what_groups_can_reach(subset):
    """Labeled rank 10, pool rank 13, no group holds two of the three new directions: the
    fixed index min(|L| + G, ρ_pool) = 13 is out of every group's reach. The groups that
    add a direction reach 11 and score their 11th eigenvalue; the others score 0."""
    x, labeled = deficient_pool()
    ctx = make_ctx(Linear(), x, labeled)
    groups = np.array([[21, 22, 23, 24], [40, 25, 26, 27], [28, 45, 29, 30],
                       [31, 32, 33, 34], [35, 36, 37, 50], [38, 39, 41, 42]])
    assert gram_lib.build(ctx, groups).rank == 13
    ref, ranks, r = check_all_backends(ctx, groups, subset, 2)
    assert r == 11 and ranks.tolist() == [10, 11, 11, 10, 11, 10]
    assert (ref[[1, 2, 4]] > 1e-2).all() and (ref[[0, 3, 5]] == 0).all()


@pytest.mark.parametrize("subset", ["last", "all"])
def test_repeated_pool_duplicates_score_exactly_zero(subset):
    """Every image twice (i and i + 30): a group that repeats an image, or a labeled one,
    falls one short of the full rank the clean groups reach and scores 0 (Proposition 2)."""
    base = np.random.default_rng(5).normal(size=(30, 8)).astype(np.float32)
    ctx = make_ctx(MLP(), np.concatenate([base, base]), np.arange(3))
    groups = np.array([[10, 11, 12, 13], [10, 11, 12, 40], [10, 11, 12, 31], [14, 15, 16, 17],
                       [44, 45, 46, 47]])
    ref, ranks, r = check_all_backends(ctx, groups, subset, 2)
    assert r == 7 and ranks.tolist() == [7, 6, 6, 7, 7]
    assert (ref[[1, 2]] == 0).all() and (ref[[0, 3, 4]] > 0).all()


# ------------------------------------------------------------------ strategies and journal

@pytest.mark.parametrize("backend", BACKENDS)
def test_strategy_records_r_and_every_groups_rank(backend):
    """Through the strategy on a random partition of the rank-deficient pool: the record's
    scores, ranks, r and rank counts equal the reference's, on every backend."""
    x, labeled = deficient_pool()
    ctx = make_ctx(Linear(), x, labeled)
    key = jax.random.PRNGKey(3)
    groups = crc_lib.random_groups(key, ctx.unlabeled, 5)
    ref, ranks, r = reference(ctx, groups, "last")
    assert r < 13 and (ranks < r).any()         # the pool's rank is out of reach; some fall short
    picked = from_spec(f"crc:group_size=5,backend={backend}")(ctx, 10, key)
    rec = json.loads(json.dumps(ctx.record))["crc"]
    want = np.argsort(-ref, kind="stable")[:2]
    np.testing.assert_array_equal(picked, groups[want].ravel())
    assert rec["diagnostics"]["rank_used"] == r
    np.testing.assert_allclose(rec["chosen_scores"], ref[want], rtol=1e-6)
    if backend != "device_f32":
        assert rec["all_ranks"] == ranks.tolist()
        assert rec["diagnostics"]["rank_counts"] == {
            str(v): int(c) for v, c in zip(*np.unique(ranks, return_counts=True))}
        np.testing.assert_allclose(rec["all_scores"], ref, rtol=1e-6)


def test_greedy_follows_the_rank_each_round():
    """Greedy CRC on the rank-deficient pool: each pick is the reference's best single
    candidate against L ∪ picked, r rising as the picks add directions."""
    x, labeled = deficient_pool()
    ctx = make_ctx(Linear(), x, labeled)
    picked = from_spec("crc_greedy")(ctx, 3, jax.random.PRNGKey(0))
    rounds = ctx.record["crc_greedy"]["diagnostics"]["rounds"]
    base = list(labeled)
    for p, rnd in zip(picked, rounds):
        cand = np.setdiff1d(ctx.unlabeled, base)
        ref, _, r = reference(ctx, cand[:, None], "last", base=np.array(base))
        assert p == cand[np.argmax(ref)] and rnd["rank_used"] == r
        base.append(p)
    assert sorted(picked.tolist()) == [40, 45, 50]
    assert [rnd["rank_used"] for rnd in rounds] == [11, 12, 13]


def test_sequential_rounds_record_their_rank():
    x, labeled = deficient_pool()
    ctx = make_ctx(Linear(), x, labeled)
    groups = np.array([[21, 22, 23, 24], [40, 25, 26, 27], [28, 45, 29, 30], [31, 32, 33, 34]])
    gram = gram_lib.build(ctx, groups)
    rows, _, _, diag = crc_lib.choose(gram, 2, sequential=True, desc="test")
    assert rows == [1, 2] and [d["rank_used"] for d in diag["rounds"]] == [11, 12]
    assert diag["rank_used"] == 11 and diag["rank_counts"] == {"10": 2, "11": 2}
    assert gram.group_ranks.tolist() == [10, 11, 11, 10]       # the first round's
