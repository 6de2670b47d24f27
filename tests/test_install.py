"""Installing crc_jax next to an installed current jax keeps that jax (pyproject's ranges).

pip resolves `crc_jax[tfds,infinite] @ <this checkout>` in this environment (dry run,
nothing changes): everything crc_jax and its extras need, neural-tangents 0.6.5 and its
tf2jax included, must already be satisfied by the installed jax, so pip plans to install
crc_jax alone.
"""

import json
import subprocess
import sys
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]


def test_pip_install_keeps_the_installed_jax(tmp_path):
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
           f"crc_jax[tfds,infinite] @ {ROOT.as_uri()}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    planned = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
               for item in json.loads(report.read_text())["install"]}
    assert "jax" not in planned and "jaxlib" not in planned, (jax.__version__, planned)
    assert set(planned) == {"crc-jax"}, planned
