"""Every strategy: budget distinct unlabeled indices, deterministic per key, clear errors;
uncertainty scores and EGL against direct computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import TinyCNN  # the shared tiny model (tests/conftest.py)
from crc_jax.acquisition import Context, from_spec, names, parse_spec
from crc_jax.acquisition.egl import expected_gradient_length


def get(spec, **options):
    """The strategy of `spec`, with `options` as its defaults (the spec's own win)."""
    return from_spec(spec, options)

C = 3


MODEL = TinyCNN(num_classes=C, width=8, conv_features=2)


def apply_fn(variables, x):
    return MODEL.apply(variables, x)


def features_fn(variables, x):
    return MODEL.apply(variables, x, return_features=True)[1]


@pytest.fixture(scope="module")
def ctx():
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (40, 4, 4, 2)))
    v = MODEL.init(jax.random.PRNGKey(0), x[:1])
    # a sharper head, so predictions (and uncertainty scores) differ between images
    params = {**v["params"], "head": jax.tree_util.tree_map(lambda a: 3 * a, v["params"]["head"])}
    v = {"params": params, "batch_stats": v["batch_stats"]}
    labeled = np.array([0, 7, 13, 21])
    return Context(apply_fn=apply_fn, variables=v, x=x, labeled=labeled,
                   unlabeled=np.setdiff1d(np.arange(40), labeled), num_classes=C,
                   features_fn=features_fn, batch_size=16, oracle=lambda idx: np.asarray(idx) % C,
                   stochastic_apply_fn=noisy_apply_fn)


def noisy_apply_fn(variables, x, key):
    """A stand-in for MC dropout (BALD): the logits plus key-dependent noise."""
    return apply_fn(variables, x) + jax.random.normal(key, (x.shape[0], C))


OPTIONS = {"crc": {"group_size": 2}, "crc_infinite": {"group_size": 2, "arch": "mlp"}}


@pytest.mark.parametrize("name", names())
def test_budget_distinct_unlabeled_deterministic(ctx, name):
    strategy = get(name, **OPTIONS.get(name, {}))
    key = jax.random.PRNGKey(3)
    picked = strategy(ctx, 6, key)
    assert isinstance(picked, np.ndarray) and picked.shape == (6,)
    assert len(set(picked.tolist())) == 6
    assert set(picked.tolist()) <= set(ctx.unlabeled.tolist())
    np.testing.assert_array_equal(strategy(ctx, 6, key), picked)
    with pytest.raises(ValueError, match="exceeds the 36 unlabeled"):
        strategy(ctx, 37, key)
    with pytest.raises(ValueError, match="budget must be positive"):
        strategy(ctx, 0, key)


def test_group_size_must_divide_budget(ctx):
    # refused where the strategy is built for its budget (crc_jax.config.validate)
    with pytest.raises(ValueError, match="group_size 4 must divide the budget"):
        get("crc", group_size=4).check_budget(6)
    with pytest.raises(ValueError, match="group_size"):
        get("crc", group_size=0)
    with pytest.raises(ValueError, match="subset"):
        get("crc", subset="first")


def test_random_depends_on_key(ctx):
    a = get("random")(ctx, 6, jax.random.PRNGKey(0))
    b = get("random")(ctx, 6, jax.random.PRNGKey(1))
    assert set(a.tolist()) != set(b.tolist())


def probs(ctx, idx):
    return np.asarray(jax.nn.softmax(apply_fn(ctx.variables, ctx.x[idx]), axis=-1), np.float64)


@pytest.mark.parametrize("name,score", [
    ("entropy", lambda p: -np.sum(p * np.log(p), axis=1)),
    ("confidence", lambda p: -p.max(axis=1)),
    ("margin", lambda p: -(np.sort(p, axis=1)[:, -1] - np.sort(p, axis=1)[:, -2])),
])
def test_uncertainty_strategies_take_the_top_scores(ctx, name, score):
    s = score(probs(ctx, ctx.unlabeled))
    assert len(np.unique(np.round(s, 6))) > 20       # the scores do discriminate
    picked = get(name)(ctx, 5, jax.random.PRNGKey(0))
    np.testing.assert_array_equal(np.sort(picked), np.sort(ctx.unlabeled[np.argsort(-s)[:5]]))


def test_egl_equals_expected_squared_gradient_norm(ctx):
    idx = ctx.unlabeled[:6]
    params, stats = ctx.variables["params"], {"batch_stats": ctx.variables["batch_stats"]}

    def loss(p, x, y):
        logits = apply_fn({"params": p, **stats}, x[None])[0]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)

    sq_norm = jax.jit(lambda p, x, y: sum(jnp.sum(g ** 2) for g in jax.tree_util.tree_leaves(
        jax.grad(loss)(p, x, y))))
    ref = []
    for i, p in zip(idx, probs(ctx, idx)):
        norms = [float(sq_norm(params, ctx.x[i], y)) for y in range(C)]
        ref.append(float(np.dot(p, norms)))
    np.testing.assert_allclose(expected_gradient_length(ctx, idx), ref, rtol=1e-4)
    # last layer only is a different (smaller) quantity
    last = expected_gradient_length(ctx, idx, subset="last")
    assert np.all(last < np.array(ref))


def test_specs_and_options(ctx):
    assert parse_spec("crc:subset=all,group_size=3,sequential=True") == (
        "crc", {"subset": "all", "group_size": 3, "sequential": True})
    a = get("crc:subset=all", group_size=3)(ctx, 6, jax.random.PRNGKey(0))
    assert ctx.record["crc"]["subset"] == "all" and ctx.record["crc"]["group_size"] == 3
    assert len(set(a.tolist())) == 6
    for spec in ("crc", "crc:max_groups=4", "crc:sequential=True", "crc:class_balanced=True"):
        get(spec, group_size=6)(ctx, 6, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="unknown strategy"):
        get("no_such_strategy")


def test_crc_without_features_fn_matches_fast_path(ctx):
    import dataclasses
    key = jax.random.PRNGKey(2)
    fast = get("crc", group_size=2)(ctx, 6, key)
    scores = ctx.record["crc"]["all_scores"]
    slow_ctx = dataclasses.replace(ctx, features_fn=None, record={})
    np.testing.assert_array_equal(get("crc", group_size=2)(slow_ctx, 6, key), fast)
    np.testing.assert_allclose(slow_ctx.record["crc"]["all_scores"], scores, rtol=1e-3)
