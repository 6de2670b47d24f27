"""Step 0's labeled set as the config asks: al.initial_rule (crc_jax/data/initial_sets.py).

`random` (the default) is the paper's class-balanced draw; `spread` (with
al.initial_margin_quantile), `near_duplicate` and `indices` (al.initial_indices) place the
start by a stated rule. The trial's generator comes from (seed, trial), so every strategy of
a trial starts from the same set, and a rerun from the same one.
"""

from __future__ import annotations

import numpy as np

from crc_jax.data import initial_sets
from crc_jax.errors import ConfigError


def _fields(config) -> tuple[str, tuple, float]:
    al = config.al
    return (al.get("initial_rule", "random"), tuple(al.get("initial_indices", ())),
            al.get("initial_margin_quantile", 0.0))


def check_config(config) -> None:
    """ConfigError naming the field when the initial-set fields do not fit together."""
    rule, indices, quantile = _fields(config)
    if rule not in initial_sets.names():
        raise ConfigError("al.initial_rule", f"{rule!r} is not one of: "
                                             f"{', '.join(initial_sets.names())}")
    if rule != "random" and (config.al.initial_model != "per_trial"
                             or config.al.first_query != "trained"):
        raise ConfigError("al.initial_rule", f"{rule!r} places each trial's own initial set: it "
                          "needs al.initial_model='per_trial' and al.first_query='trained'")
    if indices and rule != "indices":
        raise ConfigError("al.initial_indices", f"is used only with al.initial_rule='indices' "
                                                f"(got {rule!r})")
    if rule == "indices" and (len(indices) != config.al.initial_size
                              or not all(isinstance(i, int) and not isinstance(i, bool)
                                         and i >= 0 for i in indices)
                              or len(set(indices)) != len(indices)):
        raise ConfigError("al.initial_indices", f"needs al.initial_size ({config.al.initial_size}) "
                          f"distinct pool indices >= 0, got {list(indices)!r}")
    if (isinstance(quantile, bool) or not isinstance(quantile, (int, float))
            or not 0.0 <= quantile < 1.0):
        raise ConfigError("al.initial_margin_quantile", f"must be a number in [0, 1), got {quantile!r}")
    if quantile and rule != "spread":
        raise ConfigError("al.initial_margin_quantile", f"is used only with al.initial_rule='spread' "
                                                        f"(got {rule!r})")


def check_pool(config, pool_size: int) -> None:
    """al.initial_indices must lie in the pool (checked once the data are loaded)."""
    rule, indices, _ = _fields(config)
    if rule == "indices" and indices and max(indices) >= pool_size:
        raise ConfigError("al.initial_indices", f"indices must lie in [0, {pool_size}) (the pool "
                          f"of {config.dataset.name}), got {max(indices)}")


def choose(config, pool_x: np.ndarray, pool_y: np.ndarray, num_classes: int,
           rng: np.random.Generator) -> np.ndarray:
    """The Q0 pool indices of step 0 by config.al.initial_rule (nothing is labeled here)."""
    rule, indices, quantile = _fields(config)
    try:
        return initial_sets.RULES.factory(rule)(pool_x, pool_y, num_classes, config.al.initial_size,
                                            rng, margin_quantile=quantile, indices=indices)
    except ValueError as err:
        field = "al.initial_indices" if rule == "indices" else "al.initial_rule"
        raise ConfigError(field, f"{rule!r}: {err}") from None
