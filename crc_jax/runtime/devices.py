"""The devices a run uses, said in one line at start-up, and a stop when the accelerator
asked for is missing (`device.require`, `crc-jax --device`).

JAX picks its backend quietly. jax 0.10 registers the TPU backend with
`fail_quietly=True`; a CUDA plugin that cannot start (no GPU visible to the process, a
plugin built for another jaxlib, GPU memory held by another process) is skipped the same
way; either way the run continues on the host CPU, and a model meant for an accelerator
trains there for hours with no sign. `start(require)` says which backend and devices JAX
picked and, when `require` names another platform, raises DeviceUnavailable: one line
with JAX's own reason (the error it raises for that platform, and the error it recorded
when the backend failed to start), whether the hardware is visible, and which plugin is
installed beside which jaxlib.

JAX can also fail to start at all: JAX_PLATFORMS (or jax_platforms) naming a platform
that is unknown or cannot start (`JAX_PLATFORMS=cuda` on a machine without a visible GPU
ends in a bare AssertionError inside JAX), a plugin that fails to load. `start_backend()`
turns that into DeviceUnavailable, one line with JAX's reason; `backend_failure(err)`
tells such an exception from any other for entry points where JAX starts later.

    python -m crc_jax.runtime.devices [--device auto|cpu|gpu|tpu] [--distributed]

prints that line (exit status 0), or the reason (exit status 2): the one command that
shows whether JAX uses the accelerator (docs/accelerators.md, "First run").
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata
from pathlib import Path

from crc_jax.errors import EXIT_USAGE, DeviceUnavailable

REQUIRE = ("auto", "cpu", "gpu", "tpu")
# The distributions that give JAX an accelerator; pip names (docs/accelerators.md, "Installs").
PLUGINS = {"gpu": ("jax-cuda13-plugin", "jax-cuda13-pjrt", "jax-cuda12-plugin", "jax-cuda12-pjrt"),
           "tpu": ("libtpu", "libtpu-nightly")}
INSTALL_HINT = {"gpu": "pip install 'jax[cuda13]' (or 'jax[cuda12]'; crc_jax's extras: "
                       "'crc_jax[cuda13]')",
                "tpu": "pip install 'jax[tpu]' (crc_jax's extra: 'crc_jax[tpu]')"}
# The names under which JAX's backends for a platform register (jax.devices accepts these).
BACKEND_NAMES = {"gpu": ("cuda", "rocm"), "tpu": ("tpu",), "cpu": ("cpu",)}
SHOWN_DEVICES = 8    # the start-up line names at most this many devices
JAX_START_ERROR = "Unable to initialize backend"   # how JAX's own start-up errors begin


def installed_plugins(platform: str) -> dict[str, str]:
    """{distribution: version} of the accelerator plugins for `platform` in this environment."""
    found = {}
    for name in PLUGINS.get(platform, ()):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def select(require: str) -> None:
    """Before JAX starts its backends: `require="cpu"` starts the CPU backend alone
    (jax_platforms), so a run asked to stay on the CPU leaves a machine's GPU or TPU to
    others. Other values change nothing: JAX picks, `check` judges."""
    if require != "cpu":
        return
    import jax

    if not _backends_started():
        jax.config.update("jax_platforms", "cpu")


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:   # a JAX without this private module: assume started (no change)
        return True
    return bool(xla_bridge.backends_are_initialized())


def start_backend() -> None:
    """Start JAX's backends now; a failure to start them is DeviceUnavailable (one line,
    JAX's reason). Any other exception passes."""
    import jax

    try:
        jax.devices()
    except Exception as err:
        line = backend_failure(err)
        if line is None:
            raise
        raise DeviceUnavailable(line) from None


def backend_failure(err: BaseException) -> str | None:
    """The one line for an exception raised while JAX started its backends (a platform in
    JAX_PLATFORMS that is unknown or cannot start, a plugin that fails to load), JAX's
    reason first; None for any other exception.

    JAX's traceback filtering drops its own frames below a jitted call, so when `err` came
    out of JAX without showing where, and JAX's backend is not up, the backend is started
    again here: if that fails, it is what `err` was."""
    if _raised_starting_backends(err) or str(err).startswith(JAX_START_ERROR):
        return _failure_line(err)
    import jax

    if _backends_started() or not _came_from_jax(err, Path(jax.__file__).parent):
        return None   # JAX is up, or `err` is not JAX's: it is about something else
    try:
        jax.devices()
    except Exception as again:
        return _failure_line(again) if _raised_starting_backends(again) else None
    return None


