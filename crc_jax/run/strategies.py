"""A run's strategies: the config's defaults handed to the library's one strategy entry.

`acquisition.from_spec` owns parsing, option checks and precedence (an option written in
the spec wins); this module only says which config fields are a strategy's defaults.
"""

from __future__ import annotations

from crc_jax import acquisition
from crc_jax.errors import ConfigError


def strategy_defaults(config, name: str) -> dict:
    """Defaults for strategy `name`: the config's acquisition.<name> fields, and for a
    strategy registered with a group size, al.group_size. The two places may not both set
    a group size that disagree (ConfigError), so neither silently overwrites the other."""
    own = dict(config.acquisition.get(name, {}))
    if acquisition.STRATEGIES.traits(name).get("group_size"):
        g = config.al.group_size
        if own.get("group_size", g) != g:
            raise ConfigError(f"acquisition.{name}.group_size",
                              f"{own['group_size']} disagrees with al.group_size ({g}); set "
                              "one of them (or write it in the spec, e.g. 'crc:group_size=10')")
        own["group_size"] = g
    return own


def build(config, spec: str) -> acquisition.Strategy:
    """The strategy of `spec` as this config runs it (pseudo-AL: class-balanced)."""
    try:
        name, _ = acquisition.parse_spec(spec)
        defaults = strategy_defaults(config, name) if name in acquisition.STRATEGIES else {}
        return acquisition.from_spec(spec, defaults, class_balanced=bool(config.al.pseudo_al))
    except acquisition.SpecError as err:
        raise ConfigError("strategies", str(err)) from None
