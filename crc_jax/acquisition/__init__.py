"""Acquisition strategies, chosen by name.

`get(name, **options)` returns `strategy(ctx, budget, key) -> np.ndarray` of `budget`
distinct indices from `ctx.unlabeled`. A spec string "crc:subset=all,group_size=5"
names a strategy with options (see `parse_spec`), so that sweeps are plain lists.
"""

from __future__ import annotations

import ast

from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import STRATEGIES

# Importing the modules registers their strategies.
from crc_jax.acquisition import (  # noqa: F401,E402
    badge, bald, baseline, coreset, crc, crc_greedy, crc_infinite, egl, probcover, typiclust)

__all__ = ["Context", "check_budget", "get", "names", "parse_spec", "STRATEGIES"]


def names() -> list[str]:
    return STRATEGIES.names()


def parse_spec(spec: str) -> tuple[str, dict]:
    """'crc:subset=all,group_size=5' -> ('crc', {'subset': 'all', 'group_size': 5})."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"bad strategy option {item!r} in {spec!r}; expected key=value")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return name.strip(), options


def get(name: str, **options):
    """The strategy callable for a registered name (or spec string), with options."""
    base, spec_options = parse_spec(name)
    return STRATEGIES.get(base, **{**options, **spec_options})