def _failure_line(err: BaseException) -> str:
    said = " ".join(str(err).split())
    platforms = _requested_platforms()
    if not said:   # JAX skipped every platform asked for (e.g. "cuda" with no GPU visible)
        said = (f"it started none of the platforms asked for ({', '.join(map(repr, platforms))})"
                if platforms else "no platform started")
    parts = [f"JAX could not start its backend: {said}"]
    for family in dict.fromkeys(_family(name) for name in platforms):
        if family in PLUGINS:
            if _hardware_visible(family) is False:
                parts.append("no NVIDIA GPU visible to this process (no /dev/nvidia*)"
                             if family == "gpu" else "no TPU chip visible to this process")
            plugins = installed_plugins(family)
            parts.append(", ".join(f"{n} {v}" for n, v in plugins.items())
                         + f" installed beside jaxlib {_version('jaxlib')}" if plugins
                         else f"no {family.upper()} plugin installed: {INSTALL_HINT[family]}")
    if os.environ.get("PJRT_NAMES_AND_LIBRARY_PATHS"):
        parts.append(f"PJRT_NAMES_AND_LIBRARY_PATHS={os.environ['PJRT_NAMES_AND_LIBRARY_PATHS']} "
                     "is set")
    if platforms:
        setting = (f"JAX_PLATFORMS={os.environ['JAX_PLATFORMS']}" if os.environ.get("JAX_PLATFORMS")
                   else f"jax_platforms={','.join(platforms)}")
        parts.append(f"{setting} is set: unset it to let JAX pick, or set JAX_PLATFORMS=cpu")
    return "; ".join(" ".join(p.split()) for p in parts)


def _raised_starting_backends(err: BaseException) -> bool:
    """Whether `err` (or an exception it was raised from) came out of
    jax._src.xla_bridge.backends, the one function that starts JAX's backends."""
    seen = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_name == "backends" and Path(code.co_filename).name == "xla_bridge.py":
                return True
            tb = tb.tb_next
        current = current.__cause__ or current.__context__
    return False


def _came_from_jax(err: BaseException, package: Path) -> bool:
    """Whether `err` passed through JAX: a frame of its traceback in a file under `package`
    (JAX's), or the note JAX adds where its traceback filtering removed its frames."""
    if any("JAX has removed its internal frames" in note
           for note in getattr(err, "__notes__", ())):
        return True
    tb = err.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).is_relative_to(package):
            return True
        tb = tb.tb_next
    return False


def _requested_platforms() -> list[str]:
    """The platforms JAX was told to start (jax_platforms, which JAX_PLATFORMS sets), as
    given; [] when JAX picks."""
    import jax

    value = getattr(jax.config, "jax_platforms", None) or ""
    return [p.strip() for p in str(value).split(",") if p.strip()]


def _family(name: str) -> str:
    """gpu, tpu or cpu for a JAX platform name or alias (cuda -> gpu); the name otherwise."""
    return next((f for f, names in BACKEND_NAMES.items() if name == f or name in names), name)


def check(require: str, *, option: str = "device.require") -> None:
    """Raise DeviceUnavailable unless JAX's default backend is the platform `require`
    names ("auto" accepts any), or when JAX's backend cannot start at all. The message is
    one line, starting with `option` (or, when JAX cannot start, with that)."""
    if require not in REQUIRE:
        raise DeviceUnavailable(f"{option}: {require!r} is not one of: {', '.join(REQUIRE)}")
    import jax

    start_backend()
    backend = jax.default_backend()
    if require == "auto" or backend == require:
        return
    count = jax.device_count()
    where = f"JAX runs on {backend} ({count} device{'s' if count != 1 else ''})"
    raise DeviceUnavailable(f"{option}={require}, but {where}: {reason(require)}")


