"""Π-model (Laine & Aila 2017): consistency between two stochastic views, one network.

    loss = CE(f(a(x_l)), y_l) + w(t) · mean_u mean_c (softmax f(a(u)) - softmax f(a'(u)))²
    w(t) = λ · exp(-5 (1 - t)²),  t = min(k / (rampup_fraction · K), 1)

a, a' are independent draws of the weak view (flip + translate for images; for 2-D
points, Gaussian input noise of std config.ssl.weak_noise). As in the implementation
of Oliver et al. (2018), the second view is the target: it goes through the same
network in the same forward pass but carries no gradient. The paper's Figure 1
visualizes this algorithm's decision boundary on two-moons.
"""

from __future__ import annotations

import jax.numpy as jnp

from crc_jax.ssl import consistency
from crc_jax.ssl.base import Algorithm, register
from crc_jax.state import TrainState


def pi_model_loss(params, state: TrainState, x_l, y_l, x_a, x_b, *, weight, dropout_key=None):
    """CE + weight · softmax-MSE(view a; view b is the target); returns (loss, (stats, metrics)).
    With `dropout_key` the model's dropout is on: every row draws its own mask, so the two
    views also differ by their dropout masks, as in Laine & Aila."""
    x = jnp.concatenate([x_l, x_a, x_b], axis=0)
    logits, batch_stats = consistency.forward(state.apply_fn, params, state.batch_stats, x,
                                              dropout_key)
    logits_l, logits_a, logits_b = consistency.split(
        logits, (x_l.shape[0], x_a.shape[0], x_b.shape[0]))
    supervised = jnp.mean(consistency.per_sample_ce(logits_l, y_l))
    consistency_loss = consistency.softmax_mse(logits_a, logits_b)
    loss = supervised + weight * consistency_loss
    metrics = {"loss": loss, "supervised_loss": supervised,
               "consistency_loss": consistency_loss, "consistency_weight": weight}
    return loss, (batch_stats, metrics)


@register("pi_model", dropout=True)
def make_pi_model(*, config, model, num_train_steps: int, flip: bool = False) -> Algorithm:
    sc, ema = config.ssl, float(config.train.ema_decay)
    step = consistency.make_two_view_step(
        pi_model_loss, view_fn=consistency.weak_view(config, flip=flip),
        weight=float(sc.unlabeled_weight),
        rampup_steps=consistency.rampup_steps(sc, num_train_steps))
    return consistency.build_algorithm("pi_model", config=config, model=model,
                                       num_train_steps=num_train_steps, train_step=step,
                                       ema_decay=ema, evaluate_ema=ema > 0)
