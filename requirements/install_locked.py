"""Install the locked set without moving the jax of an installed GPU or TPU plugin.

`make demo` / `make test` install `-c requirements/lock.txt -e '.[dev]'`. The lock pins
the CPU set's jax and jaxlib (0.10.2). Where a JAX accelerator plugin is installed
(jax-cuda12-plugin, jax-cuda13-plugin, libtpu: e.g. after `pip install -e '.[cuda13]'`),
those pins would move jax and jaxlib under it; the plugin then no longer matches jaxlib,
JAX skips it, and everything runs on the CPU. So, with a plugin installed, this script
first asks pip what the locked install would do (`pip install --dry-run --report`): if it
would change jax or jaxlib, it installs with the lock minus its jax/jaxlib pins and with
the installed jax, jaxlib and plugin pinned instead (pip keeps them), and says so. If
that cannot be resolved, it stops (exit status 2) with the commands that would go on.

    .venv/bin/python requirements/install_locked.py [--lock requirements/lock.txt] -e '.[dev]'

Run it with the environment's own Python (the Makefile's $(STAMP) rule does); arguments
it does not know are pip's (requirements, -e). Without a plugin it is the plain locked
install.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

PLUGINS = ("jax-cuda12-plugin", "jax-cuda12-pjrt", "jax-cuda13-plugin", "jax-cuda13-pjrt",
           "libtpu", "libtpu-nightly")
JAX_STACK = ("jax", "jaxlib")   # the lock's pins that must not move under a plugin
EXIT_REFUSED = 2


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed(names) -> dict[str, str]:
    """{name: version} of the distributions among `names` installed for this Python."""
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", *args]


def dry_run(constraints: Path, pip_args: list[str]) -> dict:
    """pip's report of what `pip install -c constraints pip_args` would install."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(pip("install", "-q", "--dry-run", "--report", str(report),
                           "-c", str(constraints), *pip_args), check=True)
        return json.loads(report.read_text())


def moves(report: dict, present: dict[str, str]) -> dict[str, tuple[str | None, str]]:
    """{name: (installed version, version the install would put)} for jax and jaxlib."""
    out = {}
    for item in report.get("install", []):
        name, version = canonical(item["metadata"]["name"]), item["metadata"]["version"]
        if name in JAX_STACK and present.get(name) != version:
            out[name] = (present.get(name), version)
    return out


def kept_constraints(lock_text: str, keep: dict[str, str]) -> str:
    """The lock without its lines for the `keep` names, and `keep` pinned as installed."""
    drop = {canonical(n) for n in keep}
    lines = [line for line in lock_text.splitlines()
             if canonical(re.split(r"[=<>!~ ;\[]", line.strip(), maxsplit=1)[0]) not in drop
             or line.lstrip().startswith("#")]
    return "\n".join(lines + [f"{n}=={v}" for n, v in sorted(keep.items())]) + "\n"


def mismatched_plugins(plugins: dict[str, str], jaxlib: str | None) -> list[str]:
    """CUDA plugins whose version is not jaxlib's (JAX then skips them)."""
    return [f"{n} {v}" for n, v in plugins.items()
            if n.startswith("jax-cuda") and jaxlib is not None and v != jaxlib]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=Path("requirements/lock.txt"))
    args, pip_args = parser.parse_known_args(argv)
    plugins = installed(PLUGINS)
    locked = pip("install", "-q", "-c", str(args.lock), *pip_args)
    if not plugins:
        return subprocess.run(locked).returncode
    stack = installed(JAX_STACK)
    moved = moves(dry_run(args.lock, pip_args), stack)
    if moved:
        plugin_text = ", ".join(f"{n} {v}" for n, v in plugins.items())
        print(f"{plugin_text} installed: keeping "
              + ", ".join(f"{n} {v}" for n, v in stack.items())
              + " (the lock's " + ", ".join(f"{n}=={new}" for n, (_, new) in sorted(moved.items()))
              + " would move jax under the plugin, and JAX would fall back to the CPU); "
              "the other locked versions apply", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            constraints = Path(tmp) / "constraints.txt"
            constraints.write_text(kept_constraints(args.lock.read_text(), {**stack, **plugins}))
            status = subprocess.run(pip("install", "-q", "-c", str(constraints), *pip_args)).returncode
        if status:
            quoted = " ".join(shlex.quote(a) for a in pip_args)
            print(f"error: the locked set cannot be installed beside {plugin_text} without moving "
                  f"jax; either install without the lock, keeping the plugin: "
                  f"{sys.executable} -m pip install {quoted}  -- or remove the plugin and install "
                  f"the locked CPU set: {sys.executable} -m pip uninstall -y "
                  f"{' '.join(plugins)} && {shlex.join(locked)}", file=sys.stderr)
            return EXIT_REFUSED
    else:
        status = subprocess.run(locked).returncode
        if status:
            return status
    for line in mismatched_plugins(installed(PLUGINS), installed(JAX_STACK).get("jaxlib")):
        print(f"warning: {line} does not match jaxlib {installed(JAX_STACK).get('jaxlib')}: JAX "
              f"will not use it (it falls back to the CPU); reinstall the matching pair, e.g. "
              f"{sys.executable} -m pip install 'jax[{line.split('-')[1]}]'", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
