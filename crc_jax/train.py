"""Training from scratch with the paper's early stopping, and evaluation.

An "epoch" is `train_config.steps_per_epoch` train steps (SSL methods count steps, not
passes over the few labeled images). After each epoch the watched split is evaluated;
training stops when its accuracy has not improved for `patience` epochs (0: never) or at
`max_epochs` (paper §4.1: CIFAR-10 50/350, CIFAR-100 100/600, SVHN none/512). The
variables of the best epoch are what is evaluated on the test set and handed to the
acquisition strategy.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from crc_jax import feeding, sharding
from crc_jax.ssl.base import Algorithm
from crc_jax.state import TrainState

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the global step."""


@dataclasses.dataclass
class FitResult:
    """What one training run produced.

    variables: evaluation variables (EMA when the algorithm uses one) of the best epoch.
    best_epoch / epochs_run: 1-based epoch counts.
    min_test_loss_epoch: epoch at which the test loss was lowest (paper Figure 3a), when
        the test split was evaluated every epoch (watch="test"), else None.
    history: one dict per epoch: epoch, loss, watch_accuracy (+ test_loss when tracked).
    """

    state: TrainState
    variables: Any
    best_epoch: int
    epochs_run: int
    watch_accuracy: float
    test_accuracy: float
    test_loss: float
    min_test_loss_epoch: Optional[int]
    history: list


@functools.lru_cache(maxsize=16)
def make_eval_step(eval_apply: Callable):
    """A jitted (correct count, summed NLL) step; cached so repeated fits compile once."""

    @jax.jit
    def eval_step(variables, x, y, valid):
        logits = eval_apply(variables, x)
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]
        correct = (jnp.argmax(logits, -1) == y) & valid
        return jnp.sum(correct), jnp.sum(jnp.where(valid, nll, 0.0))

    return eval_step


def evaluate(eval_step, variables, x: np.ndarray, y: np.ndarray, *, batch_size: int,
             mesh=None) -> dict:
    """Accuracy and mean cross-entropy over (x, y); the last batch is padded (one compile).

    Batches are split over the devices of `mesh` (default: every device, see
    crc_jax.sharding), the batch size rounded up to a multiple of the device count.
    """
    n = len(x)
    if n == 0:
        raise ValueError("cannot evaluate on an empty split")
    mesh = sharding.make_mesh() if mesh is None else mesh
    n_dev = sharding.num_devices(mesh)
    batch_size = min(batch_size, n)
    batch_size += -batch_size % n_dev
    variables = sharding.replicate(mesh, variables)
    correct = loss = 0.0
    for start in range(0, n, batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        pad = batch_size - len(xb)
        valid = np.arange(batch_size) < len(xb)
        if pad:
            xb = np.concatenate([xb, np.repeat(xb[:1], pad, axis=0)])
            yb = np.concatenate([yb, np.repeat(yb[:1], pad)])
        c, l_ = eval_step(variables, *sharding.shard_batch(mesh, (xb, yb.astype(np.int32), valid)))
        correct += float(c)
        loss += float(l_)
    return {"accuracy": correct / n, "loss": loss / n}


def index_stream(rng: np.random.Generator, n: int, batch: int, steps: int) -> np.ndarray:
    """(steps, batch) indices into range(n): concatenated random permutations, so every
    item is seen equally often even when batch > n (few labels)."""
    need = steps * batch
    reps = -(-need // n)
    order = np.concatenate([rng.permutation(n) for _ in range(reps)])
    return order[:need].reshape(steps, batch)


def _epoch_rng(key, epoch: int) -> np.random.Generator:
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, epoch)))
    return np.random.default_rng(seed.astype(np.uint32).tolist())


def _all_finite(tree) -> bool:
    """Whether every leaf is free of NaN and inf: checked before a state is evaluated or
    checkpointed, so a diverged state never replaces the last good checkpoint."""
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(tree))


def _copy_tree(tree):
    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)


