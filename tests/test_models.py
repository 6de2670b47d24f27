"""Models: exact parameter counts, the shared contract (head, features, train flag, batch_stats)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crc_jax import models


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def _param_shapes(model, input_shape):
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(input_shape)))
    return shapes["params"], shapes.get("batch_stats", {})


def _wrn_count(num_classes, k=2, in_channels=3):
    """Hand count: stem conv; per block BN(cin), conv3x3 cin->w, BN(w), conv3x3 w->w,
    1x1 shortcut when cin != w; final BN(64k); head. No conv biases."""
    total, cin = 9 * in_channels * 16, 16
    for w in (16 * k, 32 * k, 64 * k):
        for _ in range(4):
            total += 2 * cin + 9 * cin * w + 2 * w + 9 * w * w + (cin * w if cin != w else 0)
            cin = w
    return total + 2 * cin + cin * num_classes + num_classes


def _cnn_count(num_classes, w=32, dw=128, bn=True, in_channels=1):
    per_conv = lambda cin, cout: 9 * cin * cout + (2 * cout if bn else cout)  # noqa: E731
    return (per_conv(in_channels, w) + per_conv(w, w) + per_conv(w, 2 * w)
            + 2 * w * dw + dw + dw * num_classes + num_classes)


def _mlp_count(num_classes, d_in, w=256, depth=2):
    return d_in * w + w + (depth - 1) * (w * w + w) + w * num_classes + num_classes


def test_wrn28_2_parameter_count():
    params, stats = _param_shapes(models.get("wrn28_2", num_classes=10), (1, 32, 32, 3))
    n = _count(params)
    assert n == _wrn_count(10) == 1_467_610
    assert 1_400_000 <= n <= 1_550_000
    assert params["head"]["kernel"].shape == (128, 10)
    # Running mean and variance of every BatchNorm: per group, the blocks' input BNs
    # (cin, w, w, w), their inner BNs (4 x w), then the final BN (128).
    bn_channels = (16 + 3 * 32 + 4 * 32) + (32 + 3 * 64 + 4 * 64) + (64 + 3 * 128 + 4 * 128) + 128
    assert _count(stats) == 2 * bn_channels == 3616


def test_wrn_width_option_and_classes():
    params, _ = _param_shapes(models.get("wrn28_2", num_classes=100, width=1), (1, 32, 32, 3))
    assert _count(params) == _wrn_count(100, k=1)
    params, _ = _param_shapes(models.get("wrn28_2", num_classes=10, width=0), (1, 32, 32, 3))
    assert _count(params) == _wrn_count(10, k=2)


@pytest.mark.parametrize("options, expected", [
    ({}, _cnn_count(10)),
    ({"width": 8, "dense_width": 16}, _cnn_count(10, w=8, dw=16)),
    ({"batch_norm": False}, _cnn_count(10, bn=False)),
])
def test_cnn_parameter_count(options, expected):
    params, stats = _param_shapes(models.get("cnn", num_classes=10, **options), (1, 8, 8, 1))
    assert _count(params) == expected
    assert (_count(stats) > 0) == options.get("batch_norm", True)


def test_cnn_default_count_literal():
    params, _ = _param_shapes(models.get("cnn", num_classes=10), (1, 8, 8, 1))
    assert _count(params) == 288 + 64 + 9216 + 64 + 18432 + 128 + 8320 + 1290 == 37_802


@pytest.mark.parametrize("options, d_in, expected", [
    ({}, 2, _mlp_count(2, 2)),
    ({"width": 16, "depth": 3}, 64, _mlp_count(10, 64, w=16, depth=3)),
])
def test_mlp_parameter_count(options, d_in, expected):
    c = 2 if d_in == 2 else 10
    params, stats = _param_shapes(models.get("mlp", num_classes=c, **options), (1, d_in))
    assert _count(params) == expected
    assert _count(stats) == 0


def test_mlp_default_count_literal():
    params, _ = _param_shapes(models.get("mlp", num_classes=2), (1, 2))
    assert _count(params) == (2 * 256 + 256) + (256 * 256 + 256) + (256 * 2 + 2) == 67_074


def _check_contract(model, variables, x, num_classes, feature_dim):
    """logits (N, C); features (N, d) are the input of "head"; eval mode is deterministic."""
    logits = model.apply(variables, x, train=False)
    logits2, feats = model.apply(variables, x, train=False, return_features=True)
    assert logits.shape == (x.shape[0], num_classes) and feats.shape == (x.shape[0], feature_dim)
    np.testing.assert_allclose(logits, logits2, rtol=1e-6, atol=1e-6)
    head = variables["params"]["head"]
    np.testing.assert_allclose(logits, feats @ head["kernel"] + head["bias"], rtol=1e-4, atol=1e-5)
    assert np.all(np.isfinite(logits))
    return logits


def _changed(old, new) -> bool:
    return any(not np.allclose(a, b) for a, b in
               zip(jax.tree_util.tree_leaves(old), jax.tree_util.tree_leaves(new)))


@pytest.mark.parametrize("options", [{}, {"batch_norm": False}])
def test_cnn_contract(options):
    model = models.get("cnn", num_classes=10, width=4, dense_width=8, **options)
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    eval_logits = _check_contract(model, variables, x, 10, 8)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert logits.shape == (5, 10)
    if options.get("batch_norm", True):
        assert _changed(variables["batch_stats"], updates["batch_stats"])
        assert not np.allclose(logits, eval_logits)  # batch statistics, not running ones
    else:
        assert "batch_stats" not in variables and not updates.get("batch_stats")
        np.testing.assert_allclose(logits, eval_logits, rtol=1e-6)


def test_cnn_other_image_shapes():
    model = models.get("cnn", num_classes=3, width=4, dense_width=8)
    x = jnp.ones((2, 12, 10, 3))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert model.apply(variables, x).shape == (2, 3)


def test_mlp_contract():
    model = models.get("mlp", num_classes=2)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 2))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    assert set(variables) == {"params"}
    eval_logits = _check_contract(model, variables, x, 2, 256)
    # Flattens images; train mode equals eval mode (no BatchNorm or dropout).
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(logits, eval_logits, rtol=1e-6)
    assert not updates.get("batch_stats")
    # The architecture, by hand: relu(relu(x W0 + b0) W1 + b1) W_head + b_head.
    p = variables["params"]
    h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    h = jax.nn.relu(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
    np.testing.assert_allclose(eval_logits, h @ p["head"]["kernel"] + p["head"]["bias"],
                               rtol=1e-5, atol=1e-6)
    # Flax default init: LeCun normal, Var(W) = 1 / fan_in, zero biases.
    np.testing.assert_allclose(np.var(p["Dense_1"]["kernel"]), 1 / 256, rtol=0.03)
    assert all(np.all(p[k]["bias"] == 0) for k in ("Dense_0", "Dense_1", "head"))
    img = models.get("mlp", num_classes=3, width=4)
    xi = jnp.ones((2, 8, 8, 1))
    assert img.apply(img.init(jax.random.PRNGKey(0), xi), xi).shape == (2, 3)


def _random_variables(model, x, seed=0):
    """Variables with the model's tree structure, drawn with NumPy: non-trivial BatchNorm
    statistics and shifts, and no second WRN initialization (5-10 s on a CPU)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x))

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return jnp.asarray(rng.normal(0, np.sqrt(1 / np.prod(leaf.shape[:-1])), leaf.shape),
                               jnp.float32)
        if name in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.1, leaf.shape), jnp.float32)  # bias, BN shift, mean

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def wrn():
    """WRN-28-2 at batch 2, run eagerly (compiling it under jit on a CPU is slow)."""
    model = models.get("wrn28_2", num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    return model, _random_variables(model, x), x


def test_wrn_forward_and_features(wrn):
    model, variables, x = wrn
    _check_contract(model, variables, x, 10, 128)


def test_wrn_train_mode_batchnorm(wrn):
    model, variables, x = wrn
    (logits, feats), state = model.apply(variables, x, train=True, return_features=True,
                                         mutable=["batch_stats", "intermediates"],
                                         capture_intermediates=True)
    assert logits.shape == (2, 10) and feats.shape == (2, 128)
    assert _changed(variables["batch_stats"], state["batch_stats"])
    # First BatchNorm, on the stem conv output h, by hand: with momentum 0.999 the running
    # statistics move 0.1% of the way to the batch's; the output uses the batch's, with
    # epsilon 1e-3: scale * (h - mean(h)) / sqrt(var(h) + 1e-3) + bias.
    inter = state["intermediates"]
    h = np.asarray(inter["Conv_0"]["__call__"][0], np.float64)
    mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    old = variables["batch_stats"]["group0_block0"]["BatchNorm_0"]
    new = state["batch_stats"]["group0_block0"]["BatchNorm_0"]
    np.testing.assert_allclose(new["mean"], 0.999 * old["mean"] + 0.001 * mean,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new["var"], 0.999 * old["var"] + 0.001 * var, rtol=1e-5)
    bn = variables["params"]["group0_block0"]["BatchNorm_0"]
    expected = bn["scale"] * (h - mean) / np.sqrt(var + 1e-3) + bn["bias"]
    out = inter["group0_block0"]["BatchNorm_0"]["__call__"][0]
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-5)


