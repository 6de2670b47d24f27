"""experiments.retrain (Appendix B.1): re-training on a run's recorded labeled sets."""

import csv
import json

import numpy as np
import pytest

from conftest import run_loop, tiny_digits  # tests/conftest.py
from crc_jax.run import loop
from experiments import retrain


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    c = tiny_digits(**{"strategies": ("entropy",), "al.steps": 2})
    workdir = tmp_path_factory.mktemp("run")
    run_loop(c, workdir)
    return workdir


def summary(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_labeled_sets_grow_by_each_steps_acquisitions():
    entries = [{"initial": [5, 1], "acquired": [7]}, {"acquired": [2, 9]}, {}]
    sets = retrain.labeled_sets(entries)
    assert [s.tolist() for s in sets] == [[5, 1], [5, 1, 7], [5, 1, 7, 2, 9]]


def test_retrain_with_the_runs_seed_and_model_reproduces_its_accuracies(run_dir, tmp_path):
    rows = retrain.retrain(run_dir, seeds=1, first_seed=0, out=tmp_path / "same")
    original = {(r["strategy"], int(r["trial"]), int(r["step"])): float(r["test_accuracy"])
                for r in summary(run_dir / "summary.csv")}
    again = {(r["strategy"], r["dataset_trial"], r["step"]): r["test_accuracy"] for r in rows}
    assert again.keys() == original.keys() and len(again) == 2 * 3  # trials x steps
    assert again == original
    # The summary keeps the columns of a main run's, so experiments.report reads it.
    written = summary(tmp_path / "same" / "summary.csv")
    assert set(loop.SUMMARY_FIELDS) <= set(written[0])
    assert (tmp_path / "same" / "report.md").exists()


def test_fresh_seeds_resume_and_separate_the_variances(run_dir, tmp_path, monkeypatch):
    out = tmp_path / "fresh"
    rows = retrain.retrain(run_dir, seeds=2, first_seed=None, out=out)
    assert {r["training_seed"] for r in rows} == {1, 2}
    assert len(rows) == 2 * 2 * 3  # trials x seeds x steps
    num_labeled = {(r["strategy"], r["dataset_trial"], r["step"]): r["num_labeled"] for r in rows}
    assert set(num_labeled.values()) == {20, 30, 40}
    table = (out / "variance.md").read_text()
    assert "training SD" in table and "| entropy | 20 |" in table
    # Hand-computed decomposition for one cell.
    cell = [r for r in rows if r["strategy"] == "entropy" and r["num_labeled"] == 40]
    by_set = {}
    for r in cell:
        by_set.setdefault(r["dataset_trial"], []).append(100 * r["test_accuracy"])
    training = np.sqrt(np.mean([np.var(v, ddof=1) for v in by_set.values()]))
    datasets = np.std([np.mean(v) for v in by_set.values()], ddof=1)
    assert f"| entropy | 40 | {np.mean(sum(by_set.values(), [])):.2f} |" in table
    assert f"{training:.2f} | {datasets:.2f} | 2 x 2 |" in table

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished retrain trained again")

    monkeypatch.setattr("crc_jax.train.fit", must_not_train)
    assert retrain.retrain(run_dir, seeds=2, first_seed=None, out=out) == rows


def test_variance_table_by_hand():
    rows = [{"strategy": "s", "num_labeled": 10, "dataset_trial": t, "test_accuracy": a}
            for t, a in [(0, 0.5), (0, 0.7), (1, 0.9), (1, 0.9)]]
    # Sample SDs (n − 1): all runs sqrt((25² + 5² + 15² + 15²) / 3) = 19.15; within-set
    # variances 200 and 0 -> training SD sqrt(100) = 10; set means 60, 90 -> 15·√2 = 21.21.
    table = retrain.variance_table(rows)
    assert "| s | 10 | 75.00 | 19.15 | 10.00 | 21.21 | 2 x 2 |" in table
    one_seed = retrain.variance_table([r for r in rows if r["test_accuracy"] != 0.7][:2])
    assert "| – | 28.28 | 2 x 1 |" in one_seed      # means 50, 90: 20·√2


def test_an_older_runs_config_gets_the_fields_added_since():
    merged = retrain.with_defaults({"a": 1, "train": {"x": 1, "y": 2}, "new": {"z": 3}},
                                   {"a": 5, "train": {"x": 7}})
    assert merged == {"a": 5, "train": {"x": 7, "y": 2}, "new": {"z": 3}}


def test_retrain_on_another_model(run_dir, tmp_path):
    out = tmp_path / "mlp"
    rows = retrain.retrain(run_dir, seeds=1, first_seed=0, out=out,
                           overrides=["--config.model.name=mlp", "--config.model.width=32"])
    written = json.loads((out / "config.json").read_text())
    assert written["model"]["name"] == "mlp" and written["retrain"]["first_seed"] == 0
    assert len(rows) == 6 and all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows)


@pytest.mark.parametrize("argv, message", [
    (["--config.model.nme=mlp"], "model.nme: no such config field"),
    (["--config.seed=3"], "seed: cannot be changed"),
    (["--config.train.max_epochs=many"], "train.max_epochs: bad value"),
    (["--config.model.name=resnet"], "model.name"),
    (["--seeds=0"], "--seeds must be >= 1"),
    (["--bogus"], "unrecognized argument"),
    (["--strategies=crc"], "--strategies: ['crc'] not in the run's strategies"),
])
def test_bad_arguments_end_with_one_line_and_status_2(run_dir, tmp_path, capsys, argv, message):
    out = tmp_path / "bad"
    assert retrain.main([str(run_dir), "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def users_folder(path, *, config=True):
    path.mkdir()
    files = {"report.md": "# my notes\n", "summary.csv": "my,own\n1,2\n"}
    if config:
        files["config.json"] = '{"my": "settings"}\n'
    for name, text in files.items():
        (path / name).write_text(text)
    return files


def listing(path):
    return {p.name: p.read_text() for p in path.iterdir()}


def test_out_holding_the_users_config_json_is_refused_and_left_as_it_was(run_dir, tmp_path, capsys):
    """A config.json that retrain did not write does not make a folder retrain's: refused in
    one line (no marker, no lock file left), and refused again once the user removes it."""
    out = tmp_path / "mine"
    files = users_folder(out)
    for _ in range(2):
        assert retrain.main([str(run_dir), "--out", str(out), "--seeds", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not empty and not made by experiments.retrain" in err[0], err
        assert len(err[0]) < 300
        assert listing(out) == files
        (out / "config.json").unlink(missing_ok=True)   # the user removes theirs: still refused
        files.pop("config.json", None)


def test_a_refused_bind_leaves_no_marker_or_lock(run_dir, tmp_path, capsys):
    """OUT holding another retrain's config.json: accepted as retrain's folder, then refused
    by the config check, and left holding that config.json alone."""
    out = tmp_path / "other"
    out.mkdir()
    other = json.loads((run_dir / "config.json").read_text())
    other["retrain"] = {"source": "/elsewhere", "first_seed": 99}
    (out / "config.json").write_text(json.dumps(other))
    assert retrain.main([str(run_dir), "--out", str(out), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "retrain.first_seed: 99 -> 1" in err
    assert err.startswith(f"error: --out {out} holds a run") and "use a new --out" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
