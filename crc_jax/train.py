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
from typing import Any
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from crc_jax import feeding
from crc_jax.errors import TrainingDiverged
from crc_jax.runtime import sharding
from crc_jax.ssl.base import Algorithm
from crc_jax.state import TrainState

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FitResult:
    """What one training run produced.

    variables: evaluation variables (EMA when the algorithm uses one) of the best epoch.
    best_epoch / epochs_run: 1-based epoch counts.
    min_test_loss_epoch: epoch at which the test loss was lowest (paper Figure 3a), when
        the test split was evaluated every epoch (watch="test"), else None.
    history: one dict per epoch: epoch, loss, watch_accuracy (+ test_loss when tracked).
    """

    state: TrainState | None  # None for a result read back from a journal (no state kept)
    variables: Any
    best_epoch: int
    epochs_run: int
    watch_accuracy: float
    test_accuracy: float
    test_loss: float
    min_test_loss_epoch: int | None
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
    crc_jax.runtime.sharding), the batch size rounded up to a multiple of the device count.
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
        x_unlabeled: np.ndarray | None, watch: tuple, test: tuple, train_config,
        key: jax.Array, eval_apply: Callable, desc: str = "train",
        checkpointer=None, mesh=None, feed: str = "auto",
        before_step: Callable[[], None] | None = None) -> FitResult:
    """Train a freshly initialized model with `algorithm` and early stopping on `watch`.

    x_labeled/y_labeled: the labeled set; x_unlabeled: the unlabeled pool images (used
    when the algorithm takes unlabeled batches). watch/test: (x, y). Randomness comes only
    from `key`: init, data order and augmentation per epoch are folded from it.
    `checkpointer` (crc_jax.run.checkpoint.TrainCheckpointer) saves every few epochs and, when
    it holds a checkpoint, training continues from it.
    `mesh` (crc_jax.runtime.sharding; default every device): batches are split over its devices,
    the state replicated; with one device nothing changes.
    `feed` (crc_jax.feeding): "device" keeps the pools on the device and gathers each batch
    there with a jitted gather, "host" gathers on the host; "auto": the device when they fit.
    `before_step()`, if given, runs before every train step (the run machinery's fault
    injection kills the process there; the library knows nothing of it).
    """
    tc = train_config
    init_key, data_key, step_key = jax.random.split(key, 3)
    mu_b = algorithm.unlabeled_batch
    if mu_b and (x_unlabeled is None or len(x_unlabeled) == 0):
        raise ValueError(f"{algorithm.name} needs unlabeled data, and the pool has none left")
    mesh = sharding.make_mesh() if mesh is None else mesh
    sharding.check_divisible(algorithm.labeled_batch, mesh, what="labeled batch size")
    sharding.check_divisible(mu_b, mesh, what="unlabeled batch size")
    eval_step = make_eval_step(eval_apply)
    steps_per_dispatch = int(tc.steps_per_dispatch)

    state = algorithm.init_state(init_key, x_labeled[:1])
    state, stopper, start_epoch = _start_or_resume(algorithm, state, checkpointer, tc)
    state = sharding.replicate(mesh, state)
    feeder = feeding.BatchFeeder(algorithm.train_step, mesh, x_labeled=x_labeled,
                                 y_labeled=y_labeled, x_unlabeled=x_unlabeled if mu_b else None,
                                 feed=feed)
    n_unlabeled = len(x_unlabeled) if mu_b and x_unlabeled is not None else 0
    bar = tqdm(range(start_epoch, int(tc.max_epochs) + 1), desc=desc, leave=False,
               disable=not tc.progress, dynamic_ncols=True)
    for epoch in bar:
        batches = _epoch_batches(algorithm, data_key, step_key, epoch, len(x_labeled),
                                 n_unlabeled, int(tc.steps_per_epoch))
        state, losses = _train_epoch(feeder, state, batches, before_step, steps_per_dispatch)
        stopper.global_step = _check_finite(losses, state, stopper.global_step, epoch)
        variables = algorithm.eval_variables(state)
        watched = evaluate(eval_step, variables, *watch, batch_size=tc.eval_batch_size, mesh=mesh)
        record = {"epoch": epoch, "loss": float(losses.mean()),
                  "watch_accuracy": watched["accuracy"]}
        if tc.watch == "test":
            record["test_loss"] = watched["loss"]
        stop = stopper.update(epoch, record, variables)
        bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{watched['accuracy']:.3f}",
                        best=f"{stopper.accuracy:.3f}")
        log.debug("%s epoch %d: %s", desc, epoch, record)
        if checkpointer is not None and checkpointer.due(epoch):
            checkpointer.save(epoch, state, stopper.variables, stopper.progress())
        if stop:
            break
    bar.close()
    return _result(state, stopper, eval_step, test, tc, mesh)


