"""The strategy registry (its own module so strategy modules can import it without cycles)."""

from crc_jax.registry import Registry

STRATEGIES = Registry("strategy")
register = STRATEGIES.register
