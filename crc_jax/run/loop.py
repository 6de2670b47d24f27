"""The active-learning loop (paper §4.1, docs/design.md "The protocol").

For each strategy and trial: step 0 labels Q0 images sampled class-balanced (the same
images for every strategy of a trial; crc_jax.run.initial_model holds the paper's median
initial model and the transfer setting's first query); then, `al.steps` times, the model
is trained from scratch, evaluated, and the strategy acquires Q labels. Every completed step is one
journal line (written whole and fsynced) before the next begins, so rerunning the same
command resumes after the last completed step and draws the same randomness: keys are
folded from (seed, trial, step), never carried in process state.

Layout: WORKDIR/config.json, WORKDIR/<strategy>/trial_<k>/journal.jsonl, WORKDIR/summary.csv.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from crc_jax import acquisition, data, distributed, models, ssl
from crc_jax.run import config_check, environment, faults, initial_model, initial_set
from crc_jax.data.pool import Pool
from crc_jax.errors import RunDirError
from crc_jax.run.journal import Journal
from crc_jax.run.rundir import RunDir, comparable_config, run_dir
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
    eval_apply: Callable
    features_fn: Callable
    stochastic_apply: Callable | None = None


def strategy_dirname(spec: str) -> str:
    """A file-system-safe folder name for a strategy spec ('crc:subset=all' -> 'crc-subset=all')."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", spec.replace(":", "-").replace(",", "-"))


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
    config_check.check_pool_budget(config, len(pool_x))
    config_check.check_class_counts(config, pool_y, ds.num_classes)

    options = {"width": config.model.width} if config.model.width else {}
    dropout = config.model.get("dropout", 0.0)
    if dropout:
        options["dropout"] = dropout
    # The train step runs activations in config.train.dtype (mixed precision); evaluation
    # and acquisition run the same float32 parameters with float32 activations, so
    # feature ranks and the small NTK eigenvalues CRC ranks by keep float32 precision.
    model = models.get(config.model.name, num_classes=ds.num_classes, **options)
    train_model = models.get(config.model.name, num_classes=ds.num_classes,
                             dtype=config.train.dtype, **options)
    num_train_steps = config.train.max_epochs * config.train.steps_per_epoch
    algorithm = ssl.create(config, train_model, num_train_steps=num_train_steps, flip=ds.flip)

    def eval_apply(variables, x):
        return model.apply(variables, x, train=False)

    def features_fn(variables, x):
        return model.apply(variables, x, train=False, return_features=True)[1]

    def stochastic_apply(variables, x, key):  # MC dropout: dropout on, BatchNorm in eval mode
        return model.apply(variables, x, train=False, rngs={"dropout": key})

    return Setup(config=config, dataset=ds, pool_x=pool_x, pool_y=pool_y, watch=watch,
                 test=test, model=model, algorithm=algorithm, eval_apply=eval_apply,
                 features_fn=features_fn,
                 stochastic_apply=stochastic_apply if dropout else None)


def make_strategy(config, spec: str):
    """The strategy callable for a spec, with config.al.group_size and acquisition.<name> options.

    In the pseudo-AL setting (paper Table 3) every strategy acquires R = Q/C images of each
    class: a strategy that builds class-balanced groups itself (CRC) gets
    class_balanced=True; any other is run once per class on that class's unlabeled images.
    """
    name, spec_options = acquisition.parse_spec(spec)
    options = dict(config.acquisition.get(name, {}))
    traits = acquisition.STRATEGIES.traits(name)   # declared at registration
    if traits.get("group_size"):
        options["group_size"] = config.al.group_size
    balances_itself = bool(traits.get("class_balanced"))
    if config.al.pseudo_al and balances_itself:
        options["class_balanced"] = True
    options.update(spec_options)
    strategy = acquisition.STRATEGIES.get(name, **options)
    if config.al.pseudo_al and not balances_itself:
        return per_class(strategy)
    return strategy


def per_class(strategy):
    """Run `strategy` once per class on that class's unlabeled images, budget/C each."""

    def class_balanced_strategy(ctx, budget, key):
        per = budget // ctx.num_classes
        classes = ctx.oracle(ctx.unlabeled)
        picked, records = [], {}
        for c in range(ctx.num_classes):
            # a record of its own: dataclasses.replace would share ctx's dict
            sub = dataclasses.replace(ctx, unlabeled=ctx.unlabeled[classes == c], record={})
            picked.append(np.asarray(strategy(sub, per, jax.random.fold_in(key, c))))
            if sub.record:
                records[str(c)] = sub.record
        if records:
            ctx.record["per_class"] = records
        return np.concatenate(picked)

    return class_balanced_strategy


