"""CRC's device backend (jitted batched eigvalsh) against the host float64 backend, on CPU.

The device path is forced with backend="device" (float64 under jax.enable_x64, as on a
GPU) and backend="device_f32" (the float32 prefilter a TPU runs, with float64 finalists
rescored on the host). Scores must equal the host's to 1e-6 relative, and the chosen
groups must be the same, on random features, on features of a model trained on digits,
and on a pool with repeated images (Proposition 2).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crc_jax import ntk
from crc_jax.acquisition import Context, from_spec
from crc_jax.acquisition.crc import device_spectra
from crc_jax.acquisition.crc import crc as crc_lib
from crc_jax.acquisition.crc import gram as gram_lib


def get(spec, **options):
    """The strategy of `spec`, with `options` as its defaults (the spec's own win)."""
    return from_spec(spec, options)

C = 5


class Linear(nn.Module):
    """logits = x W + b: the pool images are the features."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(C, name="head")(x)


class MLP(nn.Module):
    width: int = 12

    @nn.compact
    def __call__(self, x, return_features=False):
        h = nn.tanh(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
        logits = nn.Dense(C, name="head")(h)
        return (logits, h) if return_features else logits


def linear_ctx(x, labeled, *, features=True, batch_size=64):
    model = Linear()
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    return Context(apply_fn=model.apply, variables=variables, x=x, labeled=np.asarray(labeled),
                   unlabeled=np.setdiff1d(np.arange(len(x)), labeled), num_classes=C,
                   features_fn=(lambda v, xx: xx) if features else None, batch_size=batch_size)


def mlp_ctx(x, labeled, variables=None, *, features=True):
    model = MLP()
    variables = model.init(jax.random.PRNGKey(1), x[:1]) if variables is None else variables
    return Context(apply_fn=model.apply, variables=variables, x=x, labeled=np.asarray(labeled),
                   unlabeled=np.setdiff1d(np.arange(len(x)), labeled), num_classes=C,
                   features_fn=(lambda v, xx: model.apply(v, xx, return_features=True)[1])
                   if features else None, batch_size=64)


def random_groups(ctx, g, seed=0, n=None):
    return crc_lib.random_groups(jax.random.PRNGKey(seed), ctx.unlabeled, g, n)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of a few matrices, so the padded last chunk and several calls are exercised."""
    monkeypatch.setattr(device_spectra, "CHUNK_BYTES_MAX", 1 << 17)
    monkeypatch.setattr(device_spectra, "CHUNK_BYTES_UNKNOWN", 1 << 17)


# ---------------------------------------------------------------------- backend choice

def test_backend_names_and_auto_choice():
    assert device_spectra.resolve("auto", "cpu") == "host"
    assert device_spectra.resolve("auto", "gpu") == "device"
    assert device_spectra.resolve("auto", "tpu") == "device"
    assert device_spectra.resolve("device_f32", "cpu") == "device_f32"
    assert not device_spectra.supports_float64("tpu") and device_spectra.supports_float64("gpu")
    with pytest.raises(ValueError, match="crc backend must be one of"):
        get("crc:backend=gpu")
    with pytest.raises(ValueError, match="crc backend must be one of"):
        get("crc_greedy", backend="cuda")


def test_rows_per_chunk_is_bounded_and_a_power_of_two(small_chunks):
    per = device_spectra.rows_per_chunk(129, 10_000)
    assert per & (per - 1) == 0
    assert per * 129 * 129 * 8 * device_spectra.WORKSPACE_FACTOR <= 1 << 17 or per == 1
    assert device_spectra.rows_per_chunk(4, 3) == 4       # no larger than the rows need


# ---------------------------------------------------------------------- random features

@pytest.mark.parametrize("n_labeled,g", [(3, 4), (40, 5)])     # |L|+G = 7 < d+1 = 17; 45 > 17
def test_device_scores_equal_host_on_random_features(n_labeled, g, small_chunks):
    rng = np.random.default_rng(n_labeled)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    ctx = linear_ctx(x, np.arange(n_labeled))
    groups = random_groups(ctx, g)
    host = gram_lib.build(ctx, groups, backend="host")
    device = gram_lib.build(ctx, groups, backend="device")
    assert isinstance(device, gram_lib.FeatureGram) and device.describe() == {
        "backend": "device", "dtype": "float64"}
    assert device.rank == host.rank == 17
    h, d = host.score(), device.score()
    assert h.min() > 1e-3 * h.max() > 0
    np.testing.assert_allclose(d, h, rtol=1e-6)
    # brute force for a few groups: C·(ΦΦᵀ + 1) over L ∪ g, r-th largest eigenvalue
    phi = x.astype(np.float64)
    for row in (0, 7):
        s = np.concatenate([ctx.labeled, groups[row]])
        ev = np.linalg.eigvalsh(C * (phi[s] @ phi[s].T + 1.0))
        assert h[row] == pytest.approx(ev[len(s) - min(len(s), 17)], rel=1e-8)
    # the float32 prefilter chooses the same groups, and reports float64 scores for them
    for k in (1, 6):
        rows_h, s_h, _ = host.top(None, k)
        rows_f, s_f, _ = gram_lib.build(ctx, groups, backend="device_f32").top(None, k)
        np.testing.assert_array_equal(rows_f, rows_h)
        np.testing.assert_allclose(s_f, s_h, rtol=1e-12)


def test_finalists_keep_every_group_float32_error_could_promote():
    scores = jnp.array([10.0, 9.0, 8.999, 5.0, 8.5, 1.0, 0.5, 0.2, 0.1, 0.0])
    traces = jnp.full(10, 100.0)
    keep = device_spectra.finalists(scores, traces, 1e-3, k=1)   # error bound 0.1 each
    # cut 10 - 0.1: 9.0 + 0.1 and 8.999 + 0.1 do not reach it; the top 4·1 are kept anyway
    np.testing.assert_array_equal(np.asarray(keep), [1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    keep = device_spectra.finalists(scores, traces, 1e-2, k=1)   # error bound 1
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(keep)), [0, 1, 2, 4])
    keep = device_spectra.finalists(scores, traces, 3.5e-2, k=1)  # bound 3.5: 5.0 + 3.5 >= 10 - 3.5
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(keep)), [0, 1, 2, 3, 4])
    keep = device_spectra.finalists(scores, traces, 1e-3, k=3)   # cut 8.999, the top 12 kept
    assert bool(np.all(np.asarray(keep)))


