"""Every result table and number that README.md and docs/ print is recomputed from its
committed per-trial files (experiments/published.py) and must equal what is printed; the
check fails on a tampered number, a tampered per-trial file, an unmarked result table, an
unknown table name and a table that no page shows. The NTK comparison's page and figure
are drawn from its committed per-seed file."""

import json
import shutil
from pathlib import Path

import pytest

from experiments import published, tables

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def copy(tmp_path):
    """README.md, docs/ without images, and every per-trial file, in a scratch root."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    return tmp_path


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, old
    path.write_text(text.replace(old, new, 1))


def test_every_published_table_recomputes_from_its_per_trial_files(capsys):
    code = tables.main(["check"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "all recomputed from their per-trial files" in out
    shown = {b.name for page in tables.pages() for b in tables.blocks(page)}
    assert shown == set(published.TABLES)      # every entry is published, and checked


def test_a_tampered_number_in_the_readme_fails_the_check(copy):
    assert tables.check(copy) == []
    block = next(b for b in tables.blocks(copy / "README.md") if b.name == "demo")
    row = next(line for line in block.text.splitlines() if line.startswith("| crc (n"))
    cell = row.split("|")[3].strip()                  # crc at 30 labels, "82.74 ± 2.78"
    tampered = row.replace(cell, f"{float(cell.split()[0]) + 0.01:.2f} ± {cell.split()[2]}")
    replace_once(copy / "README.md", row, tampered)
    problems = tables.check(copy)
    assert len(problems) == 1 and problems[0].startswith(f"README.md:{block.line}: table 'demo'")
    assert tampered in problems[0] and row in problems[0]          # the diff shows both
    changed, skipped = tables.write(copy)
    assert changed == [copy / "README.md"] and skipped == []
    assert tables.check(copy) == []


def test_a_tampered_inline_number_fails_the_check(copy):
    page = copy / "docs" / "results.md"
    block = next(b for b in tables.blocks(page) if b.name == "ablation_all_g5")
    replace_once(page, block.text, block.text.replace("+1.43", "+1.53"))
    assert [p for p in tables.check(copy) if "'ablation_all_g5'" in p]


def test_a_tampered_per_trial_file_fails_the_check(copy):
    path = copy / published.STUDY
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    fields = lines[1].split(",")
    fields[head.index("test_accuracy")] = "0.5"
    lines[1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    names = {p.split("'")[1] for p in tables.check(copy) if "table '" in p}
    assert {"study", "study_aulc", "study_multiplicity"} <= names


def test_an_unmarked_result_table_an_unknown_name_and_an_unshown_table_fail(copy):
    page = copy / "docs" / "results" / "transfer_digits.md"
    text = page.read_text()
    block = next(b for b in tables.blocks(page) if b.name == "transfer")
    marked = f"<!-- table:transfer -->{block.text}<!-- /table -->"
    page.write_text(text.replace(marked, block.text.strip()))        # markers removed
    problems = tables.check(copy)
    assert any(p.startswith("docs/results/transfer_digits.md:") and "outside every" in p
               for p in problems)
    assert not any("'transfer' is published nowhere" in p for p in problems)  # docs/results.md has it
    page.write_text(text.replace("table:transfer -->", "table:transfers -->"))
    assert any("unknown table 'transfers'" in p for p in tables.check(copy))
    (copy / published.RETRAIN_CNN).unlink()
    assert any("'retrain_cnn' cannot be recomputed: per-trial file" in p
               for p in tables.check(copy))


def test_export_writes_a_runs_per_step_file_that_the_tables_read(tmp_path, capsys):
    run = ROOT / "tests" / "fixtures" / "format_v1" / "run"
    out = tmp_path / "steps.csv"
    assert tables.main(["export", str(run), str(out)]) == 0
    rows = published.load(out)
    summary = published.load(run / "summary.csv")
    assert [{k: r[k] for k in summary[0]} for r in rows] == summary
    crc = next(r for r in rows if r["strategy"] == "crc" and r["step"] == 0)
    assert crc["acquired_labels"] == "7 2 3 0 0 9 7 5 7 9" and crc["min_test_loss_epoch"] == 2
    assert crc["crc_chosen_min"] == min(json.loads(
        (run / "crc" / "trial_0" / "journal.jsonl").read_text().splitlines()[0])
        ["record"]["crc"]["chosen_scores"])
    assert all(r["crc_chosen_min"] is None for r in rows if r["strategy"] == "random")
    assert tables.main(["export", str(run), str(out)]) == 2      # never overwrites a file
    assert "exists" in capsys.readouterr().err


def test_a_tampered_number_in_the_replication_table_fails_the_check(copy):
    page = copy / "docs" / "results" / "replication" / "table.md"
    block = next(b for b in tables.blocks(page) if b.name == "replication")
    row = next(line for line in block.text.splitlines()
               if line.startswith("| crc:subset=all,group_size=5 |"))
    assert row.endswith("| 1.48 | 0.156 |")                         # the primary test's p
    replace_once(page, row, row.replace("| 0.156 |", "| 0.056 |"))
    problems = tables.check(copy)
    assert len(problems) == 1
    assert problems[0].startswith(f"docs/results/replication/table.md:{block.line}: "
                                  "table 'replication' differs")
    assert "-" + row.replace("| 0.156 |", "| 0.056 |") in problems[0] and "+" + row in problems[0]


def test_a_replication_trials_file_that_disagrees_with_its_curves_fails_the_check(copy):
    path = copy / published.REPLICATION_TRIALS
    lines = path.read_text().splitlines()
    fields = lines[1].split(",")
    fields[1] = f"{float(fields[1]) + 0.5:.6f}"                     # trial 0's random AULC
    lines[1] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    problems = [p for p in tables.check(copy) if "cannot be recomputed" in p]
    assert problems and all("trials.csv differs from the AULCs of" in p for p in problems)
    assert any("table 'replication'" in p for p in problems)


def test_the_ntk_page_and_figure_are_drawn_from_the_committed_per_seed_file(tmp_path):
    """`python -m experiments.ntk_compare ... --from_csv` on a copy of docs/ntk_compare
    writes the committed ntk_compare.md and distance_vs_width.png again."""
    import matplotlib.image as image
    import numpy as np

    from experiments import ntk_compare
    from experiments.configs import ntk_compare as config

    committed = ROOT / "docs" / "ntk_compare"
    rows = ntk_compare.read_csv(committed / "ntk_compare.csv")
    ntk_compare.write_outputs(rows, config.get_config(), tmp_path)
    assert (tmp_path / "ntk_compare.md").read_text() == (committed / "ntk_compare.md").read_text()
    drawn = image.imread(tmp_path / "distance_vs_width.png")
    assert np.array_equal(drawn, image.imread(committed / "distance_vs_width.png")), (
        "docs/ntk_compare/distance_vs_width.png is not drawn from ntk_compare.csv: python -m "
        "experiments.ntk_compare --config=ntk_compare --workdir=docs/ntk_compare --from_csv")
