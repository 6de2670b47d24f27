"""`make bench-accel`: its import graph stays free of TensorFlow/TFDS (accelerator machines
run it offline without them), and the --quick run completes end to end on a CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]   # experiments/ runs from the checkout

FORBIDDEN = ("tensorflow", "tensorflow_datasets")


def test_accel_benchmark_imports_no_tensorflow():
    code = ("import sys; import experiments.benchmarks.accel, experiments.benchmarks.accel_parts; "
            "from crc_jax.runtime._nt_compat import import_neural_tangents; import_neural_tangents(); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_bench_accel_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "accel.json"
    proc = subprocess.run([sys.executable, "-m", "experiments.benchmarks.accel", "--quick",
                           "--json", str(out), "--part_timeout", "900"],
                          cwd=ROOT, capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| crc | CRC scores |L|=50, device |" in proc.stdout
    figures = json.loads(out.read_text())
    assert set(figures["parts"]) == {"step", "epoch", "crc", "ntk"}
    for part in figures["parts"].values():
        assert part["forbidden_modules"] == [] and part["rows"]
        assert part["peak_MiB"] > 0
    crc = [r for r in figures["parts"]["crc"]["rows"] if r["what"].endswith("device")]
    assert all(r["same_groups"] and r["max_rel_diff"] < 1e-6 for r in crc)
    epoch = {r["what"]: r for r in figures["parts"]["epoch"]["rows"]}
    assert epoch["fit epoch, feed=device"]["value"] > 0 and epoch["fit epoch, feed=host"]["value"] > 0


@pytest.mark.parametrize("require, status", [("gpu", 2), ("cpu", 0)])
def test_accel_benchmark_starts_with_the_devices_line_and_stops_without_the_gpu(require, status,
                                                                               tmp_path):
    out = tmp_path / "accel.json"
    proc = subprocess.run([sys.executable, "-m", "experiments.benchmarks.accel", "--device", require,
                           "--parts", "", "--json", str(out)],     # no parts: the start-up alone
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == status, proc.stderr[-2000:]
    first = proc.stderr.splitlines()[0]
    if require == "gpu":   # this machine has no GPU: one line with JAX's reason, nothing run
        assert first.startswith("error: --device=gpu, but JAX runs on cpu") and "JAX: " in first
        assert proc.stdout == "" and not out.exists()
    else:
        assert first.startswith("devices: ") and "; --device=cpu" in first
        assert out.exists()
