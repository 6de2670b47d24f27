"""The one way in: build a strategy from its spec, then select with it.

    strategy = from_spec("crc:subset=all", {"group_size": 5})   # options checked here, once
    strategy.check_budget(10)                                   # a budget it can fill
    picked = select(strategy, ctx, 10, key)                     # validated pool indices

crc_jax.config.validate builds every strategy of a run (and of each `crc-jax` round) with
`from_spec` and checks its budgets once, where the config enters; the built Strategy is
passed down to `select`, so an option means the same everywhere and is checked once.

A spec is "name" or "name:key=value,key=value" (values read as Python literals, else kept
as strings), so sweeps are plain lists of strings.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np

from crc_jax.acquisition.context import Context
from crc_jax.acquisition.per_class import per_class
from crc_jax.acquisition.registry import STRATEGIES


class SpecError(ValueError):
    """A strategy spec that cannot run as written; the message names the spec and what is
    allowed."""


def parse_spec(spec: str) -> tuple[str, dict]:
    """'crc:subset=all,group_size=5' -> ('crc', {'subset': 'all', 'group_size': 5})."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(f"a strategy spec must be a non-empty string, got {spec!r}")
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise SpecError(f"bad strategy option {item!r} in {spec!r}; expected key=value")
        if key in options:
            raise SpecError(f"{spec!r} sets {key!r} twice")
        try:
            options[key] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key] = value.strip()
    return name.strip(), options


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A strategy built from a spec: its name, the options its factory was called with
    (after precedence), the traits it was registered with, and the callable
    `fn(ctx, budget, key) -> indices`."""

    spec: str
    name: str
    options: dict
    traits: dict
    fn: Callable

    @property
    def group_size(self) -> int | None:
        """G of a group-size strategy (None: one group is the whole budget); None otherwise."""
        return self.options.get("group_size") if self.traits.get("group_size") else None

    def check_budget(self, budget: int) -> None:
        """SpecError unless the strategy can fill `budget` (a group size dividing it, enough
        groups, one class-balanced group being the whole budget)."""
        if not self.traits.get("group_size"):
            return
        g = self.group_size or budget
        if budget % g:
            raise SpecError(f"{self.spec!r}: group_size {g} must divide the budget ({budget})")
        max_groups = self.options.get("max_groups")
        if max_groups is not None and max_groups < budget // g:
            raise SpecError(f"{self.spec!r}: max_groups={max_groups} leaves fewer than the "
                            f"{budget // g} groups of {g} a budget of {budget} needs")
        if self.options.get("class_balanced") and g != budget:
            raise SpecError(f"{self.spec!r}: a class-balanced group is the whole budget: "
                            f"group_size must equal {budget}")

    def __call__(self, ctx: Context, budget: int, key) -> np.ndarray:
        return self.fn(ctx, budget, key)


def options_of(name: str) -> dict[str, inspect.Parameter]:
    """The options a registered strategy takes (its factory's keyword parameters)."""
    return dict(inspect.signature(STRATEGIES.factory(name)).parameters)


def from_spec(spec: str, defaults: Mapping[str, Any] | None = None, *,
              class_balanced: bool = False) -> Strategy:
    """Parse `spec`, validate every option, and build the strategy.

    The options every group-size strategy takes (group_size, max_groups: positive
    integers) are checked here; a factory checks its own and raises ValueError.

    Precedence, the one rule: an option written in the spec wins over `defaults`, which
    win over the factory's own defaults. `defaults` may hold options of many strategies
    (a config's shared settings, e.g. group_size); only those this strategy takes are used.

    class_balanced=True is the pseudo-AL setting (paper Table 3): a strategy registered
    with the trait class_balanced builds class-balanced groups itself; any other is run
    once per class on that class's unlabeled images (crc_jax.acquisition.per_class).

    Raises SpecError naming the spec for an unknown strategy or option, an option of the
    wrong type, or a value the factory refuses.
    """
    name, written = parse_spec(spec)
    if name not in STRATEGIES:
        raise SpecError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES.names())}")
    params = options_of(name)
    for key, value in written.items():
        if key not in params:
            known = ", ".join(params) or "none"
            raise SpecError(f"{spec!r}: {name} has no option {key!r} (its options: {known})")
        if isinstance(params[key].default, bool) and not isinstance(value, bool):
            raise SpecError(f"{spec!r}: {key} must be True or False, got {value!r}")
    traits = STRATEGIES.traits(name)
    if traits.get("group_size"):
        for key in ("group_size", "max_groups"):
            value = written.get(key, (defaults or {}).get(key))
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value <= 0):
                raise SpecError(f"{spec!r}: {name} {key} must be a positive integer, got {value!r}")
    options = {k: v for k, v in (defaults or {}).items() if k in params}
    balances_itself = bool(traits.get("class_balanced"))
    if class_balanced and balances_itself:
        options["class_balanced"] = True
    options.update(written)
    try:
        fn = STRATEGIES.get(name, **options)
    except (TypeError, ValueError) as err:
        raise SpecError(f"{spec!r}: {err}") from None
    if class_balanced and not balances_itself:
        fn = per_class(fn)
    return Strategy(spec=spec, name=name, options=options, traits=traits, fn=fn)


def select(strategy: Strategy, ctx: Context, budget: int, key) -> np.ndarray:
    """Run `strategy` for `budget` images of `ctx.unlabeled`; the indices, checked.

    The strategy and its budget were checked where they entered (crc_jax.config.validate),
    so this trusts them; a strategy that returns anything but `budget` distinct unlabeled
    indices is a bug, raised as RuntimeError naming it.
    """
    picked = np.asarray(strategy(ctx, budget, key))
    if picked.ndim != 1 or len(picked) != budget or not np.issubdtype(picked.dtype, np.integer):
        raise RuntimeError(f"strategy {strategy.spec!r} returned {picked.shape} "
                           f"{picked.dtype} values, not {budget} indices")
    picked = picked.astype(np.int64)
    chosen = set(picked.tolist())
    if len(chosen) != budget or not chosen <= set(np.asarray(ctx.unlabeled).tolist()):
        raise RuntimeError(f"strategy {strategy.spec!r} returned an invalid selection: it "
                           f"must be {budget} distinct unlabeled indices")
    return picked
