"""Mean Teacher (Tarvainen & Valpola 2017): consistency with an EMA of the student.

    loss = CE(f_θ(a(x_l)), y_l) + w(t) · mean_u mean_c (softmax f_θ(a(u)) - softmax f_θ'(a'(u)))²
    θ'   <- α θ' + (1 - α) θ        after every step (the teacher, α = config.ssl.teacher_ema)
    w(t) = λ · exp(-5 (1 - t)²),    t = min(k / (rampup_fraction · K), 1)

a and a' are two independent draws of the weak view (flip + translate, or input noise
for points). The student sees the labeled and unlabeled views in one forward pass;
the teacher runs in train mode too (batch statistics, as in the reference code) and
its output is a constant: no gradient flows into it and its BatchNorm updates are
dropped. The teacher is the `TrainState`'s EMA copy.

Which network is evaluated and handed to the next acquisition is config.ssl.eval_model:
"student" as in the reference implementation the paper cites for MT
(perrying/realistic-ssl-evaluation-pytorch, train.py: validation and test run `model`,
never `t_model`), or "teacher".

Reference settings (Oliver et al. 2018, config.py of that implementation): Adam lr 4e-4,
x0.2 after 400k of 500k iterations, λ = 8 ramped up over 200k iterations, α = 0.95
reached through min(1 - 1/(k+1), α) after step k (config.ssl.teacher_ema_warmup),
50 labeled + 50 unlabeled images per step (batch_size 100, halved for each).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crc_jax.ssl import consistency
from crc_jax.ssl.base import Algorithm, register
from crc_jax.state import TrainState


def mean_teacher_loss(params, state: TrainState, x_l, y_l, x_student, x_teacher, *,
                      weight, dropout_key=None):
    """Student CE + weight · softmax-MSE to the teacher; returns (loss, (batch stats, metrics)).
    With `dropout_key` the model's dropout is on in both networks, with independent masks
    (the student's from the key, the teacher's from a fold of it), as in the reference."""
    x = jnp.concatenate([x_l, x_student], axis=0)
    logits, batch_stats = consistency.forward(state.apply_fn, params, state.batch_stats, x,
                                              dropout_key)
    logits_l, logits_u = consistency.split(logits, (x_l.shape[0], x_student.shape[0]))
    teacher_key = None if dropout_key is None else jax.random.fold_in(dropout_key, 1)
    teacher_logits, _ = consistency.forward(state.apply_fn, state.ema_params,
                                            state.ema_batch_stats, x_teacher, teacher_key)
    supervised = jnp.mean(consistency.per_sample_ce(logits_l, y_l))
    consistency_loss = consistency.softmax_mse(logits_u, jax.lax.stop_gradient(teacher_logits))
    loss = supervised + weight * consistency_loss
    metrics = {"loss": loss, "supervised_loss": supervised,
               "consistency_loss": consistency_loss, "consistency_weight": weight}
    return loss, (batch_stats, metrics)


@register("mean_teacher", dropout=True)
def make_mean_teacher(*, config, model, num_train_steps: int, flip: bool = False) -> Algorithm:
    sc = config.ssl
    step = consistency.make_two_view_step(
        mean_teacher_loss, view_fn=consistency.weak_view(config, flip=flip),
        weight=float(sc.unlabeled_weight),
        rampup_steps=consistency.rampup_steps(sc, num_train_steps))
    return consistency.build_algorithm(
        "mean_teacher", config=config, model=model, num_train_steps=num_train_steps,
        train_step=step, ema_decay=float(sc.teacher_ema),
        evaluate_ema=sc.eval_model == "teacher",
        ema_warmup=bool(sc.teacher_ema_warmup))
