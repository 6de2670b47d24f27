"""Acquisition strategies, chosen by name, and the one entry every caller uses.

    strategy = acquisition.from_spec("crc:subset=all", {"group_size": 5})
    picked = acquisition.select(strategy, ctx, budget, key)

A strategy is registered under a name (crc_jax.acquisition.registry) with the traits
callers rely on; `from_spec` validates a spec's options once and builds it; `select`
runs it and checks what it returns (crc_jax.acquisition.spec). A strategy callable is
`fn(ctx, budget, key) -> indices` of `budget` distinct entries of `ctx.unlabeled`.
"""

from __future__ import annotations

from crc_jax.acquisition.context import Context, check_budget, model_context
from crc_jax.acquisition.registry import STRATEGIES
from crc_jax.acquisition.spec import SpecError, Strategy, from_spec, parse_spec, select

# Importing the modules registers their strategies: one line per strategy module (CRC's
# three register in crc_jax.acquisition.crc).
from crc_jax.acquisition import (  # noqa: F401,E402
    badge, bald, baseline, coreset, crc, egl, probcover, typiclust)

__all__ = ["Context", "STRATEGIES", "SpecError", "Strategy", "check_budget", "from_spec",
           "model_context", "names", "parse_spec", "select"]


def names() -> list[str]:
    return STRATEGIES.names()
