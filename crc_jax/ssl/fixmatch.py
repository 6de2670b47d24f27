"""FixMatch (Sohn et al. 2020): pseudo-labels from weak views, enforced on strong views.

    loss = CE(f(weak(x_l)), y_l)
         + λu · mean_u 1[max p(weak(u)) >= τ] · CE(f(strong(u)), argmax p(weak(u)))

with u over the unlabeled batch and p = softmax(f); the pseudo-label argmax p(weak(u))
and its confidence are constants (no gradient flows through them). The labeled batch
(B images) and both views of the unlabeled batch (μB images each) go through the
network in one forward pass, so BatchNorm sees all 2μB + B images at once, as in the
reference code.

Reference settings (config.train / config.ssl): B=64, μ=7, τ=0.95, λu=1, SGD
Nesterov 0.9, lr 0.03 with lr·cos(7πk/16K) ("fixmatch_cosine"), weight decay 5e-4 on
kernels only, EMA 0.999 of the weights, used for evaluation and acquisition.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from crc_jax.ssl import consistency
from crc_jax.ssl.base import Algorithm, register
from crc_jax.state import TrainState


def pseudo_label_loss(weak_logits, strong_logits, *, threshold: float):
    """mean_u mask_u · CE(strong_u, argmax p(weak_u)), mask_u = max p(weak_u) >= τ.

    The mean runs over the whole unlabeled batch (masked samples count as zeros), as in
    FixMatch. Returns (loss, mask) with the mask as float32 (N,).
    """
    probs = jax.nn.softmax(jax.lax.stop_gradient(weak_logits), axis=-1)
    pseudo_labels = jnp.argmax(probs, axis=-1)
    mask = (jnp.max(probs, axis=-1) >= threshold).astype(jnp.float32)
    return jnp.mean(mask * consistency.per_sample_ce(strong_logits, pseudo_labels)), mask


def fixmatch_loss(params, state: TrainState, x_l, y_l, x_weak, x_strong, *,
                  threshold: float, weight: float, dropout_key=None):
    """Total FixMatch loss; returns (loss, (new batch statistics, metrics))."""
    x = jnp.concatenate([x_l, x_weak, x_strong], axis=0)
    logits, batch_stats = consistency.forward(state.apply_fn, params, state.batch_stats, x,
                                              dropout_key)
    logits_l, logits_w, logits_s = consistency.split(
        logits, (x_l.shape[0], x_weak.shape[0], x_strong.shape[0]))
    supervised = jnp.mean(consistency.per_sample_ce(logits_l, y_l))
    unlabeled, mask = pseudo_label_loss(logits_w, logits_s, threshold=threshold)
    loss = supervised + weight * unlabeled
    metrics = {"loss": loss, "supervised_loss": supervised, "unlabeled_loss": unlabeled,
               "mask_rate": jnp.mean(mask)}
    return loss, (batch_stats, metrics)


def make_train_step(*, weak_fn, strong_fn, threshold: float, weight: float):
    """One jitted step: augment on device, one forward/backward, SGD update, EMA."""
    loss_fn = functools.partial(fixmatch_loss, threshold=threshold, weight=weight)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state: TrainState, batch, key):
        k_l, k_w, k_s = jax.random.split(key, 3)
        x_u = batch["x_u"]
        x_l = weak_fn(k_l, batch["x_l"])
        x_weak = weak_fn(k_w, x_u)
        x_strong = strong_fn(k_s, x_u)
        grads, (batch_stats, metrics) = jax.grad(loss_fn, has_aux=True)(
            state.params, state, x_l, batch["y_l"], x_weak, x_strong,
            dropout_key=jax.random.fold_in(key, consistency.DROPOUT_FOLD))
        state = state.apply_gradients(grads=grads).replace(batch_stats=batch_stats)
        return state.update_ema(), metrics

    return train_step


@register("fixmatch", dropout=True, augments_images=True)
def make_fixmatch(*, config, model, num_train_steps: int, flip: bool = False) -> Algorithm:
    sc, ema = config.ssl, float(config.train.ema_decay)
    step = make_train_step(
        weak_fn=consistency.weak_view(config, flip=flip),
        strong_fn=consistency.strong_view(config, flip=flip),
        threshold=float(sc.threshold), weight=float(sc.unlabeled_weight))
    return consistency.build_algorithm("fixmatch", config=config, model=model,
                                       num_train_steps=num_train_steps, train_step=step,
                                       ema_decay=ema, evaluate_ema=ema > 0)
