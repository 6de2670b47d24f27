"""Multi-process overhead: one process with 2 devices vs two processes with 1 device each.

Both layouts have the same two devices (forced CPU host devices here), so the ratio
measures what the process boundary costs (collectives over gloo/TCP instead of inside one
process, arrays assembled from each process's part, outputs gathered with
`process_allgather`), not a speed-up. Each layout runs the measurements of
`experiments.benchmarks.scaling` on a mesh over all its devices:

  train step   images/s of `sharding.data_parallel(algorithm.train_step)`
  CRC          groups/s of `gram.build(...)` + `.score()` (features or per-sample Jacobians
               split over the devices and gathered to the host, float64 eigvalsh there)

The two-process layout joins its processes with jax.distributed on 127.0.0.1; process 0
reports. CRC scores of the two layouts are compared (max relative difference).

Command:  python -m experiments.benchmarks.multiprocess
          python -m experiments.benchmarks.multiprocess --model cnn --batch_size 32
Expect:   ratios near 1x when the cores are free; figures in
          experiments/benchmarks/RESULTS.md ("Multi-process").
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from experiments.benchmarks import scaling, start_in_child


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--algorithms", default="mean_teacher,fixmatch")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--mu", type=int, default=7)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--pool", type=int, default=4096)
    p.add_argument("--pool_all", type=int, default=256)
    p.add_argument("--labeled", type=int, default=100)
    p.add_argument("--group_size", type=int, default=10)
    p.add_argument("--subsets", default="last,all")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per layout")
    # internal: one process of a layout
    p.add_argument("--worker_out", default="", help=argparse.SUPPRESS)
    p.add_argument("--coordinator", default="", help=argparse.SUPPRESS)
    p.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args) -> None:
    """Measure on a mesh over every device of the run; process 0 writes the rows."""
    import jax

    if args.coordinator:
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=2,
                                   process_id=args.process_id)
    from crc_jax.runtime import sharding

    mesh = sharding.make_mesh()
    rows = [scaling.time_train_step(name, args, mesh)
            for name in filter(None, args.algorithms.split(","))]
    rows += [scaling.time_crc(subset, args, mesh) for subset in filter(None, args.subsets.split(","))]
    if jax.process_index() == 0:
        Path(args.worker_out).write_text(json.dumps(
            {"processes": jax.process_count(), "devices": jax.device_count(), "rows": rows}))


def _forwarded(args) -> list[str]:
    skip = {"worker_out", "coordinator", "process_id", "timeout"}
    return [f"--{k}={v}" for k, v in vars(args).items() if k not in skip]


def run_layout(args, processes: int, out: Path) -> dict:
    """Run one layout (1 process x 2 devices, or 2 processes x 1 device); its JSON."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    flags = env.get("XLA_FLAGS", "")
    if processes == 1:
        flags += " --xla_force_host_platform_device_count=2"
    env["XLA_FLAGS"] = flags.strip()
    cmd = [sys.executable, "-m", "experiments.benchmarks.multiprocess", *_forwarded(args),
           f"--worker_out={out}"]
    if processes == 1:
        procs = [subprocess.Popen(cmd, env=env)]
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            address = f"127.0.0.1:{s.getsockname()[1]}"
        procs = [subprocess.Popen([*cmd, f"--coordinator={address}", f"--process_id={i}"], env=env)
                 for i in range(processes)]
    for proc in procs:
        if proc.wait(timeout=args.timeout) != 0:
            raise SystemExit(f"error: layout with {processes} process(es) failed "
                             f"(exit status {proc.returncode})")
    return json.loads(out.read_text())


def table(one: dict, two: dict) -> str:
    lines = ["| measurement | 1 process x 2 devices | 2 processes x 1 device | ratio | detail |",
             "| --- | ---: | ---: | ---: | --- |"]
    for a, b in zip(one["rows"], two["rows"]):
        detail = (f"compile {a['compile_s']} / {b['compile_s']} s" if "compile_s" in a else
                  f"features {a['build_s']} / {b['build_s']} s, eigvalsh {a['score_s']} / "
                  f"{b['score_s']} s")
        if "scores" in a:
            sa, sb = np.asarray(a["scores"]), np.asarray(b["scores"])
            rel = np.max(np.abs(sa - sb) / np.maximum(np.abs(sa), 1e-30))
            detail += f"; scores max rel. diff {rel:.1e}"
        lines.append(f"| {a['what']} | {a['rate']:.1f} {a['unit']} | {b['rate']:.1f} {b['unit']} "
                     f"| {b['rate'] / a['rate']:.2f}x | {detail} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker_out:
        worker(args)
        return
    start_in_child()   # JAX that cannot start: one line, before any worker
    with tempfile.TemporaryDirectory() as tmp:
        one = run_layout(args, 1, Path(tmp) / "one.json")
        two = run_layout(args, 2, Path(tmp) / "two.json")
    load = os.getloadavg()
    print(f"2 CPU devices either way; host {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; model {args.model}, B={args.batch_size}, "
          f"mu={args.mu}, {args.image_size}x{args.image_size}x3\n")
    print(table(one, two))


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
