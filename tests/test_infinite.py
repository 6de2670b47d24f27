"""crc_jax.infinite and crc_infinite against neural-tangents and brute-force eigenvalues."""

from functools import partial

import numpy as np
import pytest

import flax.linen as nn
import jax
import jax.numpy as jnp

from crc_jax import infinite, models, ntk
from crc_jax.acquisition.crc import infinite as crc_infinite
from crc_jax.acquisition.context import Context
from crc_jax.acquisition.crc.crc import random_groups, top_groups
from experiments import ntk_kernels

C = 10


@pytest.fixture(scope="module")
def digits():
    from crc_jax import data
    return np.asarray(data.load("digits").x_train[:64])


def tiny_mlp(width=16, depth=3):
    return models.get("mlp", num_classes=C, width=width, depth=depth)


def tiny_cnn(width=3):
    return models.get("cnn", num_classes=C, width=width, dense_width=5, batch_norm=False)


LAYERS = {"MLP": lambda m: [f"Dense_{i}" for i in range(m.depth)] + ["head"],
          "CNN": lambda m: ["Conv_0", "Conv_1", "Conv_2", "Dense_0", "head"]}


def stax_params(model, params, stax_init):
    """The stax network's parameters holding the Flax kernels in NTK coordinates."""
    q = ntk_kernels.ntk_coordinates(params)
    kernels = iter(q[name]["kernel"] for name in LAYERS[type(model).__name__](model))
    return [(next(kernels), None) if isinstance(p, tuple) and len(p) == 2 else p for p in stax_init]


def nt_trace_ntk(apply_fn, params, x):
    """C · neural-tangents' empirical NTK (its trace_axes average over classes)."""
    from crc_jax.runtime._nt_compat import import_neural_tangents
    nt = import_neural_tangents()
    fn = nt.empirical_ntk_fn(apply_fn, trace_axes=(-1,), vmap_axes=0,
                             implementation=nt.NtkImplementation.JACOBIAN_CONTRACTION)
    return C * np.asarray(jax.jit(fn)(x, None, params), np.float64)


@pytest.mark.parametrize("build", [tiny_mlp, tiny_cnn], ids=["mlp", "cnn"])
def test_stax_counterpart_is_the_flax_model_in_ntk_coordinates(build, digits):
    """Same function, and the same empirical NTK as neural-tangents' NTK parameterization."""
    model = build()
    x = jnp.asarray(digits[:6])
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    init_fn, apply_fn, _ = infinite.stax_counterpart(model)
    _, stax_init = init_fn(jax.random.PRNGKey(1), x.shape)
    sp = stax_params(model, params, stax_init)
    np.testing.assert_allclose(np.asarray(apply_fn(sp, x)), np.asarray(model.apply({"params": params}, x)),
                               rtol=1e-5, atol=1e-6)
    ours = ntk_kernels.empirical_trace_ntk(model, params, x)
    np.testing.assert_allclose(ours, nt_trace_ntk(apply_fn, sp, x), rtol=2e-5, atol=1e-6)


def test_dense_fast_path_equals_jacobian_contraction(digits):
    model = tiny_mlp(width=12, depth=2)
    x = jnp.asarray(digits[:7])
    x2 = jnp.asarray(digits[7:12])
    params = model.init(jax.random.PRNGKey(3), x)["params"]
    # Non-zero biases, so the standard parameterization's bias terms count.
    params = jax.tree_util.tree_map(lambda v: v + 0.1 if v.ndim == 1 else v, params)
    assert ntk_kernels.dense_layers(model, params, x[:1]) == {"Dense_0": True, "Dense_1": True, "head": True}
    standard = ntk.empirical_ntk(ntk_kernels.FlaxApply(model), params, x, x2, subset="all")
    trace = ntk_kernels.empirical_trace_ntk(model, params, x, x2, parameterization="standard")
    np.testing.assert_allclose(trace, standard, rtol=2e-5, atol=1e-6)
    q = ntk_kernels.ntk_coordinates(params)
    in_ntk = ntk.empirical_ntk(ntk_kernels.FlaxApply(model, ntk_coordinates=True), q, x, x2,
                               subset=lambda path: path[-1] == "kernel")
    np.testing.assert_allclose(ntk_kernels.empirical_trace_ntk(model, params, x, x2), in_ntk,
                               rtol=2e-5, atol=1e-6)


