"""crc_jax: active semi-supervised learning with Convergence Rate Control (CRC) in JAX/Flax.

Importing the package is cheap: TensorFlow, TFDS and neural-tangents are imported
lazily by the modules that need them.
"""

__version__ = "0.1.0"
