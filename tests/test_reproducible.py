"""Where results hold (issue 27): the same config gives byte-identical journals run twice in
one process and in two separate processes on this machine, and every run directory records
the environment that produced it (WORKDIR/environment.json), leaving a user's file alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_loop, tiny_digits  # tests/conftest.py
from crc_jax.errors import RunDirError
from crc_jax.run import environment

ROOT = Path(__file__).resolve().parents[1]
CLI_FIELDS = ["--config=digits", "--config.trials=2", "--config.strategies=('random','crc')",
              "--config.model.width=4", "--config.train.max_epochs=2",
              "--config.train.steps_per_epoch=2", "--config.train.patience=0",
              "--config.train.batch_size=16", "--config.train.progress=False", "--config.al.steps=2"]


def tiny_config():
    """The config CLI_FIELDS give, built in this process."""
    return tiny_digits(**{"strategies": ("random", "crc"), "al.steps": 2})


def files(workdir: Path) -> dict:
    """{relative path: bytes} of the journals and the summary."""
    found = sorted(workdir.glob("*/trial_*/journal.jsonl")) + [workdir / "summary.csv"]
    return {str(p.relative_to(workdir)): p.read_bytes() for p in found}


def test_same_config_same_journals_in_one_process_and_in_two(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.main", *CLI_FIELDS,
                               f"--workdir={tmp_path / name}"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("process_a", "process_b")]
    for name in ("in_process_a", "in_process_b"):
        run_loop(tiny_config(), tmp_path / name)
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]

    runs = {name: files(tmp_path / name)
            for name in ("in_process_a", "in_process_b", "process_a", "process_b")}
    reference = runs["in_process_a"]
    assert len(reference) == 5   # 2 strategies x 2 trials + summary.csv
    assert any(b'"record":{"crc"' in data for data in reference.values())  # CRC's scores too
    for name, run in runs.items():
        assert run == reference, name
    for name in runs:   # every run directory says where it ran
        recorded = json.loads((tmp_path / name / "environment.json").read_text())
        (env_0,) = recorded["environments"]
        assert env_0["packages"]["jax"] and env_0["backend"] == "cpu" and env_0["cpu_model"]
        assert "XLA_FLAGS" in env_0["environment_variables"]   # tests/conftest.py sets it


def test_environment_is_recorded_once_per_distinct_environment(tmp_path, monkeypatch):
    path = environment.record(tmp_path)
    environment.record(tmp_path)
    assert len(json.loads(path.read_text())["environments"]) == 1
    real = environment.describe

    monkeypatch.setattr(environment, "describe", lambda: dict(real(), cpu_model="another CPU"))
    environment.record(tmp_path)
    envs = json.loads(path.read_text())["environments"]
    assert [e["cpu_model"] for e in envs][1:] == ["another CPU"]


@pytest.mark.parametrize("content", ['{"my": "notes"}', "not json at all", "[]"])
def test_a_users_environment_json_is_left_alone(tmp_path, content):
    (tmp_path / "environment.json").write_text(content)
    assert environment.record(tmp_path) is None
    assert (tmp_path / "environment.json").read_text() == content


def test_the_environment_is_not_part_of_the_fingerprint(tmp_path):
    """A run resumed in another environment continues: environment.json is not compared."""
    config = tiny_config()
    config.al.steps = 0
    run_loop(config, tmp_path)
    path = tmp_path / "environment.json"
    recorded = json.loads(path.read_text())
    recorded["environments"][0]["cpu_model"] = "the machine it started on"
    path.write_text(json.dumps(recorded))
    config.al.steps = 1
    with pytest.raises(RunDirError, match='another config'):   # another config is refused
        run_loop(config, tmp_path)
    config.al.steps = 0
    run_loop(config, tmp_path)        # ... the same config in another environment is not
    envs = json.loads(path.read_text())["environments"]
    assert [e["cpu_model"] for e in envs] == ["the machine it started on",
                                             environment.cpu_model()]
