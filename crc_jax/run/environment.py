"""Where a run's numbers came from: WORKDIR/environment.json, next to config.json.

A run repeats exactly on the same machine with the same versions (tests/test_reproducible.py).
On another machine the last bits of a float32 step can differ (the CPU's vector width and
fused multiply-add, the XLA version and flags, thread counts), and over a few hundred
training steps that can become another model: a single trial's figure may change
qualitatively (docs/reliability.md, "Where results hold"). So every run directory records
the versions, backend, devices, CPU model and XLA/thread settings that produced it.

Cosmetic: not part of config.json or the fingerprint. A run resumed in another environment
appends that environment (and logs a warning); a file that is not this module's is left
alone.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from importlib import metadata
from pathlib import Path

from crc_jax.durable import write_atomic

log = logging.getLogger(__name__)

FILENAME = "environment.json"
WRITTEN_BY = "crc_jax.run.environment"
PACKAGES = ("crc_jax", "jax", "jaxlib", "flax", "optax", "numpy", "orbax-checkpoint")
ENV_PREFIXES = ("XLA_", "JAX_", "TF_XLA_")
# CPU features that decide float rounding (vector width, fused multiply-add, bf16 units).
CPU_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni",
                "amx_bf16", "amx_tile", "asimd", "sve")
ENV_NAMES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "CUDA_VISIBLE_DEVICES", "TPU_VISIBLE_CHIPS")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what `platform` knows)."""
    info = _cpuinfo()
    for key in ("model name", "Hardware", "cpu model"):
        if info.get(key):
            return info[key]
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """Which of CPU_FEATURES this CPU reports (empty where /proc/cpuinfo is missing)."""
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    return [f for f in CPU_FEATURES if f in flags]


def describe() -> dict:
    """This process's environment: versions, backend and devices, CPU, XLA and thread settings."""
    import jax

    kinds: dict[str, int] = {}
    for device in jax.devices():
        kinds[device.device_kind] = kinds.get(device.device_kind, 0) + 1
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "backend": jax.default_backend(),
        "devices": kinds,
        "process_count": jax.process_count(),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "platform": platform.platform(),
        "jax_config": {"jax_enable_x64": bool(jax.config.jax_enable_x64),  # type: ignore[attr-defined]
                       "jax_default_matmul_precision":
                           jax.config.jax_default_matmul_precision},  # type: ignore[attr-defined]
        "environment_variables": {k: v for k, v in sorted(os.environ.items())
                                  if k.startswith(ENV_PREFIXES) or k in ENV_NAMES},
    }


def _recorded(path: Path) -> list | None:
    """The environments this module recorded in `path`; None for any other file."""
    try:
        held = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if (not isinstance(held, dict) or held.get("written_by") != WRITTEN_BY
            or not isinstance(held.get("environments"), list)):
        return None
    return held["environments"]


def record(workdir) -> Path | None:
    """Add this environment to WORKDIR/environment.json (once per distinct environment);
    returns the file, or None when a file there is not this module's (left untouched)."""
    path = Path(workdir) / FILENAME
    current = json.loads(json.dumps(describe()))   # as it reads back
    seen: list = []
    if path.exists() or path.is_symlink():
        recorded = _recorded(path)
        if recorded is None:
            log.warning("%s is not crc_jax's environment record; left as it is", path)
            return None
        seen = recorded
        if any(isinstance(env, dict) and {k: v for k, v in env.items() if k != "recorded"}
               == current for env in seen):
            return path
        log.warning("%s: this run continues in another environment than it started in "
                    "(results repeat exactly only in the same one); both are recorded", path)
    current["recorded"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    body = {"written_by": WRITTEN_BY,
            "note": "the environments this run directory was run in; results repeat exactly "
                    "on the same machine and versions (docs/reliability.md)",
            "environments": seen + [current]}
    write_atomic(path, (json.dumps(body, indent=2, sort_keys=True) + "\n").encode())
    return path
