"""The digits_study config at smoke scale: every strategy runs, and strategies are paired
by trial (the same initial labeled set and the same step-0 model in each trial)."""

import json

import pytest

from crc_jax.run import loop
from experiments import report
from experiments.configs import digits_study
from experiments.configs.base import apply_smoke
from conftest import run_loop


@pytest.mark.slow  # kept out of `make test` (10-minute budget); `make test-slow` runs it
def test_digits_study_smoke_runs_every_strategy_paired(tmp_path):
    config = digits_study.get_config()
    config.smoke = True
    apply_smoke(config)
    config.trials = 2            # two trials, to see pairing within and difference across
    config.al.steps = 1
    rows = run_loop(config, tmp_path)
    assert {r["strategy"] for r in rows} == set(digits_study.STRATEGIES)
    assert len(rows) == len(digits_study.STRATEGIES) * 2 * 2
    for trial in range(2):
        firsts = [json.loads((tmp_path / loop.strategy_dirname(s) / f"trial_{trial}"
                              / "journal.jsonl").read_text().splitlines()[0])
                  for s in digits_study.STRATEGIES]
        assert len({tuple(e["initial"]) for e in firsts}) == 1
        assert len({e["test_accuracy"] for e in firsts}) == 1
    assert firsts[0]["initial"] != json.loads((tmp_path / "random" / "trial_0" / "journal.jsonl")
                                              .read_text().splitlines()[0])["initial"]
    report.write_report([tmp_path], out_dir=tmp_path)
    assert (tmp_path / "learning_curve.png").exists()