@dataclasses.dataclass
class EarlyStopping:
    """The best epoch on the watched split so far, and when to stop: after `patience`
    epochs without improvement (0: never). Its `progress()` is what a checkpoint keeps,
    and `resumed` rebuilds it from a checkpoint, including a run that had already stopped."""

    patience: int
    epoch: int = 0                 # best epoch (1-based; 0 before the first)
    accuracy: float = -1.0
    variables: Any = None          # evaluation variables of the best epoch
    history: list = dataclasses.field(default_factory=list)
    global_step: int = 0

    def update(self, epoch: int, record: dict, variables) -> bool:
        """Record an epoch; True when training should stop."""
        self.history.append(record)
        if record["watch_accuracy"] > self.accuracy:
            self.epoch, self.accuracy = epoch, record["watch_accuracy"]
            self.variables = _copy_tree(variables)
        return self.should_stop(epoch)

    def should_stop(self, epoch: int) -> bool:
        return bool(self.patience) and epoch - self.epoch >= self.patience

    def progress(self) -> dict:
        return {"best_epoch": self.epoch, "best_accuracy": self.accuracy,
                "history": self.history, "global_step": self.global_step}

    @classmethod
    def resumed(cls, patience: int, progress: dict, variables) -> EarlyStopping:
        return cls(patience=patience, epoch=progress["best_epoch"],
                   accuracy=progress["best_accuracy"], variables=variables,
                   history=list(progress["history"]), global_step=progress["global_step"])


def _start_or_resume(algorithm: Algorithm, state, checkpointer, tc):
    """(state, early stopping, first epoch to run): fresh, or from the latest checkpoint."""
    patience = int(tc.patience)
    if checkpointer is not None:
        restored = checkpointer.restore(state, algorithm.eval_variables(state))
        if restored is not None:
            state, best_variables, progress = restored
            stopper = EarlyStopping.resumed(patience, progress, best_variables)
            done = progress["epoch"]
            start = int(tc.max_epochs) + 1 if stopper.should_stop(done) else done + 1
            return state, stopper, start   # (max_epochs + 1: it had already stopped early)
    return state, EarlyStopping(patience=patience), 1


def _epoch_batches(algorithm: Algorithm, data_key, step_key, epoch: int, n_labeled: int,
                   n_unlabeled: int, steps: int):
    """(labeled rows, unlabeled rows or None, keys) of every step of `epoch`, folded from
    (key, epoch) so a resumed run draws what an uninterrupted one would."""
    rng = _epoch_rng(data_key, epoch)
    lab = index_stream(rng, n_labeled, algorithm.labeled_batch, steps)
    unl = (index_stream(rng, n_unlabeled, algorithm.unlabeled_batch, steps)
           if algorithm.unlabeled_batch else None)
    keys = jax.random.split(jax.random.fold_in(step_key, epoch), steps)
    return lab, unl, keys


def _train_epoch(feeder, state, batches, before_step, steps_per_dispatch: int = 1):
    """Run one epoch's steps; (state, the losses as a host array, one sync at the end).

    With steps_per_dispatch K > 1, chunks of K steps run as one call (crc_jax.multistep;
    the same batches and keys as one step a call) and the last steps_per_epoch % K one at
    a time; `before_step` still runs once per step, before the call that holds it."""
    lab, unl, keys = batches
    losses = []
    i, n, k = 0, len(keys), max(int(steps_per_dispatch), 1)
    while i < n:
        size = k if k > 1 and n - i >= k else 1
        for _ in range(size if before_step is not None else 0):
            before_step()
        if size == 1:
            state, metrics = feeder(state, lab[i], None if unl is None else unl[i], keys[i])
            losses.append(metrics["loss"][None])
        else:
            rows = slice(i, i + size)
            state, metrics = feeder.chunk(state, lab[rows], None if unl is None else unl[rows],
                                          keys[rows])
            losses.append(metrics["loss"])
        i += size
    return state, np.asarray(jnp.concatenate(losses))


def _check_finite(losses: np.ndarray, state, global_step: int, epoch: int) -> int:
    """Raise TrainingDiverged naming the step; else the global step after this epoch."""
    if not np.all(np.isfinite(losses)):
        bad = int(np.argmin(np.isfinite(losses)))
        raise TrainingDiverged(
            f"non-finite training loss at step {global_step + bad + 1} (epoch {epoch})")
    global_step += len(losses)
    if not _all_finite(state.params):  # the last step's update: its loss was still finite
        raise TrainingDiverged(f"non-finite parameters after step {global_step} (epoch {epoch})")
    return global_step


def _result(state, stopper: EarlyStopping, eval_step, test: tuple, tc, mesh) -> FitResult:
    """Evaluate the best epoch's variables on the test split."""
    final = evaluate(eval_step, stopper.variables, *test, batch_size=tc.eval_batch_size,
                     mesh=mesh)
    min_loss_epoch = None
    if tc.watch == "test":
        min_loss_epoch = int(min(stopper.history, key=lambda r: r["test_loss"])["epoch"])
    return FitResult(state=state, variables=stopper.variables, best_epoch=stopper.epoch,
                     epochs_run=len(stopper.history), watch_accuracy=stopper.accuracy,
                     test_accuracy=final["accuracy"], test_loss=final["loss"],
                     min_test_loss_epoch=min_loss_epoch, history=stopper.history)
