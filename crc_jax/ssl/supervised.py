"""Supervised training on the labeled set only: the baseline "SSL algorithm".

loss = CE(f(weak(x_l)), y_l); weak augmentation (the same weak view the SSL algorithms
use: flip + translate for images, noise of std config.ssl.weak_noise for points) when
config.train.augment is set.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from crc_jax.ssl import consistency
from crc_jax.ssl.base import Algorithm, register
from crc_jax.state import TrainState


def supervised_loss(params, state: TrainState, x, y, dropout_key=None):
    """Cross-entropy on a labeled batch; returns (loss, new batch statistics)."""
    logits, batch_stats = consistency.forward(state.apply_fn, params, state.batch_stats, x,
                                              dropout_key)
    return jnp.mean(consistency.per_sample_ce(logits, y)), batch_stats


def make_train_step(*, augment_fn):
    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state: TrainState, batch, key):
        x = augment_fn(key, batch["x_l"])
        (loss, batch_stats), grads = jax.value_and_grad(supervised_loss, has_aux=True)(
            state.params, state, x, batch["y_l"],
            jax.random.fold_in(key, consistency.DROPOUT_FOLD))
        state = state.apply_gradients(grads=grads).replace(batch_stats=batch_stats)
        state = state.update_ema()
        return state, {"loss": loss}

    return train_step


@register("supervised", dropout=True)
def make_supervised(*, config, model, num_train_steps: int, flip: bool = False) -> Algorithm:
    ema = float(config.train.ema_decay)
    step = make_train_step(augment_fn=consistency.weak_view(config, flip=flip))
    return consistency.build_algorithm("supervised", config=config, model=model,
                                       num_train_steps=num_train_steps, train_step=step,
                                       ema_decay=ema, evaluate_ema=ema > 0, unlabeled=False)
