"""Optimizers from config.train, composed from optax pieces.

    sgd:  chain(add_decayed_weights(wd, mask=kernels), sgd(lr_schedule, momentum, nesterov))
    adam: chain(add_decayed_weights(wd, mask=kernels), adam(lr_schedule))

Weight decay touches only the kernels of conv/dense layers, never biases or BatchNorm
scales (FixMatch, Sohn et al. 2020). The "fixmatch_cosine" schedule is lr * cos(7 pi k / (16 K)).

The schedule's horizon K is `train.schedule_steps` when set, else the early-stopping cap
(max_epochs x steps_per_epoch). The FixMatch implementations the paper cites fix
K = 2^20 steps whatever early stopping does, so with early stopping the learning rate
never reaches its final value; a horizon equal to the cap decays faster.
"step" multiplies lr by `train.lr_decay_factor` once, after `train.lr_decay_step` steps
(the Mean Teacher reference: x0.2 at 400k of 500k iterations).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import optax
from flax import traverse_util


def kernel_mask(params):
    """True for parameters named 'kernel' (conv and dense weights), False elsewhere."""
    flat = traverse_util.flatten_dict(params)
    return traverse_util.unflatten_dict({k: k[-1] == "kernel" for k in flat})


def schedule_horizon(train_config, num_train_steps: int) -> int:
    """K of the cosine schedules: train.schedule_steps, or the cap `num_train_steps` when 0."""
    return int(train_config.schedule_steps or num_train_steps)


def learning_rate_schedule(name: str, lr: float, num_train_steps: int, *,
                           decay_step: int = 0, decay_factor: float = 1.0):
    if name == "constant":
        return optax.constant_schedule(lr)
    if name == "fixmatch_cosine":
        total = max(int(num_train_steps), 1)
        return lambda step: lr * jnp.cos(7.0 * math.pi * step / (16.0 * total))
    if name == "cosine":
        return optax.cosine_decay_schedule(lr, max(int(num_train_steps), 1))
    if name == "step":
        return optax.piecewise_constant_schedule(lr, {int(decay_step): float(decay_factor)})
    raise ValueError(f"unknown learning-rate schedule {name!r}")


def make_optimizer(train_config, num_train_steps: int) -> optax.GradientTransformation:
    """The optimizer config.train describes, with weight decay on kernels only."""
    schedule = learning_rate_schedule(
        train_config.schedule, train_config.lr, schedule_horizon(train_config, num_train_steps),
        decay_step=train_config.lr_decay_step,
        decay_factor=train_config.lr_decay_factor)
    if train_config.optimizer == "sgd":
        base = optax.sgd(schedule, momentum=train_config.momentum or None,
                         nesterov=bool(train_config.nesterov))
    elif train_config.optimizer == "adam":
        base = optax.adam(schedule)
    else:
        raise ValueError(f"unknown optimizer {train_config.optimizer!r}")
    parts = []
    if train_config.weight_decay:
        parts.append(optax.add_decayed_weights(train_config.weight_decay, mask=kernel_mask))
    parts.append(base)
    return optax.chain(*parts)


