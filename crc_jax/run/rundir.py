"""A run directory: its config.json, and the lock that keeps one writer per directory.

Rerunning the same config on a directory resumes it; another config is refused. The
lock is an advisory `flock`, released by the kernel when the process dies, so a crashed
run never leaves it stuck.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

from crc_jax import durable
from crc_jax.runtime import distributed
from crc_jax.errors import RunDirError

# Fields that do not change results: a resumed run may differ in these. How many
# processes share the work does not (tests/test_multiprocess.py checks it), nor how often
# training checkpoints (a resume from a checkpoint is bit-identical: tests/test_checkpoint.py),
# nor which platform the run demanded (device.require only decides whether it starts), nor
# how many train steps share a call (tests/test_multistep.py; run dirs made before that
# field existed resume too).
COSMETIC_FIELDS = ("train.progress", "train.checkpoint_every", "train.steps_per_dispatch",
                   "distributed", "device")


def strategy_dirname(spec: str) -> str:
    """A file-system-safe folder name for a strategy spec ('crc:subset=all' -> 'crc-subset=all')."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", spec.replace(":", "-").replace(",", "-"))


def comparable_config(config_dict: dict) -> dict:
    """The config without the fields that do not change results."""
    out = json.loads(json.dumps(config_dict, sort_keys=True))
    for dotted in COSMETIC_FIELDS:
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return out


def essential_config(config_dict: dict) -> dict:
    """The comparable config without the fields at the library's default
    (crc_jax.config.defaults()): what sets a run apart. A field added to the library later,
    at a default that keeps the old behaviour, leaves it unchanged, so runs made before the
    field existed keep their fingerprints."""
    from crc_jax.config import defaults

    def prune(node: dict, default) -> dict:
        out = {}
        for key, value in node.items():
            base = default.get(key) if isinstance(default, dict) else None
            if isinstance(value, dict):
                kept = prune(value, base)
                if kept or not isinstance(base, dict):
                    out[key] = kept
            elif not isinstance(default, dict) or key not in default or value != base:
                out[key] = value
        return out

    return prune(comparable_config(config_dict), comparable_config(defaults().to_dict()))


def _diff(a: dict, b: dict, prefix: str = "", default=None) -> list[str]:
    """Fields of `b` that differ from `a`; a field `a` lacks (a run made before it existed)
    whose value in `b` is the library default is no difference."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        name = f"{prefix}{k}"
        base = default.get(k) if isinstance(default, dict) else None
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], name + ".", base)
        elif k not in a and isinstance(default, dict) and k in default and b[k] == base:
            continue
        elif a.get(k) != b.get(k):
            out.append(f"{name}: {a.get(k)!r} -> {b.get(k)!r}")
    return out


def read_config_json(path: Path) -> dict:
    """The config a run directory is bound to; RunDirError when config.json is unreadable."""
    try:
        old = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        problem = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise RunDirError(f"{path}: unreadable ({problem}); it binds the directory to its "
                          "run, so fix or restore it, or use a new --workdir") from None
    if not isinstance(old, dict) or not old:
        raise RunDirError(f"{path}: holds {type(old).__name__} {str(old)[:40]!r}, not a config; "
                          "fix or restore it, or use a new --workdir")
    return old


class RunDir:
    """Owns `path` for the lifetime of the object (use as a context manager)."""

    def __init__(self, path: os.PathLike, option: str = "--workdir"):
        self.path = Path(path)
        self.option = option   # the command's option that named the directory, for messages
        self.label = "workdir" if option == "--workdir" else option
        self._lock = contextlib.ExitStack()

    def __enter__(self) -> RunDir:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock.enter_context(durable.file_lock(self.path / ".lock", wait=False, pid=True))
        except BlockingIOError:
            raise RunDirError(f"{self.label} {self.path} is in use by another process; "
                              f"wait for it or choose another {self.option}") from None
        except OSError as err:
            raise RunDirError(f"{self.label} {self.path}: cannot be written ({err.strerror})") from None
        return self

    def __exit__(self, *exc):
        self._lock.close()

    def bind_config(self, config_dict: dict) -> dict:
        """Write config.json, or check that the existing one describes the same run (fields
        added to the library since it was written count when not at their default).
        Returns the config as stored: the existing one, or `config_dict`."""
        from crc_jax.config import defaults

        path = self.path / "config.json"
        if path.exists() or path.is_symlink():
            old = read_config_json(path)
            changes = _diff(comparable_config(old), comparable_config(config_dict),
                            default=comparable_config(defaults().to_dict()))
            if changes:
                raise RunDirError(
                    f"{self.label} {self.path} holds a run with another config ({'; '.join(changes[:3])}"
                    f"{'; ...' if len(changes) > 3 else ''}); use a new {self.option}")
            return old
        durable.write_atomic(path, json.dumps(config_dict, indent=2, sort_keys=True).encode())
        return config_dict


@contextlib.contextmanager
def run_dir(path: os.PathLike):
    """The run directory locked by process 0 for the block; yields `bind(fn)`.

    `RunDir` on process 0 only (crc_jax.runtime.distributed.from_writer). `bind(fn)` runs
    `fn(rundir)` on process 0 (checks, then `rundir.bind_config(...)`); a RunDirError there
    (a directory in use, another run's config or journals) is raised on every process.
    """
    with contextlib.ExitStack() as stack:
        held = {}

        def lock():
            held["rundir"] = stack.enter_context(RunDir(path))

        distributed.from_writer(lock, errors=(RunDirError,))
        yield lambda fn: distributed.from_writer(lambda: fn(held["rundir"]), errors=(RunDirError,))
