"""An option is checked once, where it enters, and travels as a built object: one
`crc_jax.config.validate` per experiment run and per `crc-jax next` round, one build of
each strategy from its spec there, and nothing below them checks a spec again (the
trials and steps of a run, the training and the pick of a round reuse the built Strategy).
"""

from __future__ import annotations

import pytest

from conftest import tiny_digits
from crc_jax import acquisition
from crc_jax import config as config_lib
from crc_jax.acquisition import spec as spec_lib
from crc_jax.project import cli
from crc_jax.project import Project
from image_folder import write_digits


@pytest.fixture
def counted(monkeypatch):
    """Counts of validate calls (by `build`), from_spec calls (by spec) and budget checks."""
    calls: dict = {"validate": [], "from_spec": [], "check_budget": []}
    validate, from_spec = config_lib.validate, acquisition.from_spec
    check_budget = spec_lib.Strategy.check_budget

    def counting_validate(config, **kwargs):
        calls["validate"].append(kwargs.get("build", True))
        return validate(config, **kwargs)

    def counting_from_spec(spec, *args, **kwargs):
        calls["from_spec"].append(spec)
        return from_spec(spec, *args, **kwargs)

    def counting_check_budget(self, budget):
        calls["check_budget"].append((self.spec, budget))
        return check_budget(self, budget)

    monkeypatch.setattr(config_lib, "validate", counting_validate)
    monkeypatch.setattr(acquisition, "from_spec", counting_from_spec)
    monkeypatch.setattr(spec_lib.Strategy, "check_budget", counting_check_budget)
    return calls


def test_an_experiment_validates_once_and_builds_each_strategy_once(tmp_path, counted):
    """2 strategies x 2 trials x 3 steps: one validate, one build per strategy, one budget
    check per strategy; every acquisition reuses the built Strategy."""
    from experiments import main

    config = tiny_digits(**{"strategies": ("random", "crc"), "trials": 2, "al.steps": 2})
    main.run(config, str(tmp_path / "run"))
    assert counted["validate"] == [True]
    assert sorted(counted["from_spec"]) == ["crc", "random"]
    assert sorted(counted["check_budget"]) == [("crc", 10), ("random", 10)]
    journals = sorted((tmp_path / "run").glob("*/trial_*/journal.jsonl"))
    assert len(journals) == 4   # the run did reach every trial and acquisition


def test_a_next_round_builds_each_strategy_once(tmp_path, capsys, counted):
    """`crc-jax next` with a strategy and a cold-start strategy: each built once, from the
    round's one full validate (the kept and given options are checked without building)."""
    write_digits(tmp_path / "images", 40, broken=False)
    Project.create(tmp_path / "p", tmp_path / "images", image_size=8,
                   classes=[str(d) for d in range(10)], progress=False)
    for name in counted:
        counted[name].clear()
    code = cli.main([str(a) for a in ("next", tmp_path / "p", "--budget", 5, "--strategy",
                                      "crc:group_size=5", "--cold-start", "typiclust",
                                      "--model", "mlp", "--width", 16, "--epochs", 1,
                                      "--steps-per-epoch", 2, "--no-flip")])
    assert code == 0, capsys.readouterr().err
    assert counted["validate"].count(True) == 1
    assert sorted(counted["from_spec"]) == ["crc:group_size=5", "typiclust"]
    assert sorted(counted["check_budget"]) == [("crc:group_size=5", 5), ("typiclust", 5)]
    assert Project.open(tmp_path / "p").rounds()[-1]["strategy"] == "typiclust"   # cold start