def fit(algorithm: Algorithm, *, x_labeled: np.ndarray, y_labeled: np.ndarray,
        x_unlabeled: Optional[np.ndarray], watch: tuple, test: tuple, train_config,
        key: jax.Array, eval_apply: Callable, desc: str = "train",
        checkpointer=None, mesh=None, feed: str = "auto",
        before_step: Optional[Callable[[], None]] = None) -> FitResult:
    """Train a freshly initialized model with `algorithm` and early stopping on `watch`.

    x_labeled/y_labeled: the labeled set; x_unlabeled: the unlabeled pool images (used
    when the algorithm takes unlabeled batches). watch/test: (x, y). Randomness comes only
    from `key`: init, data order and augmentation per epoch are folded from it.
    `checkpointer` (crc_jax.checkpoint.TrainCheckpointer) saves every few epochs and, when
    it holds a checkpoint, training continues from it.
    `mesh` (crc_jax.sharding; default every device): batches are split over its devices,
    the state replicated; with one device nothing changes.
    `feed` (crc_jax.feeding): "device" keeps the pools on the device and gathers each batch
    there with a jitted gather, "host" gathers on the host; "auto": the device when they fit.
    `before_step()`, if given, runs before every train step (the run machinery's fault
    injection kills the process there; the library knows nothing of it).
    """
    tc = train_config
    init_key, data_key, step_key = jax.random.split(key, 3)
    state = algorithm.init_state(init_key, x_labeled[:1])
    eval_step = make_eval_step(eval_apply)
    track_test = tc.watch == "test"
    steps = int(tc.steps_per_epoch)
    mu_b = algorithm.unlabeled_batch
    if mu_b and (x_unlabeled is None or len(x_unlabeled) == 0):
        raise ValueError(f"{algorithm.name} needs unlabeled data, and the pool has none left")
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_divisible(algorithm.labeled_batch, mesh, what="labeled batch size")
    sharding.check_divisible(mu_b, mesh, what="unlabeled batch size")

    best = dict(epoch=0, acc=-1.0, variables=None)
    history, global_step, start_epoch = [], 0, 1
    patience = int(tc.patience)
    if checkpointer is not None:
        restored = checkpointer.restore(state, algorithm.eval_variables(state))
        if restored is not None:
            state, best_variables, progress = restored
            best = dict(epoch=progress["best_epoch"], acc=progress["best_accuracy"],
                        variables=best_variables)
            history, global_step = progress["history"], progress["global_step"]
            start_epoch = progress["epoch"] + 1
            if patience and progress["epoch"] - best["epoch"] >= patience:
                start_epoch = int(tc.max_epochs) + 1  # it had already stopped early
    state = sharding.replicate(mesh, state)
    feeder = feeding.BatchFeeder(algorithm.train_step, mesh, x_labeled=x_labeled,
                                 y_labeled=y_labeled, x_unlabeled=x_unlabeled if mu_b else None,
                                 feed=feed)
    bar = tqdm(range(start_epoch, int(tc.max_epochs) + 1), desc=desc, leave=False,
               disable=not tc.progress, dynamic_ncols=True)
    for epoch in bar:
        rng = _epoch_rng(data_key, epoch)
        lab_idx = index_stream(rng, len(x_labeled), algorithm.labeled_batch, steps)
        unl_idx = index_stream(rng, len(x_unlabeled), mu_b, steps) if mu_b else None
        keys = jax.random.split(jax.random.fold_in(step_key, epoch), steps)
        losses = []
        for i in range(steps):
            if before_step is not None:
                before_step()
            state, metrics = feeder(state, lab_idx[i], unl_idx[i] if mu_b else None, keys[i])
            losses.append(metrics["loss"])
        losses = np.asarray(jnp.stack(losses))
        if not np.all(np.isfinite(losses)):
            bad = int(np.argmin(np.isfinite(losses)))
            raise TrainingDiverged(
                f"non-finite training loss at step {global_step + bad + 1} (epoch {epoch})")
        global_step += steps
        if not _all_finite(state.params):  # the last step's update: its loss was still finite
            raise TrainingDiverged(
                f"non-finite parameters after step {global_step} (epoch {epoch})")

        variables = algorithm.eval_variables(state)
        watched = evaluate(eval_step, variables, *watch, batch_size=tc.eval_batch_size, mesh=mesh)
        record = {"epoch": epoch, "loss": float(losses.mean()),
                  "watch_accuracy": watched["accuracy"]}
        if track_test:
            record["test_loss"] = watched["loss"]
        history.append(record)
        if watched["accuracy"] > best["acc"]:
            best.update(epoch=epoch, acc=watched["accuracy"], variables=_copy_tree(variables))
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{watched['accuracy']:.3f}",
                        best=f"{best['acc']:.3f}")
        log.debug("%s epoch %d: %s", desc, epoch, record)
        if checkpointer is not None and checkpointer.due(epoch):
            checkpointer.save(epoch, state, best["variables"], {
                "best_epoch": best["epoch"], "best_accuracy": best["acc"],
                "history": history, "global_step": global_step})
        if patience and epoch - best["epoch"] >= patience:
            break
    bar.close()

    final = evaluate(eval_step, best["variables"], *test, batch_size=tc.eval_batch_size,
                     mesh=mesh)
    min_loss_epoch = None
    if track_test:
        min_loss_epoch = int(min(history, key=lambda r: r["test_loss"])["epoch"])
    return FitResult(state=state, variables=best["variables"], best_epoch=best["epoch"],
                     epochs_run=len(history), watch_accuracy=best["acc"],
                     test_accuracy=final["accuracy"], test_loss=final["loss"],
                     min_test_loss_epoch=min_loss_epoch, history=history)