def _conv(x, kernel, stride=1):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("cin, width, stride, activate_first", [
    (4, 4, 1, False),   # identity shortcut on the raw input
    (4, 8, 2, False),   # strided 1x1 shortcut on the raw input (first block of groups 2, 3)
    (4, 8, 1, True),    # 1x1 shortcut on the activated input (the very first block)
])
def test_wrn_block_by_hand(cin, width, stride, activate_first):
    """Pre-activation: BN -> lReLU(0.1) -> conv(stride) -> BN -> lReLU -> conv, + shortcut."""
    from crc_jax.models.wrn import _Block

    block = _Block(width, stride=stride, activate_before_residual=activate_first)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 6, cin))
    shapes = jax.eval_shape(lambda: block.init(jax.random.PRNGKey(0), x, False))
    rng = np.random.default_rng(3)
    v = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32), shapes)
    out = block.apply(v, x, False)
    p, st = v["params"], v["batch_stats"]

    def bn_act(h, name):
        h = (p[name]["scale"] * (h - st[name]["mean"]) / jnp.sqrt(st[name]["var"] + 1e-3)
             + p[name]["bias"])
        return jnp.where(h > 0, h, 0.1 * h)

    a = bn_act(x, "BatchNorm_0")
    h = _conv(bn_act(_conv(a, p["Conv_0"]["kernel"], stride), "BatchNorm_1"),
              p["Conv_1"]["kernel"])
    source = a if activate_first else x
    shortcut = _conv(source, p["shortcut"]["kernel"], stride) if cin != width else source
    np.testing.assert_allclose(out, shortcut + h, rtol=1e-4, atol=1e-4)


def test_wrn_init_scales():
    """Convs N(0, 2 / (9 * out_channels)), untruncated (He, fan-out); head Glorot normal."""
    model = models.get("wrn28_2", num_classes=10)
    p = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    kernel = np.asarray(p["group2_block3"]["Conv_1"]["kernel"])  # 3x3, 128 -> 128
    std = np.sqrt(2 / (9 * 128))
    np.testing.assert_allclose(kernel.std(), std, rtol=0.02)
    assert np.abs(kernel).max() > 2.5 * std  # a truncated normal stays within 2.3 std
    np.testing.assert_allclose(p["head"]["kernel"].std(), np.sqrt(2 / (128 + 10)), rtol=0.1)
    assert np.all(p["head"]["bias"] == 0)
    assert "bias" not in p["Conv_0"]


def test_unknown_model_is_rejected():
    with pytest.raises(KeyError, match="unknown model 'resnet50'"):
        models.get("resnet50", num_classes=10)
    assert models.names() == ["cnn", "linear", "mlp", "wrn28_2"]
    with pytest.raises(TypeError):
        models.get("mlp", num_classes=2, dense_width=4)  # an option mlp does not take
