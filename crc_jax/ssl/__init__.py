"""Semi-supervised algorithms by name (config.ssl.name).

An algorithm is a loss plus a jitted train step over a `TrainState`; it knows nothing
of acquisition. `create(config, model, num_train_steps=..., flip=...)` returns an
`Algorithm` (see `crc_jax.ssl.base`); `flip`: horizontal flips in the image views (off for
digits and text, the data set's `flip`).
"""

from crc_jax.ssl.base import ALGORITHMS, Algorithm

__all__ = ["ALGORITHMS", "Algorithm", "create", "names"]


def _import_all():
    from crc_jax.ssl import fixmatch, mean_teacher, pi_model, supervised  # noqa: F401  (registration)


def names(trait: str | None = None) -> list[str]:
    """Registered algorithm names (with `trait`: those registered with it, e.g. "dropout")."""
    _import_all()
    return ALGORITHMS.names(trait)


def create(config, model, **kwargs) -> Algorithm:
    _import_all()
    return ALGORITHMS.get(config.ssl.name, config=config, model=model, **kwargs)
