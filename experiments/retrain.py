"""Re-train models on the labeled sets a run recorded (paper Appendix B.1 and B.2).

    python -m experiments.retrain RUN_DIR [--seeds N] [--first_seed S] [--out DIR]
                                          [--strategies a,b] [--config.model.name=mlp ...]

For every strategy, trial and step of RUN_DIR's journals, the labeled set of that step
(the initial set plus the acquisitions before it) is fixed and a model is trained from
scratch on it with N training seeds (S, S+1, ...; default S = the run's seed + 1, fresh
ones). Appendix B.1 uses this to separate the variance due to the acquired data sets
from the training variance of the SSL algorithm on a fixed data set; overriding the
model or the SSL algorithm (`--config.model.name=...`, `--config.ssl.name=...`) measures
how the acquired sets transfer to another architecture (B.2's harder form).

With the run's own config and `--first_seed` equal to its seed, a step is trained with
exactly the key the run used, so the accuracies are reproduced (except step 0 of a
median-initial-model run, trained once with the candidate's key). The data set, its
seed and the validation split cannot be overridden: the journals index that pool.

Writes OUT (default RUN_DIR/retrain): config.json, one journal per (strategy, trial,
seed), summary.csv (of the strategies retrained so far; `--strategies` picks some) (columns
of a main run's summary, trial = dataset trial * N + seed
index, plus dataset_trial and training_seed), report.md/csv/png as experiments.report,
and variance.md: per strategy and labeled count, the SD over all runs, the training
SD on a fixed data set (sqrt of the mean within-data-set variance) and the data-set SD
(SD of the per-data-set means); every SD a sample standard deviation (ddof = 1).
Rerunning the same command resumes. OUT must be new, empty, or made by this command (its
marker file, or a config.json this command wrote): a folder holding other files is
refused, never overwritten, and a refused OUT is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from crc_jax.errors import UsageError
from crc_jax.runtime import command

MARKER = ".crc_jax-retrain"  # in every OUT this command made (crc_jax.durable.claim_dir)
# Fields that define the pool the journals index into: retraining may not change them.
FIXED_FIELDS = ("seed", "dataset.name", "dataset.data_dir", "dataset.train_size",
                "dataset.test_size", "train.watch", "train.val_size")
FIELDS = ("strategy", "trial", "step", "num_labeled", "test_accuracy", "dataset_trial",
          "training_seed")

log = logging.getLogger(__name__)


def run_config(run_dir: Path, overrides: list[str]):
    """The run's config (its config.json over today's defaults, locked) with `overrides`
    (`--config.a.b=v`, experiments.configs.overrides) set; UsageError naming a bad one."""
    import ml_collections

    from experiments import configs
    from experiments.configs.base import get_base_config, set_fields

    config = ml_collections.ConfigDict(with_defaults(
        json.loads(json.dumps(get_base_config().to_dict())),
        json.loads((run_dir / "config.json").read_text())))
    config.lock()   # an override cannot add a field
    try:
        given = configs.overrides(config, list(overrides))
    except ValueError as err:
        raise UsageError(str(err)) from None
    for dotted, value in given.items():
        if dotted in FIXED_FIELDS:
            raise UsageError(f"--config.{dotted}: cannot be changed, the journals index the "
                             "run's own pool")
        try:
            set_fields(config, {dotted: value})
        except (TypeError, ValueError) as err:
            raise UsageError(f"--config.{dotted}: bad value {value!r} ({err})") from None
    return config


def with_defaults(defaults: dict, recorded: dict) -> dict:
    """`recorded` (a run's config.json) over `defaults`: fields added to crc_jax after the
    run was made take their default values."""
    out = dict(defaults)
    for key, value in recorded.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict):
            out[key] = with_defaults(defaults[key], value)
        else:
            out[key] = value
    return out


def labeled_sets(entries: list[dict]) -> list[np.ndarray]:
    """The labeled set trained on at each recorded step: the initial set, then each step's
    acquisitions appended in order."""
    labeled = np.asarray(entries[0]["initial"], dtype=np.int64)
    sets = []
    for entry in entries:
        sets.append(labeled)
        labeled = np.concatenate([labeled, np.asarray(entry.get("acquired", []), np.int64)])
    return sets


def source_journals(run_dir: Path, strategies) -> dict:
    """{(strategy, trial): entries} for every journal of the run, in config order."""
    from crc_jax import durable
    from crc_jax.run.rundir import strategy_dirname

    found = {}
    for spec in strategies:
        for path in sorted((run_dir / strategy_dirname(spec)).glob("trial_*/journal.jsonl")):
            entries = durable.Journal(path).entries()
            if entries:
                found[(spec, int(path.parent.name.split("_")[1]))] = entries
    return found


def check_labels(setup, entries: list[dict], path: str) -> None:
    """The journal's recorded labels must be the pool's (the same data set and split):
    replayed onto a fresh pool as a resumed run replays it (crc_jax.run.resume)."""
    from crc_jax.data.pool import Pool
    from crc_jax.run import resume

    resume.replay(entries, Pool(setup.pool_y, setup.dataset.num_classes), None, Path(path))


def retrain_one(setup, sets, journal, *, trial: int, seed: int, desc: str) -> list[dict]:
    """Train (or resume) one (strategy, trial, seed) over every step; its journal entries."""
    from crc_jax.run.loop import step_keys
    from crc_jax.train import fit

    entries = journal.read()
    for step in range(len(entries), len(sets)):
        labeled = sets[step]
        unlabeled = np.setdiff1d(np.arange(len(setup.pool_y)), labeled)
        result = fit(setup.algorithm, x_labeled=setup.pool_x[labeled],
                     y_labeled=setup.pool_y[labeled].astype(np.int32),
                     x_unlabeled=setup.pool_x[unlabeled], watch=setup.watch, test=setup.test,
                     train_config=setup.config.train, key=step_keys(seed, trial, step)[0],
                     eval_apply=setup.eval_apply, desc=f"{desc} s{step} n={len(labeled)}")
        entry = {"step": step, "num_labeled": int(len(labeled)), "training_seed": seed,
                 "test_accuracy": float(result.test_accuracy),
                 "test_loss": float(result.test_loss),
                 "watch_accuracy": float(result.watch_accuracy),
                 "best_epoch": result.best_epoch, "epochs_run": result.epochs_run}
        journal.append(entry)
        entries.append(entry)
        log.info("%s step %d: %d labels, test accuracy %.4f", desc, step, len(labeled),
                 result.test_accuracy)
    return entries


def variance_table(rows: list[dict]) -> str:
    """Markdown: per strategy and labeled count, total / training / data-set SD (%), each a
    sample standard deviation (ddof = 1): over all runs; within a data set, pooled over the
    data sets (sqrt of the mean within-set variance; needs two seeds or more, "–" with one);
    and of the per-data-set means."""
    from experiments import stats

    cells = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[(r["strategy"], r["num_labeled"])][r["dataset_trial"]].append(
            100.0 * r["test_accuracy"])
    lines = ["| strategy | # labeled | mean | SD (all runs) | training SD (fixed set) "
             "| data-set SD | data sets x seeds |", "|---|---|---|---|---|---|---|"]
    for (spec, n), by_set in cells.items():
        values = [v for vs in by_set.values() for v in vs]
        within = [np.var(vs, ddof=1) if len(vs) > 1 else np.nan for vs in by_set.values()]
        means = [np.mean(vs) for vs in by_set.values()]
        seeds = max(len(vs) for vs in by_set.values())
        training = f"{np.sqrt(np.mean(within)):.2f}" if seeds > 1 else "–"  # one seed: unknown
        lines.append(f"| {spec} | {n} | {np.mean(values):.2f} | {stats.sample_sd(values):.2f} | "
                     f"{training} | {stats.sample_sd(means):.2f} | {len(by_set)} x {seeds} |")
    return "\n".join(lines) + "\n"


def retrain(run_dir, *, seeds: int, first_seed: int | None, out=None,
            overrides: list[str] = (), strategies=None) -> list[dict]:
    """Re-train every recorded step of `run_dir` with `seeds` training seeds into `out`
    (only the given `strategies` of the run, when given)."""
    from crc_jax import config as config_lib
    from crc_jax import durable
    from crc_jax.run import loop
    from experiments import report

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UsageError(f"{run_dir}: no config.json (not a run directory of experiments.main)")
    config = run_config(run_dir, overrides)
    config_lib.validate(config)
    first_seed = config.seed + 1 if first_seed is None else first_seed
    if seeds < 1 or first_seed < 0:
        raise UsageError("--seeds must be >= 1 and --first_seed >= 0")
    out = Path(out) if out else run_dir / "retrain"
    chosen = list(config.strategies)
    if strategies:
        unknown = [s for s in strategies if s not in chosen]
        if unknown:
            raise UsageError(f"--strategies: {unknown} not in the run's strategies {chosen}")
        chosen = [s for s in chosen if s in strategies]
    journals = source_journals(run_dir, chosen)
    if not journals:
        raise UsageError(f"{run_dir}: no journals to retrain on")
    rows = []
    with claimed_out(out, dict(config.to_dict(), retrain={
            "source": str(run_dir.resolve()), "first_seed": first_seed})):
        setup = loop.build_setup(config)
        for (spec, trial), entries in journals.items():
            check_labels(setup, entries, f"{run_dir}/{spec}/trial_{trial}")
            sets = labeled_sets(entries)
            for i in range(seeds):
                seed = first_seed + i
                path = out / loop.strategy_dirname(spec) / f"trial_{trial}" / f"seed_{seed}"
                done = retrain_one(setup, sets, durable.Journal(path / "journal.jsonl"), trial=trial,
                                   seed=seed, desc=f"{spec} t{trial} seed {seed}")
                rows += [{"strategy": spec, "trial": trial * seeds + i, "step": e["step"],
                          "num_labeled": e["num_labeled"], "test_accuracy": e["test_accuracy"],
                          "dataset_trial": trial, "training_seed": seed} for e in done]
        write_rows(out / "summary.csv", rows)
        report.write_report([out], out_dir=out)
        (out / "variance.md").write_text(
            f"# Retrained on {run_dir}: variance over data sets and training seeds "
            "(Appendix B.1)\n\nAccuracies in %.\n\n" + variance_table(rows))
    return rows


def made_by_retrain(config_json: Path) -> bool:
    """Whether `config_json` is one this command wrote (it records its "retrain" source)."""
    try:
        recorded = json.loads(config_json.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and isinstance(recorded.get("retrain"), dict)


@contextlib.contextmanager
def claimed_out(out: Path, config_dict: dict):
    """OUT claimed (crc_jax.durable.claim_dir), locked and bound to `config_dict`, for the
    block. A refusal (someone else's folder, another retrain's config, a folder in use)
    leaves OUT as it was: the folder, marker and lock file made here are removed."""
    from crc_jax import durable
    from crc_jax.run.rundir import RunDir

    made = [p for p in (out, out / MARKER, out / ".lock") if not os.path.lexists(p)]
    accept = ("config.json",) if made_by_retrain(out / "config.json") else ()
    bound = False
    try:
        durable.claim_dir(out, MARKER, command="experiments.retrain", accept=accept,
                          flag="--out")
        with RunDir(out, option="--out") as rundir:
            rundir.bind_config(config_dict)
            bound = True
            yield rundir
    finally:
        if not bound and out in made:
            shutil.rmtree(out, ignore_errors=True)
        elif not bound:
            for path in made:
                path.unlink(missing_ok=True)


def write_rows(path: Path, rows: list[dict]) -> None:
    from crc_jax import durable

    durable.write_csv(path, FIELDS, rows)


def main(argv=None) -> int:
    """The command (`python -m experiments.retrain`): the exit status."""
    parser = command.ArgumentParser(prog="python -m experiments.retrain",
                                    description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per data set")
    parser.add_argument("--first_seed", type=int, default=None,
                        help="first training seed (default: the run's seed + 1)")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/retrain)")
    parser.add_argument("--strategies", default="",
                        help="comma-separated strategies of the run to retrain (default: all)")

    def work() -> None:
        args, overrides = parser.parse_known_args(argv)
        retrain(args.run_dir, seeds=args.seeds, first_seed=args.first_seed, out=args.out,
                overrides=overrides,
                strategies=[s for s in args.strategies.split(",") if s] or None)
        print((Path(args.out or Path(args.run_dir) / "retrain") / "variance.md").read_text())

    return command.run(work, interrupted=lambda: "completed steps are kept; rerun the same "
                                                 "command to resume", own_process=argv is None)


if __name__ == "__main__":
    sys.exit(main())
