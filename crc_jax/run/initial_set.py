"""Step 0's labeled set as the config asks: al.initial_rule (crc_jax/data/initial_sets.py;
the fields are checked in crc_jax.config).

`random` (the default) is the paper's class-balanced draw; `spread` (with
al.initial_margin_quantile), `near_duplicate` and `indices` (al.initial_indices) place the
start by a stated rule. The trial's generator comes from (seed, trial), so every strategy of
a trial starts from the same set, and a rerun from the same one.
"""

from __future__ import annotations

import numpy as np

from crc_jax.data import initial_sets
from crc_jax.errors import ConfigError


def choose(config, pool_x: np.ndarray, pool_y: np.ndarray, num_classes: int,
           rng: np.random.Generator) -> np.ndarray:
    """The Q0 pool indices of step 0 by config.al.initial_rule (nothing is labeled here)."""
    al = config.al
    rule, indices, quantile = al.initial_rule, tuple(al.initial_indices), al.initial_margin_quantile
    try:
        return initial_sets.RULES.factory(rule)(pool_x, pool_y, num_classes, config.al.initial_size,
                                            rng, margin_quantile=quantile, indices=indices)
    except ValueError as err:
        field = "al.initial_indices" if rule == "indices" else "al.initial_rule"
        raise ConfigError(field, f"{rule!r}: {err}") from None
