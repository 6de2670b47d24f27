"""The README's `crc-jax` and library examples, run exactly as written (from a scratch
directory; `crc-jax` is this interpreter's entry point): a folder of real image files goes
through init, a cold-start round, an import of the queued images' labels, a trained round and
predict; the library example prints the ten pool indices CRC picks.

The `crc-jax` test trains a round with the default settings the README shows (about 50 s at
load 3 here), so it is slow; tests/test_project_cli.py runs the same commands with short
training in the fast suite."""

from __future__ import annotations

import ast
import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from image_folder import write_digits

ROOT = Path(__file__).resolve().parents[1]


def readme_block(marker: str, language: str) -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(rf"<!-- {marker} -->\n```{language}\n(.*?)```\n<!-- end {marker} -->",
                     text, re.S).group(1)


def run_crc_jax(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command, comments=True)
    assert argv[0] == "crc-jax"
    return subprocess.run([sys.executable, "-m", "crc_jax.project.cli", *argv[1:]], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_readme_crc_jax_commands_work_as_written(tmp_path):
    commands = [c for c in readme_block("readme-crc-jax", "bash").splitlines()
                if c.startswith("crc-jax")]
    assert [shlex.split(c)[1] for c in commands] == ["init", "next", "import", "next", "predict"]
    truth = write_digits(tmp_path / "photos", 60, broken=False)
    classes = shlex.split(commands[0], comments=True)[-1].split(",")
    for command in commands:
        if " import " in command:                          # the annotator answers the queue
            with open(tmp_path / "proj" / "queue.csv", newline="") as f:
                queued = [row["path"] for row in csv.DictReader(f)]
            assert len(queued) == 20
            with open(tmp_path / "labels.csv", "w", newline="") as f:
                csv.writer(f).writerows([("path", "label"),
                                         *[(p, classes[truth[p] % len(classes)]) for p in queued]])
        proc = run_crc_jax(command, tmp_path)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-3000:])
    with open(tmp_path / "proj" / "predictions.csv", newline="") as f:
        predicted = list(csv.DictReader(f))
    assert len(predicted) == 60 and {row["predicted"] for row in predicted} <= set(classes)
    with open(tmp_path / "proj" / "queue.csv", newline="") as f:
        second = {row["path"] for row in csv.DictReader(f)}
    assert len(second) == 20 and not second & set(queued)   # 20 more, none labeled already


def test_readme_library_example_works_as_written(tmp_path):
    code = readme_block("readme-library", "python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    picked = ast.literal_eval(re.sub(r"\s+", ",", proc.stdout.strip().replace("[ ", "[")))
    assert len(picked) == 10 and len(set(picked)) == 10 and min(picked) >= 20   # unlabeled only
