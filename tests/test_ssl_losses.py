"""SSL losses on hand-computed cases: FixMatch masking, Mean Teacher / Π-model consistency
and ramp-up, where gradients do (not) flow, EMA arithmetic, weight decay on kernels only."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from crc_jax import models, optim, ssl
from crc_jax.ssl import consistency, fixmatch, mean_teacher, pi_model
from crc_jax.state import create_train_state
from experiments.configs.base import get_base_config


class TinyBN(nn.Module):
    """Dense -> BatchNorm -> ReLU -> head: the smallest model with kernels, biases and BN."""

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        h = nn.Dense(8)(x)
        h = nn.relu(nn.BatchNorm(use_running_average=not train)(h))
        logits = nn.Dense(3, name="head")(h)
        return (logits, h) if return_features else logits


def log_softmax(z):
    z = np.asarray(z, np.float64)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# --------------------------------------------------------------------------- FixMatch


def test_fixmatch_mask_and_hard_pseudo_labels_hand_computed():
    # Confidences of the weak views: 0.97 (kept, label 0), 0.6 (masked), 0.99 (kept, label 1),
    # exactly 0.95 (kept: the mask is max p >= tau).
    weak = jnp.log(jnp.array([[0.97, 0.03], [0.6, 0.4], [0.01, 0.99], [0.95, 0.05]]))
    strong = jnp.array([[0.5, -1.0], [3.0, -2.0], [1.0, 0.0], [-0.3, 0.2]])
    loss, mask = fixmatch.pseudo_label_loss(weak, strong, threshold=0.95)
    ls = log_softmax(strong)
    expected = (-ls[0, 0] + 0.0 - ls[2, 1] - ls[3, 0]) / 4  # mean over the whole batch
    np.testing.assert_allclose(mask, [1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # A sample under tau contributes nothing, whatever its strong logits.
    loss2, _ = fixmatch.pseudo_label_loss(weak, strong.at[1].set(jnp.array([-9.0, 9.0])),
                                          threshold=0.95)
    np.testing.assert_allclose(float(loss2), float(loss), rtol=1e-6)


def test_fixmatch_no_gradient_through_the_pseudo_label():
    weak = jnp.array([[4.0, 0.0, -1.0], [0.1, 0.0, 0.2]])   # confident / not confident
    strong = jnp.array([[0.3, 0.2, 0.1], [1.0, 2.0, 3.0]])
    g_weak, g_strong = jax.grad(
        lambda w, s: fixmatch.pseudo_label_loss(w, s, threshold=0.9)[0], argnums=(0, 1))(
        weak, strong)
    np.testing.assert_array_equal(g_weak, np.zeros_like(weak))
    # d/ds mean_u mask CE(s, y) = mask (softmax(s) - onehot(y)) / N: only row 0, label 0.
    expected = np.zeros((2, 3))
    expected[0] = (np.exp(log_softmax(strong)[0]) - np.eye(3)[0]) / 2
    np.testing.assert_allclose(g_strong, expected, rtol=1e-5, atol=1e-7)


def test_fixmatch_loss_equals_the_formula_with_constant_pseudo_labels():
    """Full loss through a network: CE + λ mean(mask CE(f(strong), argmax f(weak))), and its
    gradient equals that of the same formula with pseudo-labels fixed in advance."""
    model = models.get("mlp", num_classes=3, width=16)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    x_l, x_w, x_s = (jax.random.normal(k, (n, 2)) for k, n in zip(keys, (4, 6, 6)))
    y_l = jnp.array([0, 1, 2, 0])
    state = create_train_state(model, keys[3], x_l, optax.sgd(0.1))
    p_w = np.asarray(jax.nn.softmax(model.apply({"params": state.params}, x_w)))
    # A threshold between the confidences, so that some samples are masked and some kept.
    threshold, weight = float(np.median(p_w.max(-1))), 2.0
    labels, mask = np.argmax(p_w, -1), (p_w.max(-1) >= threshold).astype(np.float32)
    assert 0 < mask.sum() < len(mask)
    loss, (_, metrics) = fixmatch.fixmatch_loss(state.params, state, x_l, y_l, x_w, x_s,
                                                threshold=threshold, weight=weight)

    def by_hand(params):
        ce = lambda z, y: optax.softmax_cross_entropy_with_integer_labels(z, y)  # noqa: E731
        f = lambda x: model.apply({"params": params}, x)  # noqa: E731
        return jnp.mean(ce(f(x_l), y_l)) + weight * jnp.mean(mask * ce(f(x_s), labels))

    np.testing.assert_allclose(float(loss), float(by_hand(state.params)), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["mask_rate"]), mask.mean(), rtol=1e-6)
    g = jax.grad(lambda p: fixmatch.fixmatch_loss(p, state, x_l, y_l, x_w, x_s,
                                                  threshold=threshold, weight=weight)[0])
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                           g(state.params), jax.grad(by_hand)(state.params))


def test_fixmatch_one_forward_pass_over_the_concatenated_batch():
    """BatchNorm statistics after a step are those of concat(labeled, weak, strong)."""
    model = TinyBN()
    x = jax.random.normal(jax.random.PRNGKey(0), (3 + 5 + 5, 4))
    state = create_train_state(model, jax.random.PRNGKey(1), x[:1], optax.sgd(0.1))
    _, (batch_stats, _) = fixmatch.fixmatch_loss(
        state.params, state, x[:3], jnp.array([0, 1, 2]), x[3:8], x[8:],
        threshold=0.95, weight=1.0)
    _, expected = model.apply({"params": state.params, "batch_stats": state.batch_stats}, x,
                              train=True, mutable=["batch_stats"])
    jax.tree_util.tree_map(np.testing.assert_allclose, batch_stats, expected["batch_stats"])


# ------------------------------------------------------------ Mean Teacher / Π-model


def test_sigmoid_rampup_values():
    np.testing.assert_allclose(consistency.sigmoid_rampup(0, 100), math.exp(-5), rtol=1e-6)
    np.testing.assert_allclose(consistency.sigmoid_rampup(50, 100), math.exp(-1.25), rtol=1e-6)
    np.testing.assert_allclose(consistency.sigmoid_rampup(100, 100), 1.0)
    np.testing.assert_allclose(consistency.sigmoid_rampup(250, 100), 1.0)
    np.testing.assert_allclose(consistency.sigmoid_rampup(7, 0), 1.0)


def test_rampup_steps_from_config():
    c = get_base_config()
    c.ssl.rampup_fraction = 0.4
    assert consistency.rampup_steps(c.ssl, 1000) == 400


def test_softmax_mse_hand_computed():
    s = jnp.array([[0.0, 0.0], [2.0, 0.0]])
    t = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    ps, pt = np.exp(log_softmax(s)), np.exp(log_softmax(t))
    np.testing.assert_allclose(float(consistency.softmax_mse(s, t)),
                               np.mean((ps - pt) ** 2), rtol=1e-6)
    assert float(jnp.abs(jax.grad(consistency.softmax_mse, argnums=1)(s, t)).max()) == 0.0


def _mlp_state(ema_decay=0.95):
    model = models.get("mlp", num_classes=3, width=16)
    state = consistency.init_state_fn(model, optax.adam(1e-2), ema_decay=ema_decay)(
        jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    # A teacher that differs from the student.
    state = state.replace(ema_params=jax.tree_util.tree_map(lambda p: 0.5 * p + 0.1,
                                                            state.ema_params))
    return model, state


def test_mean_teacher_no_gradient_into_the_teacher():
    model, state = _mlp_state()
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    x_l, x_a, x_b = (jax.random.normal(k, (5, 2)) for k in keys)
    y_l = jnp.array([0, 1, 2, 0, 1])

    def loss(params, teacher):
        return mean_teacher.mean_teacher_loss(params, state.replace(ema_params=teacher), x_l, y_l,
                                              x_a, x_b, weight=8.0)[0]

    g_teacher = jax.grad(loss, argnums=1)(state.params, state.ema_params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree_util.tree_leaves(g_teacher))
    # The student's gradient equals that of CE + w MSE to a constant teacher output.
    teacher_logits = model.apply({"params": state.ema_params}, x_b)

    def by_hand(params):
        f = lambda x: model.apply({"params": params}, x)  # noqa: E731
        ce = optax.softmax_cross_entropy_with_integer_labels(f(x_l), y_l).mean()
        diff = jax.nn.softmax(f(x_a)) - jax.nn.softmax(teacher_logits)
        return ce + 8.0 * jnp.mean(diff ** 2)

    np.testing.assert_allclose(float(loss(state.params, state.ema_params)),
                               float(by_hand(state.params)), rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                           jax.grad(loss)(state.params, state.ema_params),
                           jax.grad(by_hand)(state.params))


def test_pi_model_target_view_carries_no_gradient():
    model, state = _mlp_state()
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    x_l, x_a, x_b = (jax.random.normal(k, (4, 2)) for k in keys)
    y_l = jnp.array([0, 1, 2, 1])
    target = model.apply({"params": state.params}, x_b)  # a constant

    def by_hand(params):
        f = lambda x: model.apply({"params": params}, x)  # noqa: E731
        ce = optax.softmax_cross_entropy_with_integer_labels(f(x_l), y_l).mean()
        return ce + 3.0 * jnp.mean((jax.nn.softmax(f(x_a)) - jax.nn.softmax(target)) ** 2)

    loss = lambda p: pi_model.pi_model_loss(p, state, x_l, y_l, x_a, x_b, weight=3.0)[0]  # noqa
    np.testing.assert_allclose(float(loss(state.params)), float(by_hand(state.params)),
                               rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                           jax.grad(loss)(state.params), jax.grad(by_hand)(state.params))


def _config(name, **ssl_fields):
    c = get_base_config()
    c.ssl.name = name
    c.train.batch_size = 4
    c.ssl.unlabeled_ratio = 2
    for k, v in ssl_fields.items():
        c.ssl[k] = v
    return c


def _batch(key, n_l=4, n_u=8):
    k1, k2 = jax.random.split(key)
    return {"x_l": jax.random.normal(k1, (n_l, 2)), "y_l": jnp.arange(n_l) % 3,
            "x_u": jax.random.normal(k2, (n_u, 2))}


def test_mean_teacher_step_weight_and_teacher_ema():
    """One real step: w(0) = λ exp(-5); teacher' = α teacher + (1 - α) student'."""
    c = _config("mean_teacher", unlabeled_weight=8.0, teacher_ema=0.95, rampup_fraction=0.5)
    model = models.get("mlp", num_classes=3, width=16)
    alg = ssl.create(c, model, num_train_steps=100, flip=False)
    assert (alg.labeled_batch, alg.unlabeled_batch) == (4, 8)
    state = alg.init_state(jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    state = state.replace(ema_params=jax.tree_util.tree_map(lambda p: p + 0.3, state.ema_params))
    teacher_before = jax.tree_util.tree_map(np.asarray, state.ema_params)
    new, metrics = alg.train_step(state, _batch(jax.random.PRNGKey(1)), jax.random.PRNGKey(2))
    np.testing.assert_allclose(float(metrics["consistency_weight"]), 8 * math.exp(-5), rtol=1e-5)
    jax.tree_util.tree_map(
        lambda e, t, p: np.testing.assert_allclose(e, 0.95 * t + 0.05 * p, rtol=1e-5, atol=1e-7),
        new.ema_params, teacher_before, new.params)
    # Halfway through the ramp-up (step 25 of 50) the weight is λ exp(-1.25).
    new = new.replace(step=25)
    _, metrics = alg.train_step(new, _batch(jax.random.PRNGKey(3)), jax.random.PRNGKey(4))
    np.testing.assert_allclose(float(metrics["consistency_weight"]), 8 * math.exp(-1.25),
                               rtol=1e-5)
    assert alg.eval_variables(new)["params"] is new.ema_params  # the teacher is evaluated


def test_ema_update_arithmetic():
    state = create_train_state(TinyBN(), jax.random.PRNGKey(0), jnp.zeros((2, 4)),
                               optax.sgd(0.1), ema_decay=0.9)
    state = state.replace(ema_params=jax.tree_util.tree_map(jnp.zeros_like, state.params),
                          ema_batch_stats=jax.tree_util.tree_map(lambda v: v + 2.0,
                                                                 state.batch_stats))
    new = state.update_ema()
    jax.tree_util.tree_map(lambda e, p: np.testing.assert_allclose(e, 0.1 * p, rtol=1e-6),
                           new.ema_params, state.params)
    jax.tree_util.tree_map(
        lambda e, b: np.testing.assert_allclose(e, 0.9 * (b + 2.0) + 0.1 * b, rtol=1e-6),
        new.ema_batch_stats, state.batch_stats)


# ----------------------------------------------------------------- optimizer, EMA use


@pytest.mark.parametrize("name", ["fixmatch", "supervised", "pi_model", "mean_teacher"])
def test_weight_decay_touches_kernels_only(name):
    """With zero gradients, SGD(lr) + decay wd moves a kernel by -lr wd kernel and leaves
    biases, BatchNorm scales and BatchNorm shifts exactly where they were."""
    c = _config(name)
    c.train.optimizer, c.train.lr, c.train.momentum = "sgd", 0.5, 0.0
    c.train.weight_decay, c.train.schedule = 0.1, "constant"
    alg = ssl.create(c, TinyBN(), num_train_steps=10, flip=False)
    state = alg.init_state(jax.random.PRNGKey(0), jnp.zeros((2, 4)))
    state = state.replace(params=jax.tree_util.tree_map(lambda p: p + 1.0, state.params))
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    new = state.apply_gradients(grads=zeros)
    flat_old = jax.tree_util.tree_flatten_with_path(state.params)[0]
    flat_new = jax.tree_util.tree_leaves(new.params)
    names = []
    for (path, old), upd in zip(flat_old, flat_new):
        leaf = path[-1].key
        names.append(leaf)
        expected = old * (1 - 0.5 * 0.1) if leaf == "kernel" else old
        np.testing.assert_allclose(upd, expected, rtol=1e-6, err_msg=str(path))
    assert {"kernel", "bias", "scale"} <= set(names)


def test_fixmatch_reference_optimizer_and_ema():
    """SGD Nesterov 0.9, lr cos(7πk/16K), EMA 0.999 evaluated; checked on one real step."""
    c = _config("fixmatch", threshold=0.95, unlabeled_weight=1.0)
    c.train.optimizer, c.train.lr, c.train.momentum, c.train.nesterov = "sgd", 0.03, 0.9, True
    c.train.weight_decay, c.train.schedule, c.train.ema_decay = 5e-4, "fixmatch_cosine", 0.999
    schedule = optim.learning_rate_schedule("fixmatch_cosine", 0.03, 1000)
    np.testing.assert_allclose(float(schedule(1000)), 0.03 * math.cos(7 * math.pi / 16),
                               rtol=1e-6)
    alg = ssl.create(c, models.get("mlp", num_classes=3, width=16), num_train_steps=1000,
                     flip=False)
    state = alg.init_state(jax.random.PRNGKey(0), jnp.zeros((1, 2)))
    before = jax.tree_util.tree_map(np.asarray, state.params)
    new, metrics = alg.train_step(state, _batch(jax.random.PRNGKey(1)), jax.random.PRNGKey(2))
    assert set(metrics) >= {"loss", "supervised_loss", "unlabeled_loss", "mask_rate"}
    jax.tree_util.tree_map(
        lambda e, b, p: np.testing.assert_allclose(e, 0.999 * b + 0.001 * p, rtol=1e-5,
                                                   atol=1e-7),
        new.ema_params, before, new.params)
    assert alg.eval_variables(new)["params"] is new.ema_params


@pytest.mark.parametrize("name", ["supervised", "mean_teacher", "pi_model"])
def test_step_on_images_lowers_the_loss_on_a_fixed_batch(name):
    """20 real steps on one batch of 8x8x1 images (weak views on device): the loss falls.
    (FixMatch's image step, with RandAugment, runs in tests/test_ssl_training.py.)"""
    c = _config(name, unlabeled_weight=1.0, rampup_fraction=0.0)
    c.train.optimizer, c.train.lr = "adam", 1e-2
    alg = ssl.create(c, models.get("mlp", num_classes=3, width=32), num_train_steps=20)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    batch = {"x_l": jax.random.uniform(keys[0], (4, 8, 8, 1)), "y_l": jnp.array([0, 1, 2, 0]),
             "x_u": jax.random.uniform(keys[1], (8, 8, 8, 1))}
    state = alg.init_state(keys[2], batch["x_l"][:1])
    losses = []
    for i in range(20):
        state, metrics = alg.train_step(state, batch, jax.random.PRNGKey(i))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 20 and np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