class MixedBias(nn.Module):
    """Dense layers with and without bias, and a tanh: the fast path is not MLP-specific."""

    @nn.compact
    def __call__(self, x):
        h = jnp.tanh(nn.Dense(9, use_bias=False)(x.reshape(x.shape[0], -1)))
        return nn.Dense(C)(h)


def test_dense_fast_path_counts_only_existing_biases(digits):
    model = MixedBias()
    x = jnp.asarray(digits[:6])
    params = model.init(jax.random.PRNGKey(4), x)["params"]
    assert ntk_kernels.dense_layers(model, params, x[:1]) == {"Dense_0": False, "Dense_1": True}
    np.testing.assert_allclose(ntk_kernels.empirical_trace_ntk(model, params, x, parameterization="standard"),
                               ntk.empirical_ntk(ntk_kernels.FlaxApply(model), params, x, subset="all"),
                               rtol=2e-5, atol=1e-6)


def test_cnn_with_batch_norm_has_no_counterpart():
    bn = models.get("cnn", num_classes=C, width=3, batch_norm=True)
    with pytest.raises(ValueError, match="BatchNorm"):
        infinite.stax_counterpart(bn)
    infinite.stax_counterpart(bn, drop_batch_norm=True)
    with pytest.raises(ValueError, match="no stax counterpart"):
        infinite.stax_counterpart(models.get("wrn28_2", num_classes=C))


# --------------------------------------------------------------------------- CNN covariance convolution

def direct_convolution(lhs, rhs, strides, padding):
    """The one-channel convolution of `infinite.covariance_conv`, written out in NumPy."""
    from jax import lax
    (b, _, h1, h2), (f1, f2) = lhs.shape, rhs.shape[-2:]
    (lo1, hi1), (lo2, hi2) = lax.padtype_to_pads((h1, h2), (f1, f2), strides, padding)
    padded = np.pad(lhs[:, 0], ((0, 0), (lo1, hi1), (lo2, hi2)))
    o1 = (h1 + lo1 + hi1 - f1) // strides[0] + 1
    o2 = (h2 + lo2 + hi2 - f2) // strides[1] + 1
    out = np.zeros((b, o1, o2))
    for a in range(f1):
        for c in range(f2):
            out += rhs[0, 0, a, c] * padded[:, a:a + strides[0] * o1:strides[0],
                                            c:c + strides[1] * o2:strides[1]]
    return out[:, None]


@pytest.mark.parametrize("shape,window,strides,padding", [
    ((8, 8), (3, 3), (1, 1), "SAME"),      # the digits CNN's convs: one (H·H', O·O') product
    ((4, 4), (3, 3), (1, 1), "SAME"),      # after its pooling
    ((5, 7), (2, 3), (2, 1), "VALID"),
    ((20, 20), (3, 3), (1, 1), "SAME"),    # beyond PAIR_OPERATOR_MAX: one product per axis
    ((17, 16), (3, 2), (2, 2), "SAME"),
])
def test_covariance_conv_is_the_convolution(shape, window, strides, padding, monkeypatch):
    rng = np.random.default_rng(0)
    lhs = rng.normal(size=(6, 1, *shape))
    rhs = rng.normal(size=(1, 1, *window))
    expected = direct_convolution(lhs, rhs, strides, padding)
    with jax.enable_x64(True):
        got = np.asarray(infinite.covariance_conv(jnp.asarray(lhs), jnp.asarray(rhs), strides, padding))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        monkeypatch.setattr(infinite, "PAIR_OPERATOR_MAX", 0)    # the per-axis products too
        got = np.asarray(infinite.covariance_conv(jnp.asarray(lhs), jnp.asarray(rhs), strides, padding))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def compiled(fn, *args, **options):
    """fn (jitted) compiled for `args` with XLA debug options for this compilation only,
    never taken from the suite's compilation cache (tests/conftest.py): an `xla_dump_to`
    must see XLA compile."""
    from jax._src import compilation_cache   # JAX decides once whether to use the cache

    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        return fn.lower(*args).compile(compiler_options=options)
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        compilation_cache.reset_cache()


