"""train.steps_per_dispatch: K steps in one jitted lax.scan train the model K calls would.

Step i of a chunk gets the batch and key of step i one call at a time, and the state
threads through the scan, so the result differs only where XLA compiles the step's body
inside the loop differently (float sums grouped otherwise). On this CPU the trained
parameters come out within float32 rounding of the one-step-a-call run; the tests allow
that and no more.
"""

import jax
import numpy as np
import pytest

from crc_jax import data, models, ssl
from crc_jax.errors import ConfigError
from crc_jax import config as config_lib
from crc_jax.train import fit
from experiments.configs.base import get_base_config


def max_rel_diff(a, b) -> float:
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        worst = max(worst, float(np.max(np.abs(x - y)) / (np.max(np.abs(y)) + 1e-12)))
    return worst


def fit_twice(algorithm, kwargs, *, steps_per_epoch: int, k: int, **fit_options):
    """(one step per call, K steps per call) fits of the same algorithm and data."""
    results = []
    for per_call in (1, k):
        tc = kwargs["train_config"]
        tc.steps_per_epoch, tc.steps_per_dispatch = steps_per_epoch, per_call
        results.append(fit(algorithm, **kwargs, **fit_options))
    return results


@pytest.mark.parametrize("ssl_name, feed", [("fixmatch", "host"), ("fixmatch", "device"),
                                            ("mean_teacher", "host"), ("supervised", "host")])
def test_chunks_of_steps_train_the_same_model(ssl_name, feed, moons_fit):
    algorithm, kwargs = moons_fit(ssl_name, epochs=2, labeled=10, unlabeled=True, watch=64, seed=3)
    # 7 steps an epoch in chunks of 3: two chunks, then one step alone
    one, chunked = fit_twice(algorithm, kwargs, steps_per_epoch=7, k=3, feed=feed)
    assert int(chunked.state.step) == int(one.state.step) == 14
    np.testing.assert_allclose([r["loss"] for r in chunked.history],
                               [r["loss"] for r in one.history], rtol=1e-5)
    assert max_rel_diff(chunked.state.params, one.state.params) < 1e-5
    assert max_rel_diff(chunked.state.ema_params, one.state.ema_params) < 1e-5
    assert chunked.test_accuracy == pytest.approx(one.test_accuracy, abs=1 / 64 + 1e-9)


def test_chunks_with_batchnorm_and_augmentation_train_the_same_cnn():
    """A CNN with BatchNorm on 8x8 digits, FixMatch's RandAugment in every step."""
    ds = data.load("digits")
    c = get_base_config()
    c.ssl.name, c.ssl.unlabeled_ratio, c.ssl.threshold = "fixmatch", 2, 0.3
    c.train.batch_size, c.train.max_epochs, c.train.patience, c.train.progress = 8, 1, 0, False
    c.train.ema_decay = 0.9
    model = models.get("cnn", num_classes=10, width=4, dense_width=8)
    algorithm = ssl.create(c, model, num_train_steps=8, flip=False)
    kwargs = dict(x_labeled=ds.x_train[:20], y_labeled=ds.y_train[:20], x_unlabeled=ds.x_train[20:200],
                  watch=(ds.x_test[:50], ds.y_test[:50]), test=(ds.x_test[:50], ds.y_test[:50]),
                  train_config=c.train, key=jax.random.PRNGKey(1),
                  eval_apply=lambda v, x: model.apply(v, x, train=False))
    one, chunked = fit_twice(algorithm, kwargs, steps_per_epoch=4, k=4)
    assert max_rel_diff(chunked.state.params, one.state.params) < 1e-5
    assert max_rel_diff(chunked.state.batch_stats, one.state.batch_stats) < 1e-5
    np.testing.assert_allclose(chunked.history[0]["loss"], one.history[0]["loss"], rtol=1e-5)


def test_chunks_differ_from_a_different_run(moons_fit):
    """The comparison above can fail: another seed's fit is far outside its tolerance."""
    algorithm, kwargs = moons_fit("fixmatch", epochs=2, labeled=10, unlabeled=True, watch=64, seed=3)
    one, _ = fit_twice(algorithm, kwargs, steps_per_epoch=7, k=1)
    kwargs["key"] = jax.random.PRNGKey(4)
    other = fit(algorithm, **kwargs)
    assert max_rel_diff(other.state.params, one.state.params) > 1e-3


def test_before_step_runs_once_per_step(moons_fit):
    algorithm, kwargs = moons_fit("supervised", epochs=2, labeled=10, unlabeled=False, watch=16,
                                  seed=0)
    calls = []
    kwargs["train_config"].steps_per_epoch, kwargs["train_config"].steps_per_dispatch = 5, 2
    fit(algorithm, before_step=lambda: calls.append(1), **kwargs)
    assert len(calls) == 10


@pytest.mark.parametrize("value", [0, -1])
def test_config_check_rejects_a_bad_steps_per_dispatch(value):
    c = get_base_config()
    c.train.steps_per_dispatch = value
    with pytest.raises(ConfigError, match="train.steps_per_dispatch"):
        config_lib.validate(c)


def test_a_run_dir_made_before_the_field_still_matches_the_config():
    from crc_jax.run.rundir import comparable_config

    now = get_base_config().to_dict()
    before = get_base_config().to_dict()
    del before["train"]["steps_per_dispatch"]
    assert comparable_config(before) == comparable_config(now)
    now["train"]["steps_per_dispatch"] = 8
    assert comparable_config(before) == comparable_config(now)
