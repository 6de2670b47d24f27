"""crc_jax: active semi-supervised learning with Convergence Rate Control (CRC) in JAX/Flax.

Importing the package is cheap: TensorFlow, TFDS and neural-tangents are imported
lazily by the modules that need them, and come with the extras `tfds` and `infinite`
(crc_jax.extras).
"""

# The one place the version lives: pyproject.toml reads it (dynamic version), `crc-jax
# --version` and `python -m experiments.main --version` print it; CHANGELOG.md has its notes.
__version__ = "0.1.0"