def reason(platform: str) -> str:
    """Why JAX has no `platform` backend, in one line: JAX's own error for it, the error
    recorded when that backend failed to start, JAX_PLATFORMS, the hardware and plugins."""
    import jax

    parts = []
    if platform == "cpu":
        parts.append("JAX started its accelerator backend before the run could ask for the "
                     "CPU; start the process with JAX_PLATFORMS=cpu")
    recorded = _recorded_errors()
    for name in BACKEND_NAMES.get(platform, (platform,)):
        if name in recorded:
            parts.append(f"JAX: backend {name!r} failed to initialize: {recorded[name]}")
    if not parts:
        try:
            jax.devices(platform)
        except RuntimeError as err:
            parts.append(f"JAX: {err}")
    if os.environ.get("JAX_PLATFORMS"):
        parts.append(f"JAX_PLATFORMS={os.environ['JAX_PLATFORMS']} is set")
    if _hardware_visible(platform) is False:
        parts.append("no NVIDIA GPU visible to this process (no /dev/nvidia*)" if platform == "gpu"
                     else "no TPU chip visible to this process")
    if platform in PLUGINS:
        plugins = installed_plugins(platform)
        jaxlib = _version("jaxlib")
        if plugins:
            parts.append(", ".join(f"{n} {v}" for n, v in plugins.items())
                         + f" installed beside jax {_version('jax')}, jaxlib {jaxlib}")
        else:
            parts.append(f"no {platform.upper()} plugin installed: {INSTALL_HINT[platform]}")
    return "; ".join(" ".join(p.split()) for p in parts)   # one line, whatever JAX wrote


def _recorded_errors() -> dict[str, str]:
    """The errors JAX kept for backends that failed quietly (jax._src.xla_bridge, private:
    an empty dict where a JAX version lacks it)."""
    try:
        from jax._src import xla_bridge
    except ImportError:
        return {}
    return dict(getattr(xla_bridge, "_backend_errors", {}) or {})


def _hardware_visible(platform: str) -> bool | None:
    """Whether the machine shows this process an NVIDIA GPU or a TPU chip (JAX's own
    probes, private: None where unknown)."""
    try:
        from jax._src import hardware_utils
        if platform == "gpu":
            return bool(hardware_utils.has_visible_nvidia_gpu())
        if platform == "tpu":
            return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
    except Exception:  # noqa: BLE001 - a probe that fails says nothing either way
        return None
    return None


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def describe(require: str = "auto", *, option: str = "device.require") -> str:
    """The start-up line: backend, devices (ids and kind), processes, jax, the requirement,
    XLA_FLAGS when set. E.g. `devices: 8 tpu device(s) [tpu:0, ..., tpu:7] (TPU v5 lite);
    jax 0.12.0; device.require=tpu`."""
    import jax

    devs = jax.devices()
    names = [f"{d.platform}:{d.id}" for d in devs]
    if len(names) > SHOWN_DEVICES:
        names = names[:SHOWN_DEVICES - 2] + ["...", names[-1]]
    kinds = sorted({d.device_kind for d in devs})
    procs = jax.process_count()
    line = (f"devices: {len(devs)} {jax.default_backend()} device(s) [{', '.join(names)}] "
            f"({', '.join(kinds)})"
            + (f" in {procs} processes (this is process {jax.process_index()})" if procs > 1 else "")
            + f"; jax {jax.__version__}; {option}={require}")
    if os.environ.get("XLA_FLAGS"):
        line += f"; XLA_FLAGS={os.environ['XLA_FLAGS']}"
    return line


def start(require: str, *, option: str = "device.require") -> str:
    """select, then check: the start-up line of a run that may go on, or DeviceUnavailable."""
    select(require)
    check(require, option=option)
    return describe(require, option=option)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m crc_jax.runtime.devices",
                                description="Say which devices JAX uses; exit 2 when the "
                                            "platform --device names is missing, with JAX's reason.")
    p.add_argument("--device", default="auto", choices=REQUIRE)
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() first (on every worker of a TPU pod "
                        "slice; it detects the rest)")
    args = p.parse_args(argv)
    try:
        if args.distributed:
            import jax

            try:
                jax.distributed.initialize()
            except (RuntimeError, ValueError) as err:
                raise DeviceUnavailable("jax.distributed.initialize() failed: "
                                        + " ".join(str(err).split())) from None
        print(start(args.device, option="--device"), flush=True)
    except DeviceUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