def acquisition_context(setup: Setup, pool: Pool, variables) -> acquisition.Context:
    """What a strategy sees at one acquisition: `variables` and the pool as it stands."""
    config = setup.config
    return acquisition.Context(
        apply_fn=setup.eval_apply, x=setup.pool_x, variables=variables,
        labeled=pool.labeled.copy(), unlabeled=pool.unlabeled.copy(),
        num_classes=setup.dataset.num_classes, features_fn=setup.features_fn,
        oracle=pool.oracle_labels if config.al.pseudo_al else None, model=setup.model,
        stochastic_apply_fn=setup.stochastic_apply, batch_size=config.train.eval_batch_size)


def _check_acquired(acquired: np.ndarray, pool: Pool, budget: int, spec: str) -> np.ndarray:
    acquired = np.asarray(acquired, dtype=np.int64)
    unlabeled = set(pool.unlabeled.tolist())
    if (acquired.ndim != 1 or len(acquired) != budget or len(set(acquired.tolist())) != budget
            or not set(acquired.tolist()) <= unlabeled):
        raise RuntimeError(f"strategy {spec!r} returned an invalid selection: it must be "
                           f"{budget} distinct unlabeled indices")
    return acquired


def run_fingerprint(config, spec: str, trial: int) -> str:
    """A short hash of what a trial's results depend on: the config (cosmetic fields aside),
    the strategy spec and the trial. Step 0's journal line carries it."""
    body = json.dumps([comparable_config(config.to_dict()), spec, trial], sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def replay(journal_entries: list, pool: Pool, initial: np.ndarray | None, path: Path,
           fingerprint: str | None = None) -> None:
    """Re-label what the journal records, checking it belongs to this run: the same initial
    set, labels that match the data set's, and (when the journal has one) the same config
    fingerprint. Any mismatch is a RunDirError naming the journal; the file is not changed.
    `initial` None: the strategy chose the initial set (Appendix B.2), so it is read from
    the journal and only its labels are checked."""
    first = journal_entries[0]
    if initial is None:
        try:
            initial = np.asarray(first.get("initial", []), dtype=np.int64)
            same = pool.oracle_labels(initial).tolist() == first.get("initial_labels")
        except (ValueError, TypeError) as err:
            raise RunDirError(f"{path}: its initial set cannot be replayed ({err})") from None
        if not same:
            raise RunDirError(f"{path}: its initial labels differ from the data set's "
                              "(a journal from another data set)")
    elif first.get("initial") != initial.tolist():
        raise RunDirError(f"{path}: its initial labeled set differs from this config's "
                          "(a journal from another data set or seed)")
    recorded = first.get("config_fingerprint")
    if fingerprint is not None and recorded is not None and recorded != fingerprint:
        raise RunDirError(f"{path}: written by another config (its config fingerprint "
                          "differs); use a new --workdir")
    if recorded is None:
        log.warning("%s: no config fingerprint (written by an older version); not checked", path)
    pool.label(initial)
    for entry in journal_entries:
        try:
            acquired = np.asarray(entry.get("acquired", []), dtype=np.int64)
            if len(acquired):
                labels = pool.label(acquired)
                if labels.tolist() != entry["labels"]:
                    raise RunDirError(f"{path}: step {entry['step']} records labels that differ "
                                      "from the data set's (a journal from another data set)")
        except (ValueError, TypeError, KeyError) as err:
            raise RunDirError(f"{path}: step {entry.get('step')} records an acquisition this "
                              f"pool cannot replay ({err}); the journal was left untouched") from None


def make_checkpointer(config, spec: str, trial: int, step: int, trial_dir: Path):
    """The in-training checkpointer of one AL step, or None when train.checkpoint_every is 0."""
    if not config.train.checkpoint_every:
        return None
    from crc_jax.run.checkpoint import TrainCheckpointer

    body = json.dumps([comparable_config(config.to_dict()), spec, trial, step], sort_keys=True)
    return TrainCheckpointer(trial_dir / "checkpoints" / f"step_{step}",
                             every=config.train.checkpoint_every,
                             fingerprint=hashlib.sha256(body.encode()).hexdigest()[:16])


def remove_stale_checkpoints(trial_dir: Path, completed_steps: int) -> None:
    """Drop checkpoints of steps the journal already records (a crash after the append)."""
    for path in (trial_dir / "checkpoints").glob("step_*"):
        if int(path.name.split("_")[1]) < completed_steps:
            shutil.rmtree(path, ignore_errors=True)


def run_trial(setup: Setup, spec: str, trial: int, trial_dir: Path,
              on_step: Callable | None = None,
              start: initial_model.InitialModel | None = None) -> list[dict]:
    """Run (or resume) one trial of one strategy; returns its journal entries.

    on_step(entry, labeled, result), if given, is called after each step that runs here
    (not for steps replayed from the journal): figures use it to see the trained model.
    start: the run's median initial model (crc_jax.run.initial_model), used as step 0.
    """
    config = setup.config
    journal = Journal(trial_dir / "journal.jsonl")
    entries = distributed.from_writer(journal.read, errors=(RunDirError,))
    pool = Pool(setup.pool_y, setup.dataset.num_classes)
    strategy = make_strategy(config, spec)
    trial_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), trial)
    fingerprint = run_fingerprint(config, spec, trial)
    initial, initial_record = _label_step_zero(setup, spec, trial, pool, strategy, trial_key,
                                               start, entries, journal.path, fingerprint)
    if distributed.is_writer():
        remove_stale_checkpoints(trial_dir, len(entries))

    for step in range(len(entries), config.al.steps + 1):
        started = time.time()
        train_key, acquire_key = jax.random.split(jax.random.fold_in(trial_key, step))
        labeled = pool.labeled
        checkpointer = None
        if step == 0 and start is not None:
            result = start.result  # trained once for the whole run
        else:
            checkpointer = make_checkpointer(config, spec, trial, step, trial_dir)
            result = _train(setup, pool, train_key, checkpointer,
                            desc=f"{spec} t{trial} s{step} n={len(labeled)}")
        entry = _step_entry(step, labeled, result)
        if step == 0:
            entry.update(_step_zero_fields(pool, initial, fingerprint, start, initial_record))
        if step < config.al.steps:
            entry.update(_acquire(setup, pool, strategy, result.variables, acquire_key, spec))
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
                     start, entries: list, path: Path, fingerprint: str):
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
        replay(entries, pool, initial, path, fingerprint)
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