# ---------------------------------------------------------------------- a hand-built Context

def test_hand_built_context_takes_the_feature_route():
    x = np.random.default_rng(3).normal(size=(120, 6)).astype(np.float32)
    labeled = np.arange(8)
    groups = random_groups(mlp_ctx(x, labeled), 4)
    with_fn = gram_lib.build(mlp_ctx(x, labeled), groups)
    without = gram_lib.build(mlp_ctx(x, labeled, features=False), groups)
    assert isinstance(without, gram_lib.FeatureGram)
    assert without.rank == with_fn.rank == 13
    np.testing.assert_allclose(without.score(), with_fn.score(), rtol=1e-5)
    # and the per-sample Jacobian route (the definition) agrees, up to its float32 kernel
    # noise: about n·ε₃₂·max K̃ absolute
    jac = gram_lib.JacobianGram(mlp_ctx(x, labeled, features=False), groups, subset="last")
    k_max = float(np.max(np.abs(jac.k_gg)))
    np.testing.assert_allclose(without.score(), jac.score(), rtol=1e-4,
                               atol=12 * ntk.FLOAT32_EPS * k_max * 4)


def test_head_that_is_not_dense_falls_back_to_jacobians():
    x = np.random.default_rng(4).normal(size=(60, 6)).astype(np.float32)
    ctx = mlp_ctx(x, np.arange(4), features=False)
    squashed = Context(apply_fn=lambda v, xx: jnp.tanh(MLP().apply(v, xx)), variables=ctx.variables,
                       x=x, labeled=ctx.labeled, unlabeled=ctx.unlabeled, num_classes=C)
    groups = random_groups(squashed, 3, n=6)
    gram = gram_lib.build(squashed, groups)
    assert isinstance(gram, gram_lib.JacobianGram)
    f = lambda p, xx: squashed.apply_fn({"params": p}, xx)  # noqa: E731
    for row in range(len(groups)):
        s = np.concatenate([squashed.labeled, groups[row]])
        k = np.asarray(ntk.empirical_ntk(f, ctx.params, x[s], subset="last"), np.float64)
        assert gram.score()[row] == pytest.approx(np.linalg.eigvalsh(k)[0], rel=1e-4)


# ---------------------------------------------------------------------- trained features

