"""What a researcher runs: experiments.main, configs, report, figures, benchmarks.

Importing crc_jax first gives every `python -m experiments....` entry point crc_jax's
XLA:CPU default (YNNPACK fusion off) before JAX's backend starts (crc_jax.runtime.xla_env).
"""

import crc_jax  # noqa: F401