def test_cnn_kernel_equals_neural_tangents_own_convolution(digits):
    """The CNN kernel with `covariance_conv` equals neural-tangents' (lax convolution), which
    is compiled here at backend optimization level 0: there LLVM does not vectorize the
    convolution's loop, so its AVX-512 out-of-bounds load (docs/upstream_segfault.md) is
    not generated."""
    _, _, kernel_fn = infinite.stax_counterpart(tiny_cnn())
    ours = jax.jit(partial(kernel_fn, get="ntk"))
    theirs = jax.jit(partial(kernel_fn.__wrapped__, get="ntk"))
    with jax.enable_x64(True):
        x1, x2 = jnp.asarray(digits[:5], jnp.float64), jnp.asarray(digits[5:8], jnp.float64)
        for a, b in ((x1, x1), (x1, x2)):
            expected = np.asarray(compiled(theirs, a, b, xla_backend_optimization_level=0)(a, b))
            np.testing.assert_allclose(np.asarray(ours(a, b)), expected, rtol=0,
                                       atol=1e-9 * np.abs(expected).max())


def test_cnn_kernels_compile_without_conditional_loads(digits, tmp_path):
    """XLA:CPU code of the CNN kernels (pairs, and crc_infinite's within-group blocks), at the
    default optimization level, holds no masked load: the instruction pattern LLVM turned
    into an unmasked out-of-bounds load on AVX-512 (docs/upstream_segfault.md)."""
    model = tiny_cnn()
    kernel_fn = infinite.infinite_kernel_fn(model)
    with jax.enable_x64(True):
        x = jnp.asarray(digits[:4], jnp.float64)
        compiled(kernel_fn, x, x, xla_backend_optimization_level=3, xla_dump_to=str(tmp_path / "pairs"))
        groups = x.reshape(2, 2, *x.shape[1:])
        compiled(crc_infinite._within_groups, kernel_fn, groups,
                 xla_backend_optimization_level=3, xla_dump_to=str(tmp_path / "groups"))
    for part in ("pairs", "groups"):
        ir = list((tmp_path / part).glob("*ir-with-opt.ll"))
        assert ir, f"no LLVM IR dumped for the {part} kernel"
        masked = [p.name for p in ir if "llvm.masked.load" in p.read_text()]
        assert not masked, f"{part}: masked loads in {masked}"


def test_infinite_trace_ntk_sums_classes_over_blocks(digits):
    model = tiny_mlp()
    _, _, kernel_fn = infinite.stax_counterpart(model)
    x = digits[:11]
    with jax.enable_x64(True):
        direct = C * np.asarray(kernel_fn(jnp.asarray(x, jnp.float64), None, "ntk"))
    blocked = infinite.infinite_trace_ntk(infinite.infinite_kernel_fn(model), x, num_classes=C,
                                          batch_size=4)
    np.testing.assert_allclose(blocked, direct, rtol=1e-10)
    np.testing.assert_allclose(infinite.infinite_trace_ntk(infinite.infinite_kernel_fn(model), x[:3],
                                                           x[3:], num_classes=C, batch_size=2),
                               direct[:3, 3:], rtol=1e-10)


