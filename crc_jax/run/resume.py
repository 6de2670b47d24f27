"""Resuming a run: what ties a journal to its config, and replaying what it records.

A trial's step-0 journal line carries a fingerprint of what its results depend on (the
config without cosmetic fields, the strategy spec, the trial). Rerunning the same command
replays every recorded step onto a fresh pool, checking the journal belongs to this run
(same initial set, the data set's labels, same fingerprint), then continues after the last
completed step. Checkpoints of steps the journal already records are dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from crc_jax import durable
from crc_jax.data.pool import Pool
from crc_jax.errors import RunDirError
from crc_jax.run.rundir import RunDir, comparable_config, essential_config, strategy_dirname

log = logging.getLogger(__name__)


def fingerprint(*parts) -> str:
    """A short hash of JSON-serializable parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_fingerprint(config, spec: str, trial: int) -> str:
    """What a trial's results depend on: the config (cosmetic fields and fields at the
    library default aside, rundir.essential_config), the strategy spec and the trial.
    Step 0's journal line carries it."""
    return fingerprint(essential_config(config.to_dict()), spec, trial)


def legacy_run_fingerprint(config_dict: dict, spec: str, trial: int) -> str:
    """The fingerprint the first storage format's journals carry (tests/fixtures/format_v1):
    over every field of the config as bound in config.json (cosmetic fields aside)."""
    return fingerprint(comparable_config(config_dict), spec, trial)


def accepted_fingerprints(config, spec: str, trial: int, bound: dict | None) -> set[str]:
    """The fingerprints a journal of this trial may carry: this config's, and the first
    format's one of the config.json the directory is bound to (checked equal to this
    config)."""
    accepted = {run_fingerprint(config, spec, trial)}
    if bound is not None:
        accepted.add(legacy_run_fingerprint(bound, spec, trial))
    return accepted


def checkpoint_fingerprint(config, spec: str, trial: int, step: int) -> str:
    return fingerprint(essential_config(config.to_dict()), spec, trial, step)


def trial_dir(workdir: Path, spec: str, trial: int) -> Path:
    """WORKDIR/<strategy>/trial_<k>: one trial's journal and checkpoints."""
    return Path(workdir) / strategy_dirname(spec) / f"trial_{trial}"


def replay(journal_entries: list, pool: Pool, initial: np.ndarray | None, path: Path,
           fingerprints: set[str] | None = None) -> None:
    """Re-label what the journal records, checking it belongs to this run: the same initial
    set, labels that match the data set's, and (when the journal has one) a config
    fingerprint among `fingerprints` (None: not checked). Any mismatch is a RunDirError
    naming the journal; the file is not changed.
    `initial` None: the strategy chose the initial set (Appendix B.2), or the caller does
    not know it, so it is read from the journal and only its labels are checked."""
    first = journal_entries[0]
    if initial is None:
        try:
            initial = np.asarray(first.get("initial", []), dtype=np.int64)
            same = pool.oracle_labels(initial).tolist() == first.get("initial_labels")
        except (ValueError, TypeError, IndexError) as err:
            raise RunDirError(f"{path}: its initial set cannot be replayed ({err})") from None
        if not same:
            raise RunDirError(f"{path}: its initial labels differ from the data set's "
                              "(a journal from another data set)")
    elif first.get("initial") != initial.tolist():
        raise RunDirError(f"{path}: its initial labeled set differs from this config's "
                          "(a journal from another data set or seed)")
    recorded = first.get("config_fingerprint")
    if fingerprints is not None and recorded is not None and recorded not in fingerprints:
        raise RunDirError(f"{path}: written by another config (its config fingerprint "
                          "differs); use a new --workdir")
    if fingerprints is not None and recorded is None:
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
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise RunDirError(f"{path}: step {entry.get('step')} records an acquisition this "
                              f"pool cannot replay ({err}); the journal was left untouched") from None


def check_journals(config, workdir: Path, bound: dict | None) -> None:
    """Every journal this config would resume must carry an accepted fingerprint (checked
    before config.json is written, so a directory whose config.json was lost is not
    adopted)."""
    for spec in config.strategies:
        for trial in range(config.trials):
            journal = durable.Journal(trial_dir(workdir, spec, trial) / "journal.jsonl")
            entries = journal.read()
            recorded = entries[0].get("config_fingerprint") if entries else None
            if (recorded is not None
                    and recorded not in accepted_fingerprints(config, spec, trial, bound)):
                raise RunDirError(f"{journal.path}: written by another config (its config "
                                  "fingerprint differs); use a new --workdir")


def bind_checked(rundir: RunDir, config, workdir: Path) -> dict | None:
    """Bind the directory to `config` once its journals are known to be this config's.
    Returns the config.json it was already bound to (a resume), or None (a new run)."""
    if (workdir / "config.json").exists():  # another config.json: its difference is clearer
        bound = rundir.bind_config(config.to_dict())
        check_journals(config, workdir, bound)
        return bound
    check_journals(config, workdir, None)
    rundir.bind_config(config.to_dict())
    return None


def make_checkpointer(config, spec: str, trial: int, step: int, trial_dir: Path):
    """The in-training checkpointer of one AL step, or None when train.checkpoint_every is 0."""
    if not config.train.checkpoint_every:
        return None
    from crc_jax.run.checkpoint import TrainCheckpointer

    return TrainCheckpointer(trial_dir / "checkpoints" / f"step_{step}",
                             every=config.train.checkpoint_every,
                             fingerprint=checkpoint_fingerprint(config, spec, trial, step))


def remove_stale_checkpoints(trial_dir: Path, completed_steps: int) -> None:
    """Drop checkpoints of steps the journal already records (a crash after the append)."""
    for path in (trial_dir / "checkpoints").glob("step_*"):
        if int(path.name.split("_")[1]) < completed_steps:
            shutil.rmtree(path, ignore_errors=True)
