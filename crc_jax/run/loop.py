"""The active-learning loop (paper §4.1, docs/design.md "The protocol").

For each strategy and trial: step 0 labels Q0 images sampled class-balanced (the same
images for every strategy of a trial; crc_jax.run.initial_model holds the paper's median
initial model and the transfer setting's first query); then, `al.steps` times, the model
is trained from scratch, evaluated, and the strategy acquires Q labels. Every completed
step is one journal line (written whole and fsynced) before the next begins, so rerunning
the same command resumes after the last completed step (crc_jax.run.resume) and draws
the same randomness: keys are folded from (seed, trial, step), never carried in process
state.

Layout: WORKDIR/config.json, WORKDIR/<strategy>/trial_<k>/journal.jsonl, WORKDIR/summary.csv.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import jax
import numpy as np

from crc_jax import acquisition, data, durable, models, ssl
from crc_jax import config as config_lib
from crc_jax.runtime import distributed, faults
from crc_jax.data.pool import Pool
from crc_jax.errors import StorageError
from crc_jax.run import environment, initial_model, initial_set, resume
from crc_jax.run.rundir import run_dir, strategy_dirname  # noqa: F401 (strategy_dirname: callers' name for it)
from crc_jax.train import fit

log = logging.getLogger(__name__)

SUMMARY_FIELDS = ("strategy", "trial", "step", "num_labeled", "test_accuracy")


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything shared by all strategies and trials of one run (built once: jit caches)."""

    config: Any
    dataset: Any
    pool_x: np.ndarray
    pool_y: np.ndarray
    watch: tuple
    test: tuple
    model: Any
    algorithm: Any

    @property
    def eval_apply(self) -> Callable:
        return models.apply_functions(self.model).logits


def build_setup(config) -> Setup:
    """Load data, hold out the validation split, build the model and the SSL algorithm."""
    ds = data.load(config.dataset.name, data_dir=config.dataset.data_dir,
                   train_size=config.dataset.train_size, test_size=config.dataset.test_size,
                   seed=config.seed)
    pool_x, pool_y = ds.x_train, ds.y_train
    test = (ds.x_test, ds.y_test)
    watch = test
    if config.train.watch == "val":
        rng = np.random.default_rng([config.seed, 7919])
        order = rng.permutation(len(pool_x))
        val, rest = order[:config.train.val_size], np.sort(order[config.train.val_size:])
        watch = (pool_x[val], pool_y[val])
        pool_x, pool_y = pool_x[rest], pool_y[rest]
    config_lib.check_pool(config, pool_y, ds.num_classes)

    options = {"width": config.model.width} if config.model.width else {}
    if config.model.dropout:
        options["dropout"] = config.model.dropout
    # The train step runs activations in config.train.dtype (mixed precision); evaluation
    # and acquisition run the same float32 parameters with float32 activations, so
    # feature ranks and the small NTK eigenvalues CRC ranks by keep float32 precision.
    model = models.get(config.model.name, num_classes=ds.num_classes, **options)
    train_model = models.get(config.model.name, num_classes=ds.num_classes,
                             dtype=config.train.dtype, **options)
    num_train_steps = config.train.max_epochs * config.train.steps_per_epoch
    algorithm = ssl.create(config, train_model, num_train_steps=num_train_steps, flip=ds.flip)
    return Setup(config=config, dataset=ds, pool_x=pool_x, pool_y=pool_y, watch=watch,
                 test=test, model=model, algorithm=algorithm)


def acquisition_context(setup: Setup, pool: Pool, variables) -> acquisition.Context:
    """What a strategy sees at one acquisition: `variables` and the pool as it stands."""
    config = setup.config
    return acquisition.model_context(
        setup.model, variables, x=setup.pool_x, labeled=pool.labeled, unlabeled=pool.unlabeled,
        num_classes=setup.dataset.num_classes, batch_size=config.train.eval_batch_size,
        oracle=pool.oracle_labels if config.al.pseudo_al else None)