@pytest.mark.parametrize("depth", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_distance_at_init_falls_like_inverse_sqrt_width(digits, depth):
    """‖K_emp − K_inf‖/‖K_inf‖ ~ width^-1/2 (root mean square over 4 seeds), < 0.1 at 4096.

    Depth 1 runs by default (its init is cheap); depth 2, the project's MLP, draws
    4096² weights per seed (about 30 s on 2 CPU cores) and is marked slow.
    """
    x = digits[:16]
    widths = (64, 256, 1024, 4096)
    k_inf = infinite.infinite_trace_ntk(infinite.infinite_kernel_fn(tiny_mlp(depth=depth)), x,
                                        num_classes=C)
    rms = []
    for width in widths:
        model = models.get("mlp", num_classes=C, width=width, depth=depth)
        d = [ntk_kernels.relative_distance(
            ntk_kernels.empirical_trace_ntk(model, model.init(jax.random.PRNGKey(s), x[:1])["params"], x),
            k_inf) for s in range(4)]
        rms.append(np.sqrt(np.mean(np.square(d))))
    slope = np.polyfit(np.log(widths), np.log(rms), 1)[0]
    assert -0.7 < slope < -0.3, (slope, rms)
    assert rms[-1] < 0.1, rms


# --------------------------------------------------------------------------- crc_infinite

def brute_force_scores(model, x, labeled, groups):
    """λmin of C·K_inf(L ∪ g) from neural-tangents directly, per group, in float64."""
    _, _, kernel_fn = infinite.stax_counterpart(model)
    kernel_fn = jax.jit(partial(kernel_fn, get="ntk"))
    out = []
    with jax.enable_x64(True):
        for g in groups:
            s = np.concatenate([labeled, g])
            k = C * np.asarray(kernel_fn(jnp.asarray(x[s], jnp.float64), None))
            out.append(np.linalg.eigvalsh(k)[0])
    return np.asarray(out)


def context(x, labeled, model):
    labeled = np.asarray(labeled)
    unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
    return Context(apply_fn=None, variables=None, x=x, labeled=labeled, unlabeled=unlabeled,
                   num_classes=C, model=model)


@pytest.mark.parametrize("arch,n,n_lab,g", [
    ("mlp", 60, 12, 5),
    # ~10 s of CNN-kernel compiles; in make test, test_crash_matrix runs crc_infinite on the
    # CNN and the kernel tests above compare the CNN kernel with neural-tangents' own
    pytest.param("cnn", 14, 4, 2, marks=pytest.mark.slow),
])
def test_crc_infinite_scores_equal_brute_force_eigenvalues(digits, arch, n, n_lab, g):
    x = digits[:n]
    model = tiny_mlp() if arch == "mlp" else tiny_cnn()
    ctx = context(x, np.arange(n_lab), model)
    groups = ctx.unlabeled[: (len(ctx.unlabeled) // g) * g].reshape(-1, g)
    strategy = crc_infinite.make_crc_infinite(group_size=g)
    scores = strategy.score_groups(ctx, groups)
    expected = brute_force_scores(model, x, ctx.labeled, groups)
    assert np.all(expected > 0)
    np.testing.assert_allclose(scores, expected, rtol=1e-7, atol=1e-9 * expected.max())


def test_crc_infinite_ignores_width_and_names_architectures(digits):
    """The infinite kernel is one per architecture: any width, or arch='mlp', scores alike."""
    x = digits[:30]
    groups = np.arange(6, 30).reshape(-1, 4)
    a = crc_infinite.make_crc_infinite(group_size=4).score_groups(
        context(x, range(6), tiny_mlp(8, 2)), groups)
    b = crc_infinite.make_crc_infinite(group_size=4, arch="mlp").score_groups(
        context(x, range(6), None), groups)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError, match="arch"):
        crc_infinite.make_crc_infinite(arch="wrn")


def test_crc_infinite_repeated_images_score_zero(digits):
    """Proposition 2: a group holding a copy of a labeled image, or two copies, scores 0."""
    x = np.concatenate([digits[:20], digits[[3]], digits[[12]], digits[[12]]])   # 20 = copy of 3
    ctx = context(x, np.arange(8), tiny_mlp())
    groups = np.asarray([[20, 9], [21, 22], [10, 11]])
    scores = crc_infinite.make_crc_infinite(group_size=2).score_groups(ctx, groups)
    assert scores[0] == 0 and scores[1] == 0 and scores[2] > 0


def test_crc_infinite_picks_top_groups_and_reuses_kernel_rows(digits):
    x = digits[:30]
    model = tiny_mlp()
    strategy = crc_infinite.make_crc_infinite(group_size=4)
    ctx = context(x, np.arange(6), model)
    key = jax.random.PRNGKey(5)
    picked = strategy(ctx, 8, key)
    groups = random_groups(key, ctx.unlabeled, 4)
    expected = brute_force_scores(model, x, ctx.labeled, groups)
    assert np.array_equal(np.sort(picked), np.sort(groups[top_groups(expected, 2)].ravel()))
    rows = strategy.kernel_rows(ctx)
    assert rows.evaluations == 30 * 6   # every pool row vs L, once
    assert set(ctx.record["crc_infinite"]) >= {"group_size", "chosen_scores"}
    assert not {"seconds", "kernel_entries_computed"} & set(ctx.record["crc_infinite"])  # reproducible
    # diagnostics: the ceiling λmin(K(L, L)) (full rank) and the cut, against the brute force
    diag = ctx.record["crc_infinite"]["diagnostics"]
    _, _, kernel_fn = infinite.stax_counterpart(model)
    with jax.enable_x64(True):
        k_ll = C * np.asarray(kernel_fn(jnp.asarray(x[ctx.labeled], jnp.float64), None, get="ntk"))
    ordered = np.sort(expected)[::-1]
    assert diag["ceiling"] == pytest.approx(np.linalg.eigvalsh(k_ll)[0], rel=1e-7)
    assert diag["ceiling"] >= ordered[0] and diag["rank_used"] == 10 and diag["n_groups"] == 6
    assert diag["chosen"] == pytest.approx(ordered[1], rel=1e-7)
    assert diag["runner_up"] == pytest.approx(ordered[2], rel=1e-7)

    ctx2 = context(x, np.concatenate([ctx.labeled, picked]), model)
    picked2 = strategy(ctx2, 8, jax.random.PRNGKey(6))
    # Rows held from step 1; only the 8 new labeled columns are computed.
    assert strategy.kernel_rows(ctx2) is rows and rows.evaluations == 30 * 6 + 30 * 8
    fresh = crc_infinite.make_crc_infinite(group_size=4)
    assert np.array_equal(picked2, fresh(context(x, ctx2.labeled, model), 8, jax.random.PRNGKey(6)))
    assert len(set(picked2.tolist())) == 8 and not set(picked2) & set(ctx2.labeled.tolist())


def test_crc_infinite_sequential_is_greedy_on_the_kernel(digits):
    x = digits[:40]
    model = tiny_mlp()
    ctx = context(x, np.arange(6), model)
    key = jax.random.PRNGKey(2)
    picked = crc_infinite.make_crc_infinite(group_size=3, sequential=True)(ctx, 6, key)
    groups = random_groups(key, ctx.unlabeled, 3)
    first = int(np.argmax(brute_force_scores(model, x, ctx.labeled, groups)))
    base = np.concatenate([ctx.labeled, groups[first]])
    rest = np.delete(np.arange(len(groups)), first)
    second = rest[int(np.argmax(brute_force_scores(model, x, base, groups[rest])))]
    assert np.array_equal(picked, np.concatenate([groups[first], groups[second]]))


# --------------------------------------------------------------------------- experiments.ntk_compare

def tiny_compare_config():
    """The MLP only: its CNN part runs in test_crash_matrix (a child process per run)."""
    from experiments.configs import ntk_compare as cfg
    c = cfg.get_config("smoke")
    c.models = ("mlp",)
    c.mlp.widths = (8, 32)
    c.sample_size = 14
    c.crc.labeled_size = 6
    c.crc.group_size = 2
    c.crc.query_size = 4
    return c


def test_ntk_compare_writes_table_csv_and_plot(tmp_path):
    import csv
    from experiments import ntk_compare
    config = tiny_compare_config()
    rows = ntk_compare.run(config, tmp_path)
    assert len(rows) == 2 * 2 * 2   # widths x seeds x (init, trained)
    with open(tmp_path / "ntk_compare.csv") as f:
        saved = list(csv.DictReader(f))
    assert [float(r["distance"]) for r in saved] == pytest.approx([r["distance"] for r in rows])
    for r in rows:
        assert 0 <= r["crc_overlap"] <= 1 and r["distance"] > 0
        assert (r["stage"] == "init") == np.isnan(r["train_loss"])
    table = (tmp_path / "ntk_compare.md").read_text()
    assert "| digits | mlp | init |" in table and "| digits | mlp | 32 | trained |" in table
    assert (tmp_path / "distance_vs_width.png").stat().st_size > 10_000


def test_ntk_compare_rejects_a_query_the_groups_cannot_fill(tmp_path):
    from crc_jax.errors import ConfigError
    from experiments import ntk_compare
    config = tiny_compare_config()
    config.crc.query_size = 5
    with pytest.raises(ConfigError, match="crc.query_size"):
        ntk_compare.run(config, tmp_path)
    config.crc.query_size = 20
    with pytest.raises(ConfigError, match="crc.labeled_size"):
        ntk_compare.run(config, tmp_path)
