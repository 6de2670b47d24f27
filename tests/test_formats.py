"""Files written before the storage-layer refactor still open, and read as they did then.

tests/fixtures/format_v1 holds a project and a run directory written by crc_jax at main
d5b9855, and expected.json, what that version read back from them (its README says how).
"""

import json
import shutil
from pathlib import Path

import pytest

from crc_jax import durable
from crc_jax.project import Project
from conftest import run_loop

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "format_v1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture
def old_project(tmp_path):
    """The old project, copied, its project.json pointed at the copied images folder."""
    shutil.copytree(FIXTURES / "images", tmp_path / "images")
    shutil.copytree(FIXTURES / "project", tmp_path / "project")
    meta = json.loads((tmp_path / "project" / "project.json").read_text())
    meta["images"] = str(tmp_path / "images")
    (tmp_path / "project" / "project.json").write_text(json.dumps(meta))
    return Project.open(tmp_path / "project")


def test_an_old_project_reads_as_it_did(old_project):
    p = old_project
    assert {str(k): v for k, v in p.answers().items()} == EXPECTED["answers"]
    assert [{k: e[k] for k in ("seq", "op", "id")} for e in p.log.events()] == EXPECTED["events"]
    assert p.rounds() == EXPECTED["rounds"]
    assert p.queue_ids() == EXPECTED["queue_ids"]
    assert [r["predicted"] for r in p.predict()] == EXPECTED["predicted"]


def test_an_old_project_takes_new_answers_after_its_old_lines(old_project):
    p = old_project
    before = (p.dir / "labels.jsonl").read_bytes()
    free = next(i for i in range(len(p)) if i not in p.answers())
    assert p.add_labels({free: p.classes[0]}, queued_only=False) == 1
    after = (p.dir / "labels.jsonl").read_bytes()
    assert after.startswith(before)
    assert Project.open(p.dir).answers()[free] == p.classes[0]


@pytest.mark.parametrize("strategy", ["random", "crc"])
def test_old_run_journals_read_as_they_did(strategy):
    path = FIXTURES / "run" / strategy / "trial_0" / "journal.jsonl"
    assert durable.Journal(path).entries() == EXPECTED["journals"][strategy]


def test_an_old_run_resumes_without_recomputing(tmp_path):
    """The same command on the old run directory: config.json and the journals' (legacy)
    fingerprints are accepted, every step is replayed, nothing is trained again."""
    from experiments.configs import digits_fixmatch
    from experiments.configs.base import apply_smoke, set_fields

    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "run", run)
    journals = {s: (run / s / "trial_0" / "journal.jsonl").read_bytes() for s in ("random", "crc")}
    # the command that wrote it (make_fixtures.py), built as experiments.main builds it today
    config = set_fields(digits_fixmatch.get_config(), {
        "smoke": True, "strategies": ("random", "crc"), "trials": 1, "al.steps": 1})
    apply_smoke(config)
    rows = run_loop(config, run)
    assert [r["test_accuracy"] for r in rows] == [
        e["test_accuracy"] for s in ("random", "crc") for e in EXPECTED["journals"][s]]
    assert {s: (run / s / "trial_0" / "journal.jsonl").read_bytes() for s in journals} == journals
