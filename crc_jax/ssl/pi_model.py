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

import jax
import jax.numpy as jnp

from crc_jax import optim
from crc_jax.ssl import consistency
from crc_jax.ssl.base import Algorithm, register
from crc_jax.state import TrainState


def pi_model_loss(params, state: TrainState, x_l, y_l, x_a, x_b, *, weight):
    """CE + weight · softmax-MSE(view a; view b is the target); returns (loss, (stats, metrics))."""
    x = jnp.concatenate([x_l, x_a, x_b], axis=0)
    logits, batch_stats = consistency.forward(state.apply_fn, params, state.batch_stats, x)
    logits_l, logits_a, logits_b = consistency.split(
        logits, (x_l.shape[0], x_a.shape[0], x_b.shape[0]))
    supervised = jnp.mean(consistency.per_sample_ce(logits_l, y_l))
    consistency_loss = consistency.softmax_mse(logits_a, logits_b)
    loss = supervised + weight * consistency_loss
    metrics = {"loss": loss, "supervised_loss": supervised,
               "consistency_loss": consistency_loss, "consistency_weight": weight}
    return loss, (batch_stats, metrics)


@register("pi_model")
def make_pi_model(*, config, model, num_train_steps: int, flip: bool = False) -> Algorithm:
    tc, sc = config.train, config.ssl
    tx = optim.make_optimizer(tc, num_train_steps)
    ema = float(tc.ema_decay)
    batch = int(tc.batch_size)
    return Algorithm(
        name="pi_model",
        labeled_batch=batch,
        unlabeled_batch=int(sc.unlabeled_ratio) * batch,
        init_state=consistency.init_state_fn(
            model, tx, ema_decay=ema,
            ema_batch_stats=consistency.ema_batch_stats_rule(config)),
        train_step=consistency.make_two_view_step(
            pi_model_loss,
            view_fn=consistency.weak_view(config, flip=flip),
            weight=float(sc.unlabeled_weight),
            rampup_steps=consistency.rampup_steps(sc, num_train_steps)),
        eval_variables=lambda state: state.variables(ema=ema > 0),
    )
