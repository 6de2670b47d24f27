"""crc_jax: active semi-supervised learning with Convergence Rate Control (CRC) in JAX/Flax.

Importing the package is cheap: TensorFlow, TFDS and neural-tangents are imported
lazily by the modules that need them, and come with the extras `tfds` and `infinite`
(crc_jax.runtime.extras). It sets one XLA:CPU default before JAX's backend starts (YNNPACK
fusion off: measured slower on the CPUs tried; crc_jax.runtime.xla_env says when and why;
CRC_JAX_XLA_DEFAULTS=0 keeps XLA's default).
"""

from crc_jax.runtime import xla_env as _xla_env

_xla_env.apply_cpu_defaults()

# The one place the version lives: pyproject.toml reads it (dynamic version), `crc-jax
# --version` and `python -m experiments.main --version` print it; CHANGELOG.md has its notes.
__version__ = "0.1.0"
