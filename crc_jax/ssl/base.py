"""What every SSL algorithm provides, and the registry they live in.

A factory registered under a name is called as
    factory(config=config, model=model, num_train_steps=K, flip=bool)
and returns an `Algorithm`. The fit loop (crc_jax/train.py) only uses these fields, so
a new algorithm plugs in without touching the loop.

Batches are dicts of device arrays: "x_l" (B, ...) labeled images, "y_l" (B,) int labels,
and, when `unlabeled_batch > 0`, "x_u" (mu*B, ...) unlabeled images. Augmentation
happens inside `train_step`, on the device.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from collections.abc import Callable

import jax

from crc_jax.registry import Registry
from crc_jax.state import TrainState

ALGORITHMS: Registry[Any] = Registry("ssl algorithm")
register = ALGORITHMS.register

Batch = dict


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """name; batch sizes per step; state init; one jitted step; the variables to evaluate.

    init_state(key, sample_x) -> TrainState
    train_step(state, batch, key) -> (state, metrics)   metrics: dict of scalars, incl. "loss"
    eval_variables(state) -> Flax variables used for evaluation and acquisition
    """

    name: str
    labeled_batch: int
    unlabeled_batch: int
    init_state: Callable[[jax.Array, Any], TrainState]
    train_step: Callable[[TrainState, Batch, jax.Array], tuple[TrainState, dict]]
    eval_variables: Callable[[TrainState], dict]