def _acquire(setup: Setup, pool: Pool, strategy, variables, key, spec: str) -> dict:
    """Run the strategy, label what it picked (process 0's choice on every process), and
    return the journal fields: acquired indices, their labels, the strategy's record."""
    ctx = acquisition_context(setup, pool, variables)
    faults.maybe_kill("acquisition")
    query = setup.config.al.query_size
    acquired = distributed.agree(strategy(ctx, query, key), what="acquisition")
    acquired = _check_acquired(acquired, pool, query, spec)
    fields = {"acquired": acquired.tolist(), "labels": pool.label(acquired).tolist()}
    if ctx.record:
        fields["record"] = ctx.record
    return fields


def summary_rows(spec: str, trial: int, entries: list) -> list[dict]:
    return [{"strategy": spec, "trial": trial, "step": e["step"],
             "num_labeled": e["num_labeled"], "test_accuracy": e["test_accuracy"]}
            for e in entries]


def write_summary(path: Path, rows: list[dict], fields=SUMMARY_FIELDS) -> None:
    """rows as CSV at `path`, written to a temporary file and renamed (never half written)."""
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def check_journals(config, workdir: Path) -> None:
    """Every journal this config would resume must carry its fingerprint (checked before
    config.json is written, so a directory whose config.json was lost is not adopted)."""
    for spec in config.strategies:
        for trial in range(config.trials):
            journal = Journal(workdir / strategy_dirname(spec) / f"trial_{trial}" / "journal.jsonl")
            entries = journal.read()
            recorded = entries[0].get("config_fingerprint") if entries else None
            if recorded is not None and recorded != run_fingerprint(config, spec, trial):
                raise RunDirError(f"{journal.path}: written by another config (its config "
                                  "fingerprint differs); use a new --workdir")


def bind_checked(rundir: RunDir, config, workdir: Path) -> None:
    """Bind the directory to `config` once its journals are known to be this config's."""
    bound = (workdir / "config.json").exists()
    if bound:  # another config.json: its difference is the clearer message
        rundir.bind_config(config.to_dict())
    check_journals(config, workdir)
    if not bound:
        rundir.bind_config(config.to_dict())


def run(config, workdir) -> list[dict]:
    """Validate, then run every strategy x trial into `workdir`; returns the summary rows.

    The data are loaded and the journals checked before config.json binds the directory,
    so bad data or another run's journals leave a new directory unbound."""
    config_check.validate(config)
    workdir = Path(workdir)
    with run_dir(workdir) as bind:  # process 0 locks and writes, alone
        setup = build_setup(config)
        bind(lambda rundir: bind_checked(rundir, config, workdir))
        if distributed.is_writer():
            environment.record(workdir)   # cosmetic: where the numbers came from
        start = initial_model.prepare(setup, workdir)  # None unless al.initial_model="median"
        rows = []
        for spec in config.strategies:
            for trial in range(config.trials):
                trial_dir = workdir / strategy_dirname(spec) / f"trial_{trial}"
                rows += summary_rows(spec, trial, run_trial(setup, spec, trial, trial_dir,
                                                            start=start))
        if distributed.is_writer():
            write_summary(workdir / "summary.csv", rows)
    return rows
