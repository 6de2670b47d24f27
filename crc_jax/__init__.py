"""crc_jax: active semi-supervised learning with Convergence Rate Control (CRC) in JAX/Flax.

Importing the package is cheap: TensorFlow, TFDS and neural-tangents are imported
lazily by the modules that need them. It sets one XLA:CPU default before JAX's backend
starts (YNNPACK fusion off; crc_jax.xla_env says when and why; CRC_JAX_XLA_DEFAULTS=0
turns it off).
"""

from crc_jax import xla_env as _xla_env

_xla_env.apply_cpu_defaults()

__version__ = "0.1.0"
