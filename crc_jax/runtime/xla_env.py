"""XLA:CPU defaults crc_jax sets before JAX starts: YNNPACK fusion off.

jaxlib 0.10 turned on XLA:CPU's YNNPACK library fusions, and they make convolutional train
steps slower on the CPUs measured: on a 2-core AMD EPYC VM a WRN-28-2 step ran about 4x
slower with them than on jax 0.5.3 (the same net without them ran at jax 0.5.3's speed); on
an idle 2-core Intel Xeon (AVX-512, AMX) the standalone step was 1.5-1.6x slower with them
(B = 64 and 128, two alternated processes each; readings taken at load average 8-20 do not
hold). experiments/benchmarks/xla_cpu.py measures a CPU; RESULTS.md, "XLA:CPU".
`apply_cpu_defaults()` adds

    --xla_cpu_experimental_ynn_fusion_type=        (an empty list: no YNNPACK fusion)

to the XLA_FLAGS environment variable, which XLA reads once, when JAX's backend starts.
`import crc_jax` calls it, so every entry point (experiments.main, `crc-jax`, the
benchmarks, the tests, a user's script that imports crc_jax before computing) gets it.

The switch CRC_JAX_XLA_DEFAULTS: unset, "auto" or "1" applies it, "0" leaves XLA_FLAGS
alone (XLA's own default). It also leaves XLA_FLAGS alone when
- the user's XLA_FLAGS already mentions the flag (theirs stands);
- CRC_JAX_XLA_DEFAULTS=0;
- JAX_PLATFORMS names no "cpu" (no CPU backend to tune);
- the installed jaxlib is not a series known to have the flag: XLA aborts the whole
  process on an unknown flag in XLA_FLAGS. Known: 0.10.x and 0.11.x (checked in the
  jaxlib 0.10.2 binary and by compiling with it here; 0.10.1 and 0.11.0-0.11.2 are set
  the same way by public projects). 0.12 and later: not known, so not set; such a user
  can set the flag themselves after running the benchmark above.
- JAX's backend has already started (the flag could no longer take effect): one warning.

The flag only changes what XLA's CPU compiler emits (it is read in
xla/service/cpu/cpu_compiler.cc); GPU and TPU compilations in the same process ignore it.
A child process inherits the edited XLA_FLAGS: one running another jaxlib that does not
know the flag would abort, so give such a child the environment you started with.
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata
from collections.abc import MutableMapping

log = logging.getLogger(__name__)

SWITCH = "CRC_JAX_XLA_DEFAULTS"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_OFF = YNN_FLAG + "="
KNOWN_JAXLIB_SERIES = ((0, 10), (0, 11))

APPLIED = "applied"
_last_decision: str | None = None


def jaxlib_series(version: str) -> tuple | None:
    """(major, minor) of a version string such as "0.10.2" or "0.11.0.dev20260101"."""
    parts = version.split(".")[:2]
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def installed_jaxlib() -> str | None:
    """The installed jaxlib's version, read from its metadata (jax is not imported)."""
    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return None


def backend_started() -> bool:
    """Whether JAX's backend is already up (then XLA_FLAGS is no longer read)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # private API moved: assume not started
        return False


def decide(environ: MutableMapping[str, str], jaxlib_version: str | None) -> str:
    """APPLIED, or why XLA_FLAGS stays as it is (one short phrase). Pure: no side effects."""
    switch = environ.get(SWITCH, "auto").strip() or "auto"
    if switch == "0":
        return f"off ({SWITCH}=0)"
    if switch not in ("auto", "1"):
        log.warning("%s must be auto, 1 (fusion off) or 0 (XLA's default); got %r, using auto",
                    SWITCH, switch)
    if YNN_FLAG.lstrip("-") in environ.get("XLA_FLAGS", ""):
        return "XLA_FLAGS already sets it"
    platforms = environ.get("JAX_PLATFORMS", "").strip()
    if platforms and "cpu" not in [p.strip() for p in platforms.split(",")]:
        return f"no CPU backend (JAX_PLATFORMS={platforms})"
    if jaxlib_version is None:
        return "jaxlib not installed"
    if jaxlib_series(jaxlib_version) not in KNOWN_JAXLIB_SERIES:
        return f"jaxlib {jaxlib_version} is not known to have the flag"
    return APPLIED


def apply_cpu_defaults(environ: MutableMapping[str, str] | None = None) -> str:
    """Add YNN_OFF to XLA_FLAGS when `decide` says so; returns the decision.

    Called by `import crc_jax`; calling it again is harmless (the flag is then present).
    If JAX's backend has already started, nothing changes and one warning says so.
    """
    global _last_decision
    environ = os.environ if environ is None else environ
    decision = decide(environ, installed_jaxlib())
    if decision == APPLIED and environ is os.environ and backend_started():
        decision = "JAX's backend had already started"
        log.warning("crc_jax: JAX's backend started before `import crc_jax`, so XLA:CPU runs "
                    "with YNNPACK fusion (measured 1.5-4x slower convolutional train steps). "
                    "Import crc_jax before computing with JAX, or set XLA_FLAGS=%s "
                    "yourself.", YNN_OFF)
    elif decision == APPLIED:
        environ["XLA_FLAGS"] = (environ.get("XLA_FLAGS", "") + " " + YNN_OFF).strip()
    if environ is os.environ:
        _last_decision = decision
    log.debug("crc_jax XLA:CPU default: %s", decision)
    return decision


def describe() -> str:
    """One line for benchmark headers: jaxlib, what `import crc_jax` decided, XLA_FLAGS."""
    flags = os.environ.get("XLA_FLAGS", "")
    return (f"jaxlib {installed_jaxlib()}; crc_jax YNNPACK default: {_last_decision or 'not run'}; "
            f"XLA_FLAGS={flags!r}")
