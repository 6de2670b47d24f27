"""Every experiment config runs end to end at smoke scale (TFDS sets through mock_data).

The paper configs keep their data set, SSL algorithm, strategies and Q0/Q/G; smoke
shrinks the model, trials and training. The fast suite runs a representative few; the
slow target runs them all.
"""

import csv
import importlib
from pathlib import Path

import pytest

from crc_jax.run import loop
from experiments import report
from experiments.configs.base import apply_smoke
from conftest import run_loop

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"
ALL = sorted(p.stem for p in CONFIG_DIR.glob("*.py")
             if p.stem not in ("__init__", "base", "ntk_compare", "mechanism"))
# svhn_mt at smoke scale runs in the fast suite through the CLI: tests/test_readme_commands.py
FAST = ("digits",)
TFDS_SETS = ("svhn", "cifar10", "cifar100")


def smoke_config(name):
    config = importlib.import_module(f"experiments.configs.{name}").get_config()
    config.smoke = True
    apply_smoke(config)
    return config


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in ALL])
def test_config_runs_end_to_end_at_smoke_scale(name, tmp_path):
    config = smoke_config(name)
    workdir = tmp_path / name
    if config.dataset.name in TFDS_SETS:
        import tensorflow_datasets as tfds

        with tfds.testing.mock_data(num_examples=1000):
            rows = run_loop(config, workdir)
    else:
        rows = run_loop(config, workdir)
    table = report.write_report([workdir], out_dir=workdir)

    al = config.al
    expected_counts = [al.initial_size + s * al.query_size for s in range(al.steps + 1)]
    with open(workdir / "summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == len(rows) == len(config.strategies) * config.trials * (al.steps + 1)
    for spec in config.strategies:
        counts = [int(r["num_labeled"]) for r in summary if r["strategy"] == spec]
        assert counts == expected_counts * config.trials
        assert all(0.0 <= float(r["test_accuracy"]) <= 1.0 for r in summary)
        assert spec in table
        journal = workdir / loop.strategy_dirname(spec) / "trial_0" / "journal.jsonl"
        assert journal.read_text().count("\n") == al.steps + 1
    for out in ("report.md", "report.csv", "learning_curve.png"):
        assert (workdir / out).stat().st_size > 0


def test_every_config_documents_command_and_expectation():
    for name in ALL + ["base"]:
        doc = importlib.import_module(f"experiments.configs.{name}").__doc__ or ""
        if name != "base":
            assert "Command:" in doc and "Expect:" in doc, name
