"""The models' dropout option: inactive without a "dropout" PRNG stream (evaluation), an
unbiased random mask with one (MC dropout), used by the supervised, FixMatch, Π-model and
Mean Teacher train steps, and checked by the config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crc_jax import models, ssl
from crc_jax import config as config_lib
from crc_jax.errors import ConfigError
from experiments.configs.base import get_base_config

X = np.random.default_rng(0).normal(size=(6, 8, 8, 1)).astype(np.float32)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_dropout_only_with_a_dropout_stream_and_unbiased(name):
    plain = models.get(name, num_classes=3, width=4)
    dropped = models.get(name, num_classes=3, width=4, dropout=0.5)
    v = plain.init(jax.random.PRNGKey(0), X[:1])
    assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(
        dropped.init(jax.random.PRNGKey(0), X[:1]))                      # no new parameters
    eval_logits = np.asarray(plain.apply(v, X))
    np.testing.assert_allclose(dropped.apply(v, X), eval_logits, rtol=1e-6)  # no stream: off

    def mc(key):
        return dropped.apply(v, X, rngs={"dropout": key})

    a, b = mc(jax.random.PRNGKey(1)), mc(jax.random.PRNGKey(2))
    np.testing.assert_array_equal(a, mc(jax.random.PRNGKey(1)))
    assert np.abs(np.asarray(a - b)).max() > 1e-3
    # the head is linear in the dropped features and E[mask / (1 - p)] = 1
    mean = np.asarray(jax.jit(jax.vmap(mc))(jax.random.split(jax.random.PRNGKey(3), 3000))).mean(0)
    scale = np.abs(eval_logits).max()
    np.testing.assert_allclose(mean, eval_logits, atol=0.1 * scale)


def test_wrn_dropout_default_is_the_papers():
    assert models.get("wrn28_2", num_classes=10).dropout == 0.0
    with pytest.raises(ValueError, match="dropout"):
        models.get("mlp", num_classes=3, dropout=1.0)


@pytest.mark.parametrize("ssl_name", ["supervised", "fixmatch", "pi_model", "mean_teacher"])
def test_train_steps_draw_dropout_masks(ssl_name):
    c = get_base_config()
    c.ssl.name = ssl_name
    c.train.augment = False
    c.train.batch_size = 4
    c.ssl.unlabeled_ratio = 1

    algorithms = {rate: ssl.create(c, models.get("mlp", num_classes=3, width=8, dropout=rate),
                                   num_train_steps=10, flip=False) for rate in (0.0, 0.5)}

    def one_step(rate, key):   # one compile per rate: the algorithms are built once
        algorithm = algorithms[rate]
        state = algorithm.init_state(jax.random.PRNGKey(0), X[:1])
        batch = {"x_l": jnp.asarray(X[:4]), "y_l": jnp.array([0, 1, 2, 0]),
                 "x_u": jnp.asarray(X[2:6])}
        state, _ = algorithm.train_step(state, batch, key)
        return jax.tree_util.tree_leaves(state.params)[0]

    if ssl_name != "fixmatch":   # without augmentation the key only feeds dropout
        np.testing.assert_array_equal(one_step(0.0, jax.random.PRNGKey(1)),
                                      one_step(0.0, jax.random.PRNGKey(2)))
    first = one_step(0.5, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(first, one_step(0.5, jax.random.PRNGKey(1)))
    assert not np.array_equal(first, one_step(0.5, jax.random.PRNGKey(2)))
    assert not np.array_equal(first, one_step(0.0, jax.random.PRNGKey(1)))


def test_config_checks_dropout_and_bald(monkeypatch):
    c = get_base_config()
    c.strategies = ("random", "bald")
    with pytest.raises(ConfigError, match="strategies.*bald.*model.dropout"):
        config_lib.validate(c)
    c.model.dropout = 0.3
    config_lib.validate(c)
    c.ssl.name = "mean_teacher"
    config_lib.validate(c)          # Mean Teacher trains with dropout too
    # an algorithm registered without the dropout trait is refused with a dropout rate
    ssl.names()
    monkeypatch.setitem(ssl.ALGORITHMS._traits, "mean_teacher", {})
    with pytest.raises(ConfigError, match="model.dropout.*fixmatch, pi_model, supervised"):
        config_lib.validate(c)
    c.ssl.name = "supervised"
    c.model.dropout = 1.5
    with pytest.raises(ConfigError, match=r"model.dropout.*\[0, 1\)"):
        config_lib.validate(c)
