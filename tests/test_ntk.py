"""crc_jax.ntk against neural-tangents, the last-layer closed form, and NumPy eigensolvers."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crc_jax import ntk

C = 4


@pytest.fixture(scope="module")
def model(tiny_cnn):
    m = tiny_cnn(num_classes=C, width=6, conv_features=3)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5, 5, 2))
    variables = m.init(jax.random.PRNGKey(0), x)
    # Non-trivial running statistics, so BatchNorm is not the identity.
    stats = jax.tree_util.tree_map(lambda s: s + 0.3, variables["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": stats}

    def f(params, x):
        return m.apply({"params": params, "batch_stats": stats}, x)

    return m, variables, f, x


def nt_kernel(f, params, x1, x2, *, trace_axes, implementation):
    from crc_jax.runtime._nt_compat import import_neural_tangents
    nt = import_neural_tangents()
    fn = nt.empirical_ntk_fn(f, trace_axes=trace_axes, vmap_axes=0,
                             implementation=getattr(nt.NtkImplementation, implementation))
    return np.asarray(jax.jit(fn)(x1, x2, params))


IMPLEMENTATIONS = ["JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS"]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_trace_ntk_all_params_is_C_times_neural_tangents(model, implementation):
    _, v, f, x = model
    ours = np.asarray(ntk.empirical_ntk(f, v["params"], x, subset="all"))
    ref = C * nt_kernel(f, v["params"], x, None, trace_axes=(-1,), implementation=implementation)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # and the sum is not the mean: without the ×C the kernels disagree
    assert not np.allclose(ours, ref / C, rtol=1e-2)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_last_layer_subset_matches_neural_tangents(model, implementation):
    _, v, f, x = model
    params = v["params"]

    def f_head(head, x):
        return f({**params, "head": head}, x)

    ours = np.asarray(ntk.empirical_ntk(f, params, x[:5], x[2:], subset="last"))
    ref = C * nt_kernel(f_head, params["head"], x[:5], x[2:], trace_axes=(-1,),
                        implementation=implementation)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("subset", ["all", "last"])
def test_class_blocks_match_neural_tangents_untraced(model, subset):
    _, v, f, x = model
    params = v["params"]
    ours = np.asarray(ntk.empirical_ntk(f, params, x, x[:3], subset=subset, trace=False))
    if subset == "all":
        ref = nt_kernel(f, params, x, x[:3], trace_axes=(), implementation="JACOBIAN_CONTRACTION")
    else:
        ref = nt_kernel(lambda h, x: f({**params, "head": h}, x), params["head"], x, x[:3],
                        trace_axes=(), implementation="JACOBIAN_CONTRACTION")
    assert ours.shape == ref.shape == (7, 3, C, C)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    # the trace of the blocks is the traced kernel
    traced = np.asarray(ntk.empirical_ntk(f, params, x, x[:3], subset=subset))
    np.testing.assert_allclose(np.trace(ours, axis1=2, axis2=3), traced, rtol=1e-5, atol=1e-5)


def test_last_layer_equals_closed_form(model):
    m, v, f, x = model
    _, phi = m.apply(v, x, return_features=True)
    k = np.asarray(ntk.empirical_ntk(f, v["params"], x, subset="last"))
    closed = C * (np.asarray(phi, np.float64) @ np.asarray(phi, np.float64).T + 1.0)
    np.testing.assert_allclose(k, closed, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ntk.last_layer_ntk(phi, C)), closed, rtol=1e-5)


def test_batched_blocks_equal_one_block(model):
    _, v, f, x = model
    p = v["params"]
    whole = np.asarray(ntk.empirical_ntk(f, p, x, subset="all"))
    close = partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5 * np.abs(whole).max())
    close(ntk.empirical_ntk(f, p, x, subset="all", batch_size=3), whole)       # 3 + 3 + 1 rows
    close(ntk.empirical_ntk(f, p, x[:4], x[1:], subset="all"), whole[:4, 1:])
    close(ntk.empirical_ntk(f, p, x[:4], x[1:], subset="all", batch_size=3), whole[:4, 1:])
    blocks = np.asarray(ntk.empirical_ntk(f, p, x, subset="all", trace=False))
    close(ntk.empirical_ntk(f, p, x, subset="all", trace=False, batch_size=3), blocks)


def test_kernels_add_over_a_parameter_partition(model):
    _, v, f, x = model
    p = v["params"]
    conv = ntk.empirical_ntk(f, p, x, subset=lambda path: path[0].startswith("Conv"))
    rest = ntk.empirical_ntk(f, p, x, subset=lambda path: not path[0].startswith("Conv"))
    whole = ntk.empirical_ntk(f, p, x, subset="all")
    np.testing.assert_allclose(conv + rest, whole, rtol=1e-5, atol=1e-6)
    assert np.abs(conv).max() > 1e-3 and np.abs(rest).max() > 1e-3


def test_jit_whole_function(model):
    _, v, f, x = model
    fn = jax.jit(partial(ntk.empirical_ntk, f, subset="all", batch_size=3))
    ref = np.asarray(ntk.empirical_ntk(f, v["params"], x, subset="all"))
    # float32 sums in another order: entries near zero carry error relative to the kernel's scale
    np.testing.assert_allclose(fn(v["params"], x), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_ntk_diagonal_is_the_kernel_diagonal(model):
    _, v, f, x = model
    p = v["params"]
    blocks = np.asarray(ntk.empirical_ntk(f, p, x, subset="all", trace=False))
    diag = np.asarray(ntk.ntk_diagonal(f, p, x, subset="all", batch_size=3))
    np.testing.assert_allclose(diag, blocks[np.arange(7), np.arange(7)], rtol=1e-5,
                               atol=1e-6 * np.abs(blocks).max())  # float32, relative to the scale
    tr = np.asarray(ntk.ntk_diagonal(f, p, x, subset="all", trace=True))
    np.testing.assert_allclose(tr, np.trace(diag, axis1=1, axis2=2), rtol=1e-5)


def test_subset_selection_and_errors(model):
    _, v, _, _ = model
    p = v["params"]
    assert ntk.count_parameters(p, "last") == 6 * C + C
    assert ntk.count_parameters(p, "all") == sum(l.size for l in jax.tree_util.tree_leaves(p))
    # without a "head", the last top-level module is the final layer
    q = {"Dense_0": {"kernel": jnp.ones((2, 3))},
         "Dense_1": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}}
    assert ntk.count_parameters(q, "last") == 8
    with pytest.raises(ValueError, match="selects no parameters"):
        ntk.parameter_mask(p, lambda path: False)
    with pytest.raises(ValueError, match="subset"):
        ntk.parameter_mask(p, "first")


def test_min_positive_eigenvalue_is_rank_aware_and_batched():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 9, 5))
    k = z @ np.swapaxes(z, 1, 2)                        # (3, 9, 9), rank 5
    ev = np.linalg.eigvalsh(k)
    with jax.enable_x64(True):
        out = np.asarray(ntk.min_positive_eigenvalue(jnp.asarray(k), 5))
        np.testing.assert_allclose(out, ev[:, 9 - 5], rtol=1e-10)        # smallest positive
        out = np.asarray(ntk.min_positive_eigenvalue(jnp.asarray(k[:, :4, :4]), 5))
        np.testing.assert_allclose(out, np.linalg.eigvalsh(k[:, :4, :4])[:, 0], rtol=1e-10)   # λmin
        per = np.asarray(ntk.min_positive_eigenvalue(jnp.asarray(k), jnp.array([1, 5, 9])))
        np.testing.assert_allclose(per, [ev[0, 8], ev[1, 4], ev[2, 0]], rtol=1e-10, atol=1e-12)
    assert ev[:, 0].max() < 1e-10 < out.min()


def test_ranks_from_features_not_float32_kernels():
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(300, 20)).astype(np.float32)
    k32 = np.asarray(ntk.last_layer_ntk(phi, C))
    # docs/design.md trap: NumPy's float64 tolerance counts float32 noise as rank
    assert np.linalg.matrix_rank(k32.astype(np.float64)) > 21
    assert ntk.kernel_rank(k32) == 21
    assert ntk.feature_rank(phi) == 21
    assert ntk.feature_rank(phi, bias=False) == 20
    phi[:, [3, 7]] = 0.0                                  # dead units
    assert ntk.feature_rank(phi) == 19
    phi[:, 5] = 2.5                                       # a constant unit is the bias direction
    assert ntk.feature_rank(phi) == 18