def step_keys(seed: int, trial: int, step: int) -> tuple[jax.Array, jax.Array]:
    """(training key, acquisition key) of one step: folded from (seed, trial, step)."""
    trial_key = jax.random.fold_in(jax.random.PRNGKey(seed), trial)
    train_key, acquire_key = jax.random.split(jax.random.fold_in(trial_key, step))
    return train_key, acquire_key


def run_trial(setup: Setup, strategy: acquisition.Strategy, trial: int, trial_dir: Path,
              on_step: Callable | None = None,
              start: initial_model.InitialModel | None = None,
              bound: dict | None = None) -> list[dict]:
    """Run (or resume) one trial of one strategy (built by crc_jax.config.validate);
    returns its journal entries.

    on_step(entry, labeled, result), if given, is called after each step that runs here
    (not for steps replayed from the journal): figures use it to see the trained model.
    start: the run's median initial model (crc_jax.run.initial_model), used as step 0.
    bound: the config.json a resumed directory was bound to (journals of the first storage
    format carry a fingerprint computed from it: resume.legacy_run_fingerprint).
    """
    config, spec = setup.config, strategy.spec
    journal = durable.Journal(trial_dir / "journal.jsonl")
    entries = distributed.from_writer(journal.read, errors=(StorageError,))
    pool = Pool(setup.pool_y, setup.dataset.num_classes)
    trial_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), trial)
    fingerprint = resume.run_fingerprint(config, spec, trial)
    accepted = resume.accepted_fingerprints(config, spec, trial, bound)
    initial, initial_record = _label_step_zero(setup, spec, trial, pool, strategy, trial_key,
                                               start, entries, journal.path, accepted)
    if distributed.is_writer():
        resume.remove_stale_checkpoints(trial_dir, len(entries))

    for step in range(len(entries), config.al.steps + 1):
        started = time.time()
        train_key, acquire_key = step_keys(config.seed, trial, step)
        labeled = pool.labeled
        checkpointer = None
        if step == 0 and start is not None:
            result = start.result  # trained once for the whole run
        else:
            checkpointer = resume.make_checkpointer(config, spec, trial, step, trial_dir)
            result = _train(setup, pool, train_key, checkpointer,
                            desc=f"{spec} t{trial} s{step} n={len(labeled)}")
        entry = _step_entry(step, labeled, result)
        if step == 0:
            entry.update(_step_zero_fields(pool, initial, fingerprint, start, initial_record))
        if step < config.al.steps:
            entry.update(_acquire(setup, pool, strategy, result.variables, acquire_key))
        if distributed.is_writer():
            journal.append(entry)   # no timings: identical runs write identical journals
        entries.append(entry)
        if on_step is not None:
            on_step(entry, labeled, result)
        if checkpointer is not None:
            checkpointer.close(remove=True)
        log.info("%s trial %d step %d: %d labels, test accuracy %.4f (%d epochs, %.1f s)", spec, trial,
                 step, len(labeled), result.test_accuracy, result.epochs_run, time.time() - started)
    return entries


def _label_step_zero(setup: Setup, spec: str, trial: int, pool: Pool, strategy, trial_key,
                     start, entries: list, path: Path, fingerprints: set[str]):
    """Label step 0's set: replayed from the journal on a resume, else the median initial
    model's, the strategy's first query (al.first_query="random_init", Appendix B.2) or Q0
    per trial by al.initial_rule (crc_jax.run.initial_set). Returns (initial indices,
    first-query record or None)."""
    config = setup.config
    if start is not None:
        initial = start.indices
    elif config.al.first_query == "random_init":
        initial = None
    else:
        initial = initial_set.choose(config, setup.pool_x, setup.pool_y, setup.dataset.num_classes,
                                     np.random.default_rng([config.seed, trial]))
    if entries:
        resume.replay(entries, pool, initial, path, fingerprints)
        log.info("%s trial %d: resuming after step %d", spec, trial, len(entries) - 1)
        return np.asarray(entries[0]["initial"], dtype=np.int64), None
    record = None
    if initial is None:
        initial, record = initial_model.first_query(setup, strategy, pool, trial_key,
                                                    acquisition_context)
    pool.label(initial)
    return initial, record


