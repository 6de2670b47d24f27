"""The strategy registry (its own module so strategy modules can import it without cycles)."""

from typing import Any

from crc_jax.registry import Registry

STRATEGIES: Registry[Any] = Registry("strategy")
register = STRATEGIES.register
