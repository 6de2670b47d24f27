"""Benchmarks, each `python -m experiments.benchmarks.NAME`; every module's entry point runs
its `main` through `command`, so a JAX that cannot start is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable


def command(main: Callable[[], int | None]) -> None:
    """Run a benchmark's `main` as a command (crc_jax.runtime.command.run: JAX that cannot
    start, here or in `start_in_child`, is one line with JAX's reason and exit status 2;
    Ctrl-C one line and 130) and exit with its status. crc_jax is imported here, when the
    benchmark runs: a benchmark may set XLA_FLAGS before `import crc_jax`."""
    from crc_jax.runtime import command as runner

    sys.exit(runner.run(main, log_format=None))


def start_in_child() -> None:
    """For a benchmark that measures in child processes: start JAX's backend once in a
    child of its own (`python -m crc_jax.runtime.devices`, which inherits this
    environment), so a failure is said once, up front, and this process never holds the
    accelerator. Raises DeviceUnavailable with the child's line."""
    from crc_jax.errors import DeviceUnavailable

    proc = subprocess.run([sys.executable, "-m", "crc_jax.runtime.devices"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise DeviceUnavailable(lines[-1].removeprefix("error: "))