def _train(setup: Setup, pool: Pool, key, checkpointer, *, desc: str):
    """Train from scratch on the pool as labeled now (fit with early stopping)."""
    labeled = pool.labeled
    return fit(setup.algorithm, x_labeled=setup.pool_x[labeled],
               y_labeled=pool.labeled_labels.astype(np.int32),
               x_unlabeled=setup.pool_x[pool.unlabeled], watch=setup.watch, test=setup.test,
               train_config=setup.config.train, key=key, eval_apply=setup.eval_apply, desc=desc,
               checkpointer=checkpointer, before_step=faults.hook("train_step"))


def _step_entry(step: int, labeled: np.ndarray, result) -> dict:
    """The journal line's metrics of one step's trained model."""
    return {"step": step, "num_labeled": int(len(labeled)),
            "test_accuracy": float(result.test_accuracy), "test_loss": float(result.test_loss),
            "watch_accuracy": float(result.watch_accuracy), "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run, "min_test_loss_epoch": result.min_test_loss_epoch}


def _step_zero_fields(pool: Pool, initial: np.ndarray, fingerprint: str, start,
                      initial_record) -> dict:
    """What step 0's line adds: the config fingerprint and the initial set with its labels."""
    fields = {"config_fingerprint": fingerprint, "initial": initial.tolist(),
              "initial_labels": pool.oracle_labels(initial).tolist()}
    if start is not None:
        fields["initial_candidate"] = start.candidate
    if initial_record:
        fields["initial_record"] = initial_record
    return fields


def _acquire(setup: Setup, pool: Pool, strategy, variables, key) -> dict:
    """Run the strategy, label what it picked (process 0's choice on every process), and
    return the journal fields: acquired indices, their labels, the strategy's record."""
    ctx = acquisition_context(setup, pool, variables)
    faults.maybe_kill("acquisition")
    acquired = distributed.agree(
        acquisition.select(strategy, ctx, setup.config.al.query_size, key), what="acquisition")
    fields = {"acquired": acquired.tolist(), "labels": pool.label(acquired).tolist()}
    if ctx.record:
        fields["record"] = ctx.record
    return fields


def summary_rows(spec: str, trial: int, entries: list) -> list[dict]:
    return [{"strategy": spec, "trial": trial, "step": e["step"],
             "num_labeled": e["num_labeled"], "test_accuracy": e["test_accuracy"]}
            for e in entries]


def run(config, workdir, strategies: dict[str, acquisition.Strategy]) -> list[dict]:
    """Run every strategy x trial into `workdir`; returns the summary rows. `config` is
    checked and `strategies` ({spec: Strategy}) built by crc_jax.config.validate.

    The data are loaded and the journals checked before config.json binds the directory,
    so bad data or another run's journals leave a new directory unbound."""
    workdir = Path(workdir)
    with run_dir(workdir) as bind:  # process 0 locks and writes, alone
        setup = build_setup(config)
        bound = bind(lambda rundir: resume.bind_checked(rundir, config, workdir))
        if distributed.is_writer():
            environment.record(workdir)   # cosmetic: where the numbers came from
        start = initial_model.prepare(setup, workdir)  # None unless al.initial_model="median"
        rows = []
        for spec, strategy in strategies.items():
            for trial in range(config.trials):
                rows += summary_rows(spec, trial, run_trial(
                    setup, strategy, trial, resume.trial_dir(workdir, spec, trial), start=start,
                    bound=bound))
        if distributed.is_writer():
            durable.write_csv(workdir / "summary.csv", SUMMARY_FIELDS, rows)
    return rows
