"""The README's commands for the paper's experiments, run exactly as written (from a scratch directory, with
.venv/bin/python standing for this interpreter): the mock-data smoke run, the own-pool
(.npz) run and the report over both. Also checks a run's output is crc_jax's own: no
TensorFlow/CUDA start-up lines or TFDS deprecation warnings, every log line timestamped."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("cuInit", "cuda", "CUDA", "oneDNN", "deprecated", "TensorInfo", "absl::InitializeLog",
         "dataset_info.json")


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- readme-commands -->\n```bash\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.startswith(".venv/bin/python")]


def run_as_written(command: str, cwd: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    assert argv[0] == ".venv/bin/python"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_readme_smoke_pool_and_report_commands_work_as_written(tmp_path):
    commands = [c for c in readme_commands() if "experiments.figures" not in c]
    assert len(commands) == 4, commands
    assert "--mock_data=" in commands[0] and "dataset.name=npz" in commands[2]
    for command in commands:
        proc = run_as_written(command, tmp_path)
        assert proc.returncode == 0, (command, proc.stderr[-3000:])
        noise = [line for line in proc.stderr.splitlines() if any(n in line for n in NOISE)]
        assert not noise, (command, noise[:5])
        untimed = [line for line in proc.stderr.splitlines()
                   if line.strip() and not re.match(r"\d\d:\d\d:\d\d ", line)]
        assert not untimed, (command, untimed[:5])
    for run in ("svhn_smoke", "my_pool"):
        assert (tmp_path / "runs" / run / "summary.csv").is_file()
    report = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "| crc (n = 1) |" in report and "| egl (n = 1) |" in report  # svhn_mt's and digits'
    assert proc.stdout.strip().splitlines()[-1].startswith("report:  runs/report/report.md")
