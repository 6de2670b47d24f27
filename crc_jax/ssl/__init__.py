"""Semi-supervised algorithms by name (config.ssl.name).

An algorithm is a loss plus a jitted train step over a `TrainState`; it knows nothing
of acquisition. `create(config, model, num_train_steps=..., dataset=...)` returns an
`Algorithm` (see `crc_jax.ssl.base`).
"""

from crc_jax.ssl.base import ALGORITHMS, Algorithm

__all__ = ["ALGORITHMS", "Algorithm", "create", "names"]

# Algorithms planned but not implemented yet: config validation says "not available
# yet" for these instead of "unknown". Every planned algorithm has landed.
PLANNED: tuple = ()


def _import_all():
    import importlib

    for module in ("supervised", "fixmatch", "mean_teacher", "pi_model"):
        try:
            importlib.import_module(f"crc_jax.ssl.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"crc_jax.ssl.{module}":
                raise


def names() -> list[str]:
    _import_all()
    return ALGORITHMS.names()


def create(config, model, **kwargs) -> Algorithm:
    _import_all()
    return ALGORITHMS.get(config.ssl.name, config=config, model=model, **kwargs)
