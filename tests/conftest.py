"""Shared test setup: quiet TensorFlow, fast XLA compiles on CPU, a seeded NumPy generator."""

import os

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
