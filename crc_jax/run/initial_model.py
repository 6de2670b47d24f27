"""Step 0 of the paper's protocol: which Q0 images start every trial, and with which model.

Three rules, picked by config.al.initial_model and config.al.first_query:

  * per_trial (default): each trial draws its own class-balanced Q0 set (Q0/C per class)
    and trains its step-0 model on it; the strategies of a trial share that set.
  * median (paper §4.1: "we randomly sampled Q0 images from each class in the first
    acquisition step and used the model that attained median performance across 5 and 3
    trials"): K = al.initial_candidates class-balanced sets are drawn, a model is trained
    on each, and the set and model with the median test accuracy are step 0 of every
    trial and every strategy. Trials differ by their training seeds from step 1 on.
    Candidates are kept in WORKDIR/initial_model/ (a journal line and the trained
    variables per candidate), so a resumed run does not train them again.
  * first_query = random_init (Appendix B.2, transferability): each strategy picks the
    Q0 images itself, from the whole pool, using a randomly initialized model; the
    step-0 model is then trained from another initialization seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple
from collections.abc import Callable

import jax
import numpy as np
from flax import serialization

from crc_jax import acquisition, durable
from crc_jax.runtime import distributed
from crc_jax.data.pool import Pool
from crc_jax.errors import RunDirError, StorageError
from crc_jax.train import FitResult, fit

log = logging.getLogger(__name__)

# Stream numbers folded into the run seed, apart from the trial numbers 0, 1, ...
CANDIDATE_STREAM = 1_000_033
QUERY_MODEL_STREAM = 1_000_003
FIRST_QUERY_STREAM = 1_000_037


class InitialModel(NamedTuple):
    """The chosen step-0 set (pool indices), its trained model, and the candidate number."""

    indices: np.ndarray
    result: FitResult
    candidate: int


def median_index(accuracies) -> int:
    """The candidate whose accuracy is the median: the middle one once sorted (the lower
    middle for an even count); ties broken by the lower candidate number."""
    if len(accuracies) == 0:
        raise ValueError("no candidates to choose from")
    order = sorted(range(len(accuracies)), key=lambda k: (accuracies[k], k))
    return order[(len(order) - 1) // 2]


def candidate_indices(config, pool_y: np.ndarray, num_classes: int, k: int) -> np.ndarray:
    """Candidate k's class-balanced Q0 set, drawn from its own stream of the run seed."""
    pool = Pool(pool_y, num_classes)
    rng = np.random.default_rng([config.seed, CANDIDATE_STREAM, k])
    return pool.initial_indices(config.al.initial_size, rng)


def candidate_key(config, k: int) -> jax.Array:
    """Training key of candidate k (init, data order, augmentation)."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed),
                                                 CANDIDATE_STREAM), k)


def query_model_key(trial_key: jax.Array) -> jax.Array:
    """Initialization key of the untrained model that makes the first query (B.2); the
    step-0 model trained afterwards is initialized from the step key instead."""
    return jax.random.fold_in(trial_key, QUERY_MODEL_STREAM)


def _entry(k: int, indices: np.ndarray, labels: np.ndarray, result: FitResult) -> dict:
    return {"step": k, "initial": indices.tolist(), "initial_labels": labels.tolist(),
            "test_accuracy": float(result.test_accuracy), "test_loss": float(result.test_loss),
            "watch_accuracy": float(result.watch_accuracy), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "min_test_loss_epoch": result.min_test_loss_epoch}


def _stored_result(entry: dict, variables) -> FitResult:
    return FitResult(state=None, variables=variables, best_epoch=entry["best_epoch"],
                     epochs_run=entry["epochs_run"], watch_accuracy=entry["watch_accuracy"],
                     test_accuracy=entry["test_accuracy"], test_loss=entry["test_loss"],
                     min_test_loss_epoch=entry["min_test_loss_epoch"], history=[])


def _stored_variables(setup, directory: Path, k: int):
    """Candidate k's trained variables: read by process 0, broadcast to the others."""
    if distributed.is_writer():
        variables = serialization.msgpack_restore(
            (directory / f"candidate_{k}.msgpack").read_bytes())
    if not distributed.is_multiprocess():
        return variables
    from jax.experimental import multihost_utils

    if not distributed.is_writer():  # a tree of the right shapes; process 0's values win
        algorithm = setup.algorithm
        variables = jax.device_get(algorithm.eval_variables(
            algorithm.init_state(candidate_key(setup.config, k), setup.pool_x[:1])))
    return multihost_utils.broadcast_one_to_all(variables)


def prepare(setup, workdir, *, fit_fn: Callable | None = None) -> InitialModel | None:
    """The median initial model of a run (training the candidates not stored yet), or None
    when config.al.initial_model is "per_trial". fit_fn: crc_jax.train.fit by default."""
    config = setup.config
    fit_fn = fit_fn or fit
    if config.al.initial_model != "median":
        return None
    directory = Path(workdir) / "initial_model"
    journal = durable.Journal(directory / "candidates.jsonl")
    # Multi-host runs: every process trains the candidates (fit is collective); process 0
    # alone reads and writes the run directory and hands the chosen model to the others.
    entries = distributed.from_writer(journal.read, errors=(StorageError,))
    num_classes = setup.dataset.num_classes
    for k in range(config.al.initial_candidates):
        indices = candidate_indices(config, setup.pool_y, num_classes, k)
        if k < len(entries):
            if entries[k]["initial"] != indices.tolist():
                raise RunDirError(f"{journal.path}: candidate {k} differs from this config's "
                                  "(a journal from another data set or seed)")
            continue
        unlabeled = np.setdiff1d(np.arange(len(setup.pool_y)), indices)
        result = fit_fn(setup.algorithm, x_labeled=setup.pool_x[indices],
                        y_labeled=setup.pool_y[indices].astype(np.int32),
                        x_unlabeled=setup.pool_x[unlabeled], watch=setup.watch,
                        test=setup.test, train_config=config.train,
                        key=candidate_key(config, k), eval_apply=setup.eval_apply,
                        desc=f"initial candidate {k}")
        entry = _entry(k, indices, setup.pool_y[indices], result)
        if distributed.is_writer():
            directory.mkdir(parents=True, exist_ok=True)
            durable.write_atomic(directory / f"candidate_{k}.msgpack",
                                 serialization.msgpack_serialize(jax.device_get(result.variables)))
            journal.append(entry)
        entries.append(entry)
        log.info("initial candidate %d: test accuracy %.4f", k, result.test_accuracy)
    entries = entries[:config.al.initial_candidates]
    chosen = median_index([e["test_accuracy"] for e in entries])
    variables = _stored_variables(setup, directory, chosen)
    log.info("initial model: candidate %d of %d (median test accuracy %.4f)", chosen,
             len(entries), entries[chosen]["test_accuracy"])
    return InitialModel(indices=np.asarray(entries[chosen]["initial"], dtype=np.int64),
                        result=_stored_result(entries[chosen], variables), candidate=chosen)


def first_query(setup, strategy, pool: Pool, trial_key, make_context: Callable):
    """Appendix B.2: the strategy picks Q0 images from the whole pool with an untrained
    model (initialized from query_model_key). Returns (indices, the strategy's record)."""
    algorithm = setup.algorithm
    variables = algorithm.eval_variables(
        algorithm.init_state(query_model_key(trial_key), setup.pool_x[:1]))
    ctx = make_context(setup, pool, variables)
    picked = acquisition.select(strategy, ctx, setup.config.al.initial_size,
                                jax.random.fold_in(trial_key, FIRST_QUERY_STREAM))
    return distributed.agree(picked, what="first query"), ctx.record