@pytest.fixture(scope="module")
def digits_ctx():
    """An MLP trained for 300 Adam steps on 5 digit classes of sklearn's digits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = data.target < C
    x = (data.images[keep] / 16.0).astype(np.float32)
    y = data.target[keep]
    model = MLP(width=32)
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    tx = optax.adam(1e-2)
    labeled = np.arange(0, 500, 10)

    @jax.jit
    def step(params, opt, xb, yb):
        def loss(p):
            return optax.softmax_cross_entropy_with_integer_labels(
                model.apply({"params": p}, xb), yb).mean()
        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt)
        return optax.apply_updates(params, updates), opt

    params, opt = variables["params"], tx.init(variables["params"])
    for _ in range(300):
        params, opt = step(params, opt, x[labeled], y[labeled])
    accuracy = float(np.mean(np.argmax(model.apply({"params": params}, x), -1) == y))
    assert accuracy > 0.8                           # trained, not random features
    return Context(apply_fn=model.apply, variables={"params": params}, x=x, labeled=labeled,
                   unlabeled=np.setdiff1d(np.arange(len(x)), labeled), num_classes=C,
                   features_fn=lambda v, xx: model.apply(v, xx, return_features=True)[1],
                   batch_size=256)


@pytest.mark.parametrize("spec", ["crc:group_size=5", "crc:group_size=5,sequential=True",
                                  pytest.param("crc_greedy:max_candidates=150",
                                               marks=pytest.mark.slow)])
def test_digits_strategies_choose_the_same_groups_on_every_backend(digits_ctx, spec):
    key = jax.random.PRNGKey(7)
    picks, records = {}, {}
    for backend in ("host", "device", "device_f32"):
        ctx = dataclasses.replace(digits_ctx, record={})
        picks[backend] = get(spec, backend=backend)(ctx, 15, key)
        records[backend] = next(iter(ctx.record.values()))
    name = "crc_greedy" if spec.startswith("crc_greedy") else "crc"
    assert records["host"]["backend"] == "host"
    assert records["device"] == {**records["device"], "backend": "device", "dtype": "float64"}
    assert records["device_f32"]["dtype"] == "float32"
    np.testing.assert_array_equal(picks["device"], picks["host"], err_msg=name)
    np.testing.assert_array_equal(picks["device_f32"], picks["host"], err_msg=name)
    np.testing.assert_allclose(records["device"]["chosen_scores"], records["host"]["chosen_scores"],
                               rtol=1e-6)
    np.testing.assert_allclose(records["device_f32"]["chosen_scores"],
                               records["host"]["chosen_scores"], rtol=1e-6)
    if "all_scores" in records["host"]:
        np.testing.assert_allclose(records["device"]["all_scores"], records["host"]["all_scores"],
                                   rtol=1e-6)


def test_digits_scores_equal_host(digits_ctx, small_chunks):
    groups = random_groups(digits_ctx, 10)
    host = gram_lib.build(digits_ctx, groups, backend="host").score()
    device = gram_lib.build(digits_ctx, groups, backend="device").score()
    assert host.min() > 0
    np.testing.assert_allclose(device, host, rtol=1e-6)


# ---------------------------------------------------------------------- Proposition 2

@pytest.mark.parametrize("subset", ["last", "all"])
def test_repeated_images_score_zero_on_every_backend(subset):
    base = np.random.default_rng(5).normal(size=(30, 6)).astype(np.float32)
    x = np.concatenate([base, base])                   # image i again at i + 30
    labeled = np.arange(3)
    ctx = mlp_ctx(x, labeled)
    groups = np.array([[10, 11, 12, 13], [10, 11, 12, 40], [10, 11, 12, 31], [14, 15, 16, 17]])
    for backend in ("host", "device", "device_f32"):
        s = gram_lib.build(ctx, groups, subset=subset, backend=backend).score()
        assert s[0] > 1e-2 and s[3] > 1e-2, backend
        tol = 1e-10 if (subset == "last" and backend != "device_f32") else 1e-4
        assert abs(s[1]) < tol * s[0] and abs(s[2]) < tol * s[0], (backend, s)
        rows, _, _ = gram_lib.build(ctx, groups, subset=subset, backend=backend).top(None, 2)
        assert set(rows.tolist()) == {0, 3}, backend


# ---------------------------------------------------------------------- Jacobian route

def test_jacobian_device_scores_equal_host_through_sequential_rounds(small_chunks):
    x = np.random.default_rng(6).normal(size=(80, 6)).astype(np.float32)
    ctx = mlp_ctx(x, np.arange(5))
    groups = random_groups(ctx, 3, n=8)
    grams = {b: gram_lib.JacobianGram(ctx, groups, subset="all",
                                      spectra=device_spectra.spectra_for(b))
             for b in ("host", "device", "device_f32")}
    for _ in range(2):                                 # pick, grow the base, rescore
        h = grams["host"].score()
        np.testing.assert_allclose(grams["device"].score(), h, rtol=1e-6)
        picks = {b: g.top(None, 1) for b, g in grams.items()}
        for b in ("device", "device_f32"):
            np.testing.assert_array_equal(picks[b][0], picks["host"][0])
            np.testing.assert_allclose(picks[b][1], picks["host"][1], rtol=1e-6)
        for g in grams.values():
            g.extend_base(picks["host"][0])
    assert isinstance(grams["device"].k_bb, jax.Array) and grams["device"].k_bb.dtype == jnp.float64
