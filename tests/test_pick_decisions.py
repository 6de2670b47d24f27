"""How decisive a top-k pick was: the decision record of entropy, confidence and margin.

Each writes {chosen, runner_up, gap, resolution, tie} under record[name]["decision"]
(crc_jax.acquisition.baseline), checked here against the scores recomputed in float64
from the same probabilities, and the float32 bound against perturbed probabilities.
"""

import jax
import numpy as np
import pytest

from crc_jax import acquisition
from crc_jax.acquisition import Context, from_spec
from crc_jax.acquisition import baseline

C = 4
EPS = float(np.finfo(np.float32).eps)


def make_ctx(feats, labeled=(0,)):
    """A Context whose images are the features, scored by a linear head (logits = x)."""
    feats = np.asarray(feats, np.float32)
    labeled = np.asarray(labeled, np.int64)
    return Context(apply_fn=lambda v, x: x @ v["params"]["w"],
                   variables={"params": {"w": np.eye(C, dtype=np.float32)}}, x=feats,
                   labeled=labeled, unlabeled=np.setdiff1d(np.arange(len(feats)), labeled),
                   num_classes=C, features_fn=lambda v, x: x, batch_size=7)


def probs(ctx) -> np.ndarray:
    return np.asarray(baseline.predict_probs(ctx, ctx.unlabeled), np.float64)


SCORES = {  # name: (score, its bound / eps) from probabilities, in float64
    "entropy": (lambda p: -(p * np.log(p)).sum(-1), lambda p: (p * np.abs(1 + np.log(p))).sum(-1)),
    "confidence": (lambda p: -p.max(-1), lambda p: p.max(-1)),
    "margin": (lambda p: -(np.sort(p)[:, -1] - np.sort(p)[:, -2]),
               lambda p: np.sort(p)[:, -1] + np.sort(p)[:, -2]),
}


@pytest.mark.parametrize("name", list(SCORES))
def test_the_decision_names_the_cut_and_the_runner_up(name):
    rng = np.random.default_rng(3)
    ctx = make_ctx(rng.normal(scale=2.0, size=(40, C)))
    picked = acquisition.select(from_spec(name), ctx, 5, jax.random.PRNGKey(0))
    record = ctx.record[name]["decision"]
    score, bound = SCORES[name]
    p = probs(ctx)
    s = score(p)
    order = np.argsort(-s, kind="stable")
    assert set(picked) == set(ctx.unlabeled[order[:5]])
    cut, runner = order[4], order[5]
    np.testing.assert_allclose([record["chosen"], record["runner_up"]], [s[cut], s[runner]],
                               rtol=1e-5)
    np.testing.assert_allclose(record["gap"], (s[cut] - s[runner]) / abs(s[cut]), rtol=1e-3,
                               atol=1e-6)
    np.testing.assert_allclose(record["resolution"],
                               EPS * (bound(p)[cut] + bound(p)[runner]) / abs(s[cut]), rtol=1e-4)
    assert record["tie"] is False                         # random scores: far apart


@pytest.mark.parametrize("name", list(SCORES))
def test_identical_images_across_the_cut_are_a_tie(name):
    rng = np.random.default_rng(4)
    feats = rng.normal(size=(12, C)).astype(np.float32)
    ctx0 = make_ctx(feats)
    s = SCORES[name][0](probs(ctx0))
    third = int(ctx0.unlabeled[np.argsort(-s, kind="stable")[2]])
    feats = np.concatenate([feats, feats[third:third + 1]])    # its twin, last in the pool
    ctx = make_ctx(feats)
    picked = acquisition.select(from_spec(name), ctx, 3, jax.random.PRNGKey(0))
    record = ctx.record[name]["decision"]
    assert record["tie"] is True and record["chosen"] == record["runner_up"]
    assert third in picked and len(feats) - 1 not in picked      # the lower index wins


def test_tie_is_the_margin_within_the_two_bounds():
    order = np.array([0, 1, 2])
    scores = np.array([2.0, 1.0 + 3e-7, 1.0])
    assert baseline.decision(order, scores, np.full(3, 2e-7), 2)["tie"] is True    # 3e-7 ≤ 4e-7
    assert baseline.decision(order, scores, np.full(3, 1e-7), 2)["tie"] is False   # 3e-7 > 2e-7
    every = baseline.decision(order, scores, np.zeros(3), 3)
    assert every == {"chosen": 1.0, "runner_up": None, "gap": None, "resolution": None,
                     "tie": False}


@pytest.mark.parametrize("name", list(SCORES))
def test_the_bound_holds_for_probabilities_rounded_within_float32(name):
    """Moving every probability by a relative ε₃₂ (any signs) moves the score by at most
    the bound, to first order (checked in float64 with the worst signs and random ones)."""
    rng = np.random.default_rng(5)
    score, bound = SCORES[name]
    p = rng.dirichlet(np.ones(C) * 0.7, size=200)
    for _ in range(20):
        signs = rng.choice([-1.0, 1.0], size=p.shape)
        moved = np.abs(score(p * (1 + EPS * signs)) - score(p))
        assert (moved <= EPS * bound(p) * (1 + 1e-3) + 1e-15).all()
    if name == "entropy":        # the worst signs reach the bound
        signs = -np.sign(1 + np.log(p))
        moved = np.abs(score(p * (1 + EPS * signs)) - score(p))
        np.testing.assert_allclose(moved, EPS * bound(p), rtol=1e-3)
