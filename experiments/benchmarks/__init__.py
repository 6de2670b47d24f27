"""Benchmarks, each `python -m experiments.benchmarks.NAME`; every module's entry point runs
its `main` through `command`, so a JAX that cannot start is one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

EXIT_USAGE = 2


def command(main: Callable[[], int | None]) -> None:
    """Run a benchmark's `main` as a command and exit with its status. A failure to start
    JAX's backend (JAX_PLATFORMS naming a platform that is unknown or cannot start, a
    plugin that fails to load), here or in `start_in_child`, ends in one line with JAX's
    reason and exit status 2."""
    try:
        status = main()
    except Exception as err:
        line = _backend_line(err)
        if line is None:
            raise
        sys.stderr.write(f"error: {line}\n")
        sys.exit(EXIT_USAGE)
    sys.exit(status)


def _backend_line(err: Exception) -> str | None:
    """The one line for a JAX that could not start (crc_jax.runtime.devices); None for any other
    exception. crc_jax is imported here only: a benchmark may set XLA_FLAGS before it."""
    from crc_jax.runtime import devices
    from crc_jax.errors import DeviceUnavailable

    return str(err) if isinstance(err, DeviceUnavailable) else devices.backend_failure(err)


def start_in_child() -> None:
    """For a benchmark that measures in child processes: start JAX's backend once in a
    child of its own (`python -m crc_jax.runtime.devices`, which inherits this environment), so a
    failure is said once, up front, and this process never holds the accelerator. Raises
    DeviceUnavailable with the child's line."""
    from crc_jax.errors import DeviceUnavailable

    proc = subprocess.run([sys.executable, "-m", "crc_jax.runtime.devices"], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise DeviceUnavailable(lines[-1].removeprefix("error: "))
