"""Shared test setup: quiet TensorFlow, fast XLA compiles on CPU, a seeded NumPy generator."""

import os
from pathlib import Path

# One persistent XLA compilation cache for the run, which the commands the tests start
# inherit: the suite compiles the same small programs in hundreds of tests and processes
# (a third of its CPU time). The cache key holds XLA_FLAGS, jaxlib and the program, so a
# hit is the executable a compile would give. `make test` starts it empty; a bare pytest
# keeps it. An entry a killed process left half-written is read as a miss (JAX warns and
# compiles; the warning is filtered here and in pyproject.toml).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / ".xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("PYTHONWARNINGS", "ignore:Error reading persistent compilation cache entry")

import crc_jax  # noqa: E402, F401  (first: its XLA:CPU default, YNNPACK fusion off; crc_jax.runtime.xla_env)

# Both must be set before TensorFlow or JAX is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests run tiny shapes, so XLA's LLVM optimization costs far more than it saves: at the
# default level one jax.random.normal compile takes ~1 CPU-second here, at level 0 ~0.1 s.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import flax.linen as nn  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def np_rng() -> np.random.Generator:
    return np.random.default_rng(0)


class TinyCNN(nn.Module):
    """The small model of the NTK/acquisition/CRC tests: Conv (kernel + bias), BatchNorm,
    Dense, and the final Dense "head" (the model contract: `return_features` gives the
    head's input, the penultimate features)."""

    num_classes: int = 3
    width: int = 8
    conv_features: int = 2

    @nn.compact
    def __call__(self, x, train=False, return_features=False):
        x = nn.relu(nn.Conv(self.conv_features, (3, 3))(x))
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = x.reshape(x.shape[0], -1)
        h = nn.tanh(nn.Dense(self.width)(x))
        logits = nn.Dense(self.num_classes, name="head")(h)
        return (logits, h) if return_features else logits


@pytest.fixture(scope="session")
def tiny_cnn():
    """TinyCNN(num_classes=..., width=..., conv_features=...) for fixture-style tests."""
    return TinyCNN


@pytest.fixture(scope="session")
def moons_fit():
    """moons_fit(ssl_name, epochs=, labeled=, unlabeled=, watch=, seed=) -> (algorithm,
    fit kwargs): a tiny two-moons fit (MLP of width 16, 3 steps per epoch, batch 8)."""
    import jax

    from crc_jax import data, models, ssl
    from experiments.configs.base import get_base_config

    def make(ssl_name="supervised", *, epochs, labeled, unlabeled, watch, seed):
        config = get_base_config()
        config.ssl.name = ssl_name
        config.train.max_epochs, config.train.steps_per_epoch = epochs, 3
        config.train.patience, config.train.batch_size, config.train.progress = 0, 8, False
        ds = data.load("moons")
        model = models.get("mlp", num_classes=2, width=16)
        algorithm = ssl.create(config, model, num_train_steps=3 * epochs, flip=False)
        kwargs = dict(x_labeled=ds.x_train[:labeled], y_labeled=ds.y_train[:labeled],
                      x_unlabeled=ds.x_train[labeled:] if unlabeled else None,
                      watch=(ds.x_test[:watch], ds.y_test[:watch]), test=(ds.x_test, ds.y_test),
                      train_config=config.train, key=jax.random.PRNGKey(seed),
                      eval_apply=lambda v, x: model.apply(v, x, train=False))
        return algorithm, kwargs

    return make


def tiny_digits(**overrides):
    """The digits config shrunk to seconds: a narrow CNN, 2 epochs of 2 steps."""
    from experiments.configs import digits
    from experiments.configs.base import set_fields

    c = digits.get_config()
    c.trials = 2
    c.strategies = ("random", "entropy")
    c.model.width = 4
    c.train.max_epochs = 2
    c.train.steps_per_epoch = 2
    c.train.patience = 0
    c.train.batch_size = 16
    c.train.progress = False
    c.al.steps = 1
    return set_fields(c, overrides)


def run_loop(config, workdir):
    """crc_jax.run.loop.run as experiments.main runs it: the config checked and its
    strategies built first (crc_jax.config.validate)."""
    from crc_jax import config as config_lib
    from crc_jax.run import loop

    return loop.run(config, workdir, config_lib.validate(config))


@pytest.fixture(autouse=True)
def _root_logging_restored():
    """Each test starts with the root logger as the previous one found it: an entry point
    called in-process (its logging set-up) must not change what a later test captures."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
