"""Shared test setup: quiet TensorFlow, fast XLA compiles on CPU, a seeded NumPy generator."""

import os

# Both must be set before TensorFlow or JAX is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests run tiny shapes, so XLA's LLVM optimization costs far more than it saves: at the
# default level one jax.random.normal compile takes ~1 CPU-second here, at level 0 ~0.1 s.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_backend_optimization_level=0").strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def np_rng() -> np.random.Generator:
    return np.random.default_rng(0)
