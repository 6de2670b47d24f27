"""Pieces the consistency-based algorithms share: forward pass, losses, ramp-up, views.

FixMatch, Mean Teacher and the Π-model all combine a supervised cross-entropy on the
labeled batch with a consistency term on the unlabeled batch; this module holds the
parts that are the same in each, so every algorithm module reads as its loss alone.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from crc_jax.data import augment
from crc_jax.state import TrainState, create_train_state

# fold_in constant of a train step's dropout key: the step's other keys stay as they were.
DROPOUT_FOLD = 1_000_033


def init_state_fn(model, tx, *, ema_decay: float, ema_batch_stats: str = "average",
                  ema_warmup: bool = False):
    """(key, sample_x) -> TrainState whose EMA trees are copies, not aliases, of the params.

    The train steps donate the state (donate_argnums=(0,)); two leaves that share one
    buffer cannot both be donated, so the EMA starts as a copy. `ema_batch_stats`:
    how the EMA model's BatchNorm statistics follow the trained ones ("average" | "copy",
    see crc_jax.state); `ema_warmup`: the decay min(1 - 1/(k+1), ema_decay) after step k.
    """

    def init(key, sample_x) -> TrainState:
        state = create_train_state(model, key, sample_x, tx, ema_decay=ema_decay,
                                   ema_batch_stats_rule=ema_batch_stats, ema_warmup=ema_warmup)
        copy = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # noqa: E731
        return state.replace(ema_params=copy(state.params),
                             ema_batch_stats=copy(state.batch_stats))

    return init


def build_algorithm(name: str, *, config, model, num_train_steps: int, train_step,
                    ema_decay: float, evaluate_ema: bool, unlabeled: bool = True,
                    ema_warmup: bool = False):
    """The one way to assemble an `Algorithm` from explicit arguments.

    The optimizer comes from config.train (crc_jax.optim), the state keeps an EMA of
    decay `ema_decay` (its BatchNorm statistics follow config.ssl.ema_batch_stats), the
    labeled batch is config.train.batch_size and, when `unlabeled`, the unlabeled batch
    μ·B with μ = config.ssl.unlabeled_ratio. `evaluate_ema`: evaluation and acquisition see
    the EMA model (FixMatch's EMA, Mean Teacher's teacher) instead of the trained one.
    """
    from crc_jax import optim
    from crc_jax.ssl.base import Algorithm

    batch = int(config.train.batch_size)
    tx = optim.make_optimizer(config.train, num_train_steps)
    return Algorithm(
        name=name,
        labeled_batch=batch,
        unlabeled_batch=int(config.ssl.unlabeled_ratio) * batch if unlabeled else 0,
        init_state=init_state_fn(model, tx, ema_decay=ema_decay,
                                 ema_batch_stats=str(config.ssl.ema_batch_stats),
                                 ema_warmup=ema_warmup),
        train_step=train_step,
        eval_variables=lambda state: state.variables(ema=evaluate_ema),
    )


def forward(apply_fn, params, batch_stats, x, dropout_key=None):
    """Train-mode logits of `x`; returns (logits, new batch statistics).

    BatchNorm normalizes with the statistics of this batch and updates its running
    averages; models without BatchNorm return `batch_stats` unchanged. `dropout_key`
    feeds the models' dropout (crc_jax.models; inactive without it or at rate 0).
    """
    rngs = {} if dropout_key is None else {"dropout": dropout_key}
    logits, updates = apply_fn({"params": params, "batch_stats": batch_stats}, x, train=True,
                               mutable=["batch_stats"], rngs=rngs)
    return logits, updates.get("batch_stats", batch_stats)


def split(x, sizes):
    """Split along axis 0 into consecutive pieces of the given sizes."""
    bounds, start = [], 0
    for size in sizes[:-1]:
        start += size
        bounds.append(start)
    return jnp.split(x, bounds)


def per_sample_ce(logits, labels):
    """Softmax cross-entropy of each row against an integer label, shape (N,)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def softmax_mse(student_logits, teacher_logits):
    """mean_n mean_c (softmax(student)_nc - softmax(teacher)_nc)^2, no gradient into the teacher.

    The consistency cost of Laine & Aila (2017) and Tarvainen & Valpola (2017), averaged
    over classes as in Oliver et al. (2018), whose consistency weights (8 for MT) assume it.
    """
    p_student = jax.nn.softmax(student_logits, axis=-1)
    p_teacher = jax.lax.stop_gradient(jax.nn.softmax(teacher_logits, axis=-1))
    return jnp.mean(jnp.square(p_student - p_teacher))


def sigmoid_rampup(step, rampup_steps):
    """exp(-5 (1 - t)^2) with t = min(step / rampup_steps, 1); 1 when rampup_steps <= 0.

    Laine & Aila (2017), Tarvainen & Valpola (2017): the consistency weight grows from
    exp(-5) ~ 0.0067 at the start to 1 at the end of the ramp-up.
    """
    if rampup_steps <= 0:
        return jnp.ones((), jnp.float32)
    t = jnp.clip(jnp.asarray(step, jnp.float32) / float(rampup_steps), 0.0, 1.0)
    return jnp.exp(-5.0 * jnp.square(1.0 - t))


def rampup_steps(ssl_config, num_train_steps: int) -> int:
    """Ramp-up length in steps: config.ssl.rampup_steps when set (the Mean Teacher
    reference ramps up over 200k steps), else config.ssl.rampup_fraction of the run."""
    fixed = int(ssl_config.rampup_steps)
    return fixed or int(round(float(ssl_config.rampup_fraction) * int(num_train_steps)))


def weak_view(config, *, flip: bool):
    """The weak view: flip + translate (up to config.train.translate px; 0 = 4 px at 32x32)
    for images, noise of std config.ssl.weak_noise for points.

    config.train.augment = False turns it off (the identity), for ablations.
    """
    if not config.train.augment:
        return augment.identity_fn
    return augment.weak_fn(flip=flip, noise_std=float(config.ssl.weak_noise),
                           translate=int(config.train.translate))


def strong_view(config, *, flip: bool):
    """The strong view: weak + RandAugment + Cutout for images, noise of std
    config.ssl.strong_noise for points. Always on: FixMatch is defined by it."""
    return augment.strong_fn(flip=flip,
                             noise_std=float(config.ssl.strong_noise))


def make_two_view_step(loss_fn, *, view_fn, weight: float, rampup_steps: int):
    """One jitted step shared by Mean Teacher and the Pi-model: a labeled view and two
    independent views of the unlabeled batch, a gradient step on
    loss_fn(params, state, x_l, y_l, x_a, x_b, weight=w(t), dropout_key=k), then the EMA
    update. w(t) = weight * exp(-5 (1 - t)^2) over the first `rampup_steps` steps. `k`
    feeds the model's dropout (the second source of noise of both algorithms; inactive
    at rate 0), folded from the step key so the views' keys are unchanged."""

    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_step(state, batch, key):
        k_l, k_a, k_b = jax.random.split(key, 3)
        x_u = batch["x_u"]
        w = weight * sigmoid_rampup(state.step, rampup_steps)
        grads, (batch_stats, metrics) = jax.grad(loss_fn, has_aux=True)(
            state.params, state, view_fn(k_l, batch["x_l"]), batch["y_l"],
            view_fn(k_a, x_u), view_fn(k_b, x_u), weight=w,
            dropout_key=jax.random.fold_in(key, DROPOUT_FOLD))
        state = state.apply_gradients(grads=grads).replace(batch_stats=batch_stats)
        return state.update_ema(), metrics

    return train_step
