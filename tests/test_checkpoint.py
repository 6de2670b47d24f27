"""Checkpoints inside training: a crash mid-fit resumes to the bit-identical result."""

import jax
import numpy as np
import pytest

from crc_jax import data, models, ssl
from crc_jax.run.checkpoint import TrainCheckpointer
from crc_jax.errors import RunDirError
from crc_jax.train import fit
from experiments.configs.base import get_base_config


class Crash(RuntimeError):
    pass


def setup():
    config = get_base_config()
    config.dataset.name = "moons"
    config.model.name = "mlp"
    config.train.max_epochs = 6
    config.train.steps_per_epoch = 3
    config.train.patience = 0
    config.train.batch_size = 8
    config.train.progress = False
    config.train.ema_decay = 0.9
    ds = data.load("moons")
    model = models.get("mlp", num_classes=2, width=16)
    algorithm = ssl.create(config, model, num_train_steps=18, flip=False)
    eval_apply = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    kwargs = dict(x_labeled=ds.x_train[:12], y_labeled=ds.y_train[:12],
                  x_unlabeled=ds.x_train[12:], watch=(ds.x_test[:100], ds.y_test[:100]),
                  test=(ds.x_test, ds.y_test), train_config=config.train,
                  key=jax.random.PRNGKey(3), eval_apply=eval_apply)
    return algorithm, kwargs


def crashing(algorithm, after_steps):
    calls = {"n": 0}

    def step(state, batch, key):
        calls["n"] += 1
        if calls["n"] > after_steps:
            raise Crash()
        return algorithm.train_step(state, batch, key)

    return algorithm.__class__(**{**algorithm.__dict__, "train_step": step})


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("crash_after", [7, 14])
def test_resume_inside_training_is_bit_identical(tmp_path, crash_after):
    algorithm, kwargs = setup()
    reference = fit(algorithm, **kwargs)

    ckpt = TrainCheckpointer(tmp_path / "ckpt", every=2, fingerprint="x")
    with pytest.raises(Crash):
        fit(crashing(algorithm, crash_after), checkpointer=ckpt, **kwargs)
    ckpt.close()
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved and len(saved) <= 2  # the last two are kept

    ckpt = TrainCheckpointer(tmp_path / "ckpt", every=2, fingerprint="x")
    resumed = fit(algorithm, checkpointer=ckpt, **kwargs)
    ckpt.close()
    assert resumed.history == reference.history
    assert resumed.test_accuracy == reference.test_accuracy
    for a, b in zip(leaves(resumed.state.params) + leaves(resumed.variables),
                    leaves(reference.state.params) + leaves(reference.variables)):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_from_another_config_is_refused(tmp_path):
    algorithm, kwargs = setup()
    ckpt = TrainCheckpointer(tmp_path / "ckpt", every=1, fingerprint="a")
    with pytest.raises(Crash):
        fit(crashing(algorithm, 4), checkpointer=ckpt, **kwargs)
    ckpt.close()
    other = TrainCheckpointer(tmp_path / "ckpt", every=1, fingerprint="b")
    with pytest.raises(RunDirError, match="another config"):
        fit(algorithm, checkpointer=other, **kwargs)
