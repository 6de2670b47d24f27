"""Size of an environment crc_jax is installed in, and how long importing it takes there.

For each virtual environment given: its size on disk (`du -sh`, as the README reports it),
whether TensorFlow is in it, and the median of `--repeats` fresh processes for
`import crc_jax` (the package alone), `import crc_jax.data, crc_jax.acquisition,
crc_jax.train` (the library with JAX and Flax) and `crc-jax --help`, each timed inside
the process (interpreter start-up excluded) except `crc-jax --help` (wall clock).

Command:  python -m experiments.benchmarks.install VENV [VENV ...] [--repeats 5]
          (e.g. the core venv tests/test_wheel.py builds, and .venv from `make test`)
Expect:   a few seconds per environment; the sizes do not depend on the machine's load,
          the times do (the load average is printed with them).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

IMPORTS = {
    "import crc_jax": "import crc_jax",
    "import crc_jax.data/acquisition/train": "import crc_jax.data, crc_jax.acquisition, crc_jax.train",
}
TIMED = "import time; t = time.perf_counter(); {}; print(time.perf_counter() - t)"


def size(venv: Path) -> str:
    """`du -sh` of the environment, as the README states it."""
    return subprocess.run(["du", "-sh", str(venv)], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def has(venv: Path, dist: str) -> bool:
    """Whether `dist` is installed in the environment (`pip show`)."""
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "show", "-q", dist],
                          capture_output=True).returncode == 0


def median_seconds(venv: Path, statement: str, repeats: int) -> float:
    """Median over fresh processes of the time `statement` takes, measured inside them."""
    runs = [float(subprocess.run([str(venv / "bin" / "python"), "-c", TIMED.format(statement)],
                                 capture_output=True, text=True, check=True, cwd="/",
                                 env=dict(os.environ, PYTHONPATH="")).stdout)
            for _ in range(repeats)]
    return statistics.median(runs)


def median_wall(command: list[str], repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, cwd="/",
                       env=dict(os.environ, PYTHONPATH=""))
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venvs", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f}; median of {args.repeats} fresh processes")
    print("| environment | size | tensorflow | " + " | ".join(IMPORTS) + " | crc-jax --help |")
    print("|---|---|---|" + "---|" * (len(IMPORTS) + 1))
    for venv in args.venvs:
        times = [median_seconds(venv, s, args.repeats) for s in IMPORTS.values()]
        cli = median_wall([str(venv / "bin" / "crc-jax"), "--help"], args.repeats)
        print(f"| {venv} | {size(venv)} | {'yes' if has(venv, 'tensorflow') else 'no'} | "
              + " | ".join(f"{1000 * t:.1f} ms" for t in times) + f" | {cli:.2f} s |")
    sys.stdout.flush()


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
