"""One-command accelerator benchmark: train steps, a fit epoch, CRC scoring, empirical NTK.

    python -m experiments.benchmarks.accel            # the full run, for one GPU/TPU (< 8 min)
    python -m experiments.benchmarks.accel --quick    # reduced sizes, for a CPU (make test-slow)
    python -m experiments.benchmarks.accel --device gpu   # stop at once unless JAX has a GPU
    make bench-accel

Parts (each in its own process, so each one's peak memory is its own):
  step   FixMatch WRN-28-2 train step at B=64, μ=7 in float32 and bfloat16, Mean Teacher's
         step: images/s with the batch on the device (the step alone).
  epoch  a whole `fit` epoch (feeding, augmentation, steps, evaluation) with the pool fed
         from the device and from the host, against the step alone.
  crc    CRC scoring at SVHN scale (pool 73,257 images 32×32×3, |L| ∈ {200, 1000}, G=20):
         groups/s of the host and the device backend, their largest score difference and
         whether they choose the same groups.
  ntk    empirical NTK over all parameters of WRN-28-2 on 64 images against every
         neural-tangents implementation that works.
Starts with one line naming the backend and devices JAX uses (crc_jax.runtime.devices, in a
child process, so this parent never holds the accelerator); `--device gpu|tpu` ends the
run there, exit status 2, with JAX's reason, when JAX would fall back to the CPU.
Prints one table and writes the figures to a new JSON file (--json; default
runs/bench_accel/accel-<time>.json). Nothing imports TensorFlow or TFDS: the data are
synthetic images of the reference shapes, so it runs offline (docs/accelerators.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from crc_jax.runtime.devices import REQUIRE

FORBIDDEN = ("tensorflow", "tensorflow_datasets")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced sizes, for a CPU")
    p.add_argument("--parts", default="step,epoch,crc,ntk", help="comma-separated subset")
    p.add_argument("--json", default="", help="write the figures here (default: a new file "
                   "under runs/bench_accel/)")
    p.add_argument("--device", default="auto", choices=REQUIRE,
                   help="platform the parts must run on (auto: whatever JAX picks)")
    p.add_argument("--part_timeout", type=float, default=240.0, help="seconds per part")
    p.add_argument("--run_part", default="", help=argparse.SUPPRESS)   # child process
    p.add_argument("--out", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


class SavedRows(list):
    """Rows that rewrite the child's output file at every append (partial results survive
    a timeout), with the part's peak memory so far."""

    def __init__(self, write):
        super().__init__()
        self.write = write

    def append(self, item) -> None:
        super().append(item)
        self.write(self, partial=True)


def run_part(name: str, quick: bool, out: str) -> None:
    """Child: run one part, write its rows, peak memory and imported modules to `out`."""
    from crc_jax import durable
    from experiments.benchmarks import accel_parts

    import jax

    sizes = accel_parts.QUICK if quick else accel_parts.FULL
    start = time.perf_counter()
    dev = jax.devices()[0]

    def write(rows, partial: bool) -> None:
        peak, where = accel_parts.peak_memory()
        forbidden = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
        durable.write_atomic(Path(out), json.dumps({   # whole: a kill never leaves half a file
            "rows": list(rows), "partial": partial, "peak_MiB": peak, "peak_of": where,
            "seconds": time.perf_counter() - start,
            "device": f"{jax.device_count()} x {dev.device_kind} ({dev.platform})",
            "jax": jax.__version__, "forbidden_modules": forbidden}).encode())

    rows = accel_parts.PARTS[name](sizes, SavedRows(write))
    write(rows, partial=False)


def machine() -> str:
    return (f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f}")


def device_line(require: str) -> tuple[int, str]:
    """(exit status, the start-up line or the reason) from `python -m crc_jax.runtime.devices`."""
    proc = subprocess.run([sys.executable, "-m", "crc_jax.runtime.devices", "--device", require],
                          capture_output=True, text=True)
    return proc.returncode, (proc.stdout if proc.returncode == 0 else proc.stderr).strip()


def run_all(args) -> dict:
    parts = [p for p in args.parts.split(",") if p]
    results = {}
    for name in parts:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "part.json"
            cmd = [sys.executable, "-m", "experiments.benchmarks.accel", "--run_part", name,
                   "--out", str(out)] + (["--quick"] if args.quick else [])
            start = time.perf_counter()
            try:
                proc = subprocess.run(cmd, timeout=args.part_timeout, capture_output=True, text=True)
                failure = None if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["?"])[-1]
            except subprocess.TimeoutExpired:
                failure = f"timed out after {args.part_timeout:.0f} s"
            results[name] = json.loads(out.read_text()) if out.exists() else {"rows": []}
            if failure is not None or not out.exists():
                results[name]["error"] = (failure or "no output") + " (the rows it measured before are kept)"
            results[name]["wall_s"] = time.perf_counter() - start
            print(f"[{name}] {results[name]['wall_s']:.0f} s"
                  + (f": {results[name]['error']}" if "error" in results[name] else ""),
                  file=sys.stderr, flush=True)
    return results


def table(results: dict) -> str:
    lines = ["| part | measurement | value | unit | detail | peak memory (MiB) |",
             "| --- | --- | ---: | --- | --- | ---: |"]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed | | | {r['error']} | |")
        for i, x in enumerate(r["rows"]):
            peak = f"{r['peak_MiB']:.0f} ({r['peak_of']})" if i == 0 else ""
            lines.append(f"| {name} | {x['what']} | {x['value']:.1f} | {x['unit']} | "
                         f"{x['detail']} | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.run_part:
        run_part(args.run_part, args.quick, args.out)
        return 0
    status, line = device_line(args.device)
    print(line, file=sys.stderr, flush=True)
    if status:
        return 2
    started = datetime.datetime.now()
    results = run_all(args)
    devices = next((r["device"] for r in results.values() if "device" in r), "?")
    jax_version = next((r["jax"] for r in results.values() if "jax" in r), "?")
    header = (f"{'quick' if args.quick else 'full'} run, {started:%Y-%m-%d %H:%M}, {devices}, "
              f"jax {jax_version}; host {machine()}")
    print(header)
    print(table(results))
    path = Path(args.json) if args.json else (
        Path("runs/bench_accel") / f"accel-{started:%Y%m%d-%H%M%S}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"header": header, "quick": args.quick, "parts": results}, indent=1))
    print(f"figures: {path}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
