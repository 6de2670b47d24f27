"""What a strategy sees: the model trained at this step and the pool, nothing else.

A strategy never trains, loads data or writes files. It returns pool indices; it may
leave numbers worth keeping (CRC's group scores, say) in `ctx.record`, which the loop
writes into the journal.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Context:
    """The model and pool at one acquisition step.

    apply_fn:     (variables, x) -> logits (N, C), evaluation mode (no dropout, BN running stats).
    variables:    {"params": ..., "batch_stats": ...} of the model trained at this step.
    x:            every pool image, (N, ...) NumPy; indices below point into it.
    labeled:      indices already labeled, in acquisition order.
    unlabeled:    indices still unlabeled, sorted.
    num_classes:  C.
    features_fn:  (variables, x) -> penultimate features (N, d), the input of the final
                  dense layer "head"; the fast path of last-layer NTKs uses it (without
                  it, CRC derives Φ from a dense head itself).
    oracle:       index array -> labels. Only the pseudo-AL setting (paper Table 3) may read
                  it, because that setting is defined with class-balanced groups.
    model:        the Flax module (for strategies that need its structure), or None.
    stochastic_apply_fn: (variables, x, key) -> logits (N, C) with the model's dropout
                  active (drawn from `key`) and everything else in evaluation mode; None
                  when the model has no dropout. MC-dropout strategies (BALD) need it.
    batch_size:   how many images to push through the model at once.
    record:       a dict a strategy may fill with JSON-serializable extras for the journal.
    """

    apply_fn: Callable[[Any, Any], Any]
    variables: Any
    x: np.ndarray
    labeled: np.ndarray
    unlabeled: np.ndarray
    num_classes: int
    features_fn: Callable[[Any, Any], Any] | None = None
    oracle: Callable[[np.ndarray], np.ndarray] | None = None
    model: Any = None
    stochastic_apply_fn: Callable[[Any, Any, Any], Any] | None = None
    batch_size: int = 512
    record: dict = dataclasses.field(default_factory=dict)

    @property
    def params(self):
        return self.variables["params"]


def check_budget(ctx: Context, budget: int) -> None:
    """Reject a budget the pool cannot satisfy (every strategy's contract with its Context;
    a budget a strategy's own options cannot fill is refused where it is built:
    Strategy.check_budget)."""
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    if budget > len(ctx.unlabeled):
        raise ValueError(f"budget {budget} exceeds the {len(ctx.unlabeled)} unlabeled samples")


def model_context(model, variables, *, x: np.ndarray, labeled, unlabeled, num_classes: int,
                  batch_size: int, oracle=None) -> Context:
    """The Context of a Flax model of crc_jax.models (its evaluation passes, features and,
    with dropout, MC-dropout pass) over the pool `x` as it stands."""
    from crc_jax import models

    fns = models.apply_functions(model)
    return Context(apply_fn=fns.logits, variables=variables, x=x,
                   labeled=np.asarray(labeled, np.int64).copy(),
                   unlabeled=np.sort(np.asarray(unlabeled, np.int64)),
                   num_classes=num_classes, features_fn=fns.features, oracle=oracle,
                   model=model, stochastic_apply_fn=fns.stochastic, batch_size=batch_size)
