"""`figures moons` never deletes what it did not create: a foreign non-empty workdir is
refused untouched; its own workdir is reused, replacing only the journal it wrote."""

import pytest

from experiments import figures


def test_foreign_non_empty_workdir_is_refused_and_kept(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "journal.jsonl").write_text("x\n")
    with pytest.raises(figures.FigureError, match="not empty and not made by"):
        figures.claim_workdir(tmp_path, seed=0)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["config.json", "journal.jsonl",
                                                           "random"]


def test_own_workdir_is_reused_removing_only_its_journal(tmp_path):
    workdir = tmp_path / "fig"
    figures.claim_workdir(workdir, seed=0)
    journal = workdir / figures.JOURNAL
    journal.parent.mkdir(parents=True)
    journal.write_text("old run\n")
    (workdir / "notes.txt").write_text("a user's file")
    figures.claim_workdir(workdir, seed=1)
    assert not journal.exists()
    assert (workdir / "notes.txt").read_text() == "a user's file"
    assert '"seed": 1' in (workdir / figures.MARKER).read_text()


def test_a_file_as_workdir_is_refused(tmp_path):
    (tmp_path / "f").write_text("data")
    with pytest.raises(figures.FigureError, match="is not a directory"):
        figures.claim_workdir(tmp_path / "f", seed=0)
    assert (tmp_path / "f").read_text() == "data"


def test_figure1_runs_every_strategy_and_trial_from_shared_pivots(tmp_path):
    """`figures moons` at smoke scale: every strategy x trial journaled from the trial's
    pivots, the panel drawn, and figure1_moons.md's per-trial numbers are the journals'."""
    import json

    path = figures.figure1_moons(tmp_path, tmp_path / "run", trials=2, smoke=True)
    assert path.is_file() and path.stat().st_size > 10_000
    table = (tmp_path / "figure1_moons.md").read_text()
    assert (tmp_path / "run" / "environment.json").is_file()
    for trial in (0, 1):
        initial = set()
        for spec, folder in (("random", "random"), ("crc", "crc"),
                             ("crc:subset=all", "crc-subset=all")):
            lines = (tmp_path / "run" / folder / f"trial_{trial}" / "journal.jsonl").read_text()
            entries = [json.loads(line) for line in lines.splitlines()]
            initial.add(tuple(entries[0]["initial"]))
            cells = " | ".join(f"{100 * e['test_accuracy']:.1f}" for e in entries)
            assert f"| {spec} | {trial} | {cells} |" in table
        assert len(initial) == 1   # the strategies of a trial share its pivots
    assert "Δ AULC vs random" in table
