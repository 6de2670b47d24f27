"""Every CPU figure of docs/results.md and RESULTS.md, measured again in one command.

Runs each benchmark in its own fresh process, one after the other, and prints one markdown
block: date, machine, load average, versions and the XLA_FLAGS in effect, then every
part's output with its wall time and the load average before and after it. Meant for a
quiet machine: the figures replace those in README.md and experiments/benchmarks/RESULTS.md
(each part names the section it feeds).

Command:  make bench-cpu                        (the default parts, about an hour on 2 cores)
          python -m experiments.benchmarks.cpu_all --parts xla_cpu,train_step
          python -m experiments.benchmarks.cpu_all --parts all --out bench_cpu.md
Expect:   with jaxlib 0.10.2 and crc_jax's XLA:CPU default (fusion off), the FixMatch
          WRN-28-2 step at 0.9-1.2x the PyTorch peer's images/s (0.93x on the idle Intel
          Xeon of RESULTS.md, 1.21x on a 2-core AMD EPYC) and the standalone conv step
          1.5-5x faster than with YNNPACK fusion on; the rest as in RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from experiments.benchmarks import start_in_child

ROOT = Path(__file__).resolve().parents[2]
M = [sys.executable, "-m"]

# name: (what it feeds, command); {tmp} is a fresh temporary directory.
PARTS = {
    "xla_cpu": ("RESULTS.md \"XLA:CPU\": standalone WRN-28-2 step, YNNPACK fusion on vs off",
                [*M, "experiments.benchmarks.xla_cpu"]),
    "train_step": ("RESULTS.md \"Train step\" + the PyTorch peer ratio (WRN-28-2, B=64, mu=7)",
                   [*M, "experiments.benchmarks.train_step", "--steps", "2"]),
    "train_step_xla_default": ("RESULTS.md \"XLA:CPU\": the FixMatch step with XLA's default "
                               "fusion (CRC_JAX_XLA_DEFAULTS=0)",
                               [*M, "experiments.benchmarks.train_step", "--algorithms",
                                "fixmatch", "--steps", "2", "--torch_peer", "off"]),
    "train_step_fusion_off": ("RESULTS.md \"XLA:CPU\": the FixMatch step with YNNPACK fusion off "
                              "(CRC_JAX_XLA_DEFAULTS=1, whatever the CPU)",
                              [*M, "experiments.benchmarks.train_step", "--algorithms",
                               "fixmatch", "--steps", "2", "--torch_peer", "off"]),
    "steps_per_dispatch": ("RESULTS.md \"Train step\": 1 vs 8 steps per call, small CNN "
                           "FixMatch step (dispatch overhead shows on small steps)",
                           None),  # two commands, see run_part
    "acquisition": ("RESULTS.md \"Acquisition\": CRC scoring, hand-built Context, empirical NTK "
                    "vs neural-tangents, memory",
                    [*M, "experiments.benchmarks.acquisition"]),
    "labeling": ("README \"Label your own images\" + RESULTS.md \"Labeling\": init, next, click, "
                 "default model (MLP-256 vs CNN 16/32 rounds)",
                 [*M, "experiments.benchmarks.labeling", "--clicks", "20",
                  "--model_rounds", "mlp:256,cnn:16,cnn:32"]),
    "labeling_features": ("README \"Label your own images\" (photos) + RESULTS.md \"Labeling on "
                          "features\": 50,000-image init --features, next, --backbone",
                          [*M, "experiments.benchmarks.labeling_features"]),
    "demo": ("README \"Results measured on this machine\": `make demo` wall time (a fresh workdir)",
             [*M, "experiments.main", "--config=digits_fixmatch", "--workdir={tmp}/demo"]),
    # longer or special-purpose parts, in `--parts all`
    "scaling": ("RESULTS.md \"Scaling\" (4 forced host devices)",
                [*M, "experiments.benchmarks.scaling", "--cpu_devices", "4", "--model", "cnn",
                 "--batch_size", "32"]),
    "baselines": ("RESULTS.md \"Baseline strategies\"", [*M, "experiments.benchmarks.baselines"]),
    "accel_quick": ("RESULTS.md \"Accelerator\" CPU table (`make bench-accel ACCEL_ARGS=--quick`)",
                    [*M, "experiments.benchmarks.accel", "--quick"]),
    "multiprocess": ("RESULTS.md \"Multi-process\"", [*M, "experiments.benchmarks.multiprocess"]),
}
DEFAULT = ("xla_cpu", "train_step", "train_step_xla_default", "train_step_fusion_off",
           "steps_per_dispatch",
           "acquisition", "labeling", "labeling_features", "demo")
SMALL_STEP = [*M, "experiments.benchmarks.train_step", "--model", "cnn", "--batch_size", "8",
              "--mu", "2", "--algorithms", "fixmatch", "--steps", "48", "--torch_peer", "off"]


def versions() -> str:
    names = ("jax", "jaxlib", "flax", "optax", "numpy", "neural-tangents", "torch")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def run(command: list, env: dict) -> tuple:
    start = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    text = out.stdout + (f"\n[exit {out.returncode}]\n{out.stderr[-3000:]}" if out.returncode else "")
    return text, time.perf_counter() - start


def run_part(name: str, tmp: str) -> tuple:
    """(output, wall seconds) of one part, in fresh processes."""
    env = dict(os.environ)
    command = PARTS[name][1]
    if name == "steps_per_dispatch":
        texts, wall = [], 0.0
        for k in ("1", "8"):
            text, seconds = run([*SMALL_STEP, "--steps_per_dispatch", k], env)
            texts.append(text)
            wall += seconds
        return "\n".join(texts), wall
    if name in ("train_step_xla_default", "train_step_fusion_off"):
        env["CRC_JAX_XLA_DEFAULTS"] = "0" if name == "train_step_xla_default" else "1"
        env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                                    if "ynn_fusion_type" not in f)
    return run([arg.format(tmp=tmp) for arg in command], env)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(DEFAULT),
                        help=f"comma-separated, or 'all'; known: {', '.join(PARTS)}")
    parser.add_argument("--out", help="also write the markdown block to this file")
    args = parser.parse_args(argv)
    parts = list(PARTS) if args.parts == "all" else args.parts.split(",")
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; known: {', '.join(PARTS)}")
    if args.out and Path(args.out).exists():
        parser.error(f"--out: {args.out} already exists; name a new file")
    start_in_child()   # JAX that cannot start: one line now, not one per part

    import crc_jax  # noqa: F401  (its XLA:CPU default, as the children apply it too)
    from crc_jax.runtime import xla_env
    from experiments.benchmarks.xla_cpu import cpu_model

    lines = [f"## CPU benchmarks, {time.strftime('%Y-%m-%d %H:%M %Z')}", "",
             f"- machine: {os.cpu_count()} CPUs, {cpu_model()}, {platform.platform()}",
             f"- Python {platform.python_version()}; {versions()}",
             f"- {xla_env.describe()}",
             f"- load average (1/5/15 min) at the start: {load()}",
             f"- command: `python -m experiments.benchmarks.cpu_all --parts {','.join(parts)}`", ""]
    print("\n".join(lines), flush=True)
    total = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in parts:
            before = load()
            text, seconds = run_part(name, tmp)
            block = [f"### {name}: {PARTS[name][0]}", "",
                     f"wall {seconds:.1f} s; load average {before} before, {load()} after", "",
                     text.rstrip(), ""]
            print("\n".join(block), flush=True)
            lines += block
    lines.append(f"All parts: {time.perf_counter() - total:.0f} s; load average at the end: {load()}")
    print(lines[-1])
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
