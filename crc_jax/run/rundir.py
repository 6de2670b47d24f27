"""A run directory: its config.json, and the lock that keeps one writer per directory.

Rerunning the same config on a directory resumes it; another config is refused. The
lock is an advisory `flock`, released by the kernel when the process dies, so a crashed
run never leaves it stuck.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

from crc_jax import distributed
from crc_jax.errors import RunDirError

# Fields that do not change results: a resumed run may differ in these. How many
# processes share the work does not (tests/test_multiprocess.py checks it), nor how often
# training checkpoints (a resume from a checkpoint is bit-identical: tests/test_checkpoint.py).
COSMETIC_FIELDS = ("train.progress", "train.checkpoint_every", "distributed")
# Fields added after run directories were written, dropped while at their default, so a
# directory written before they existed still resumes with its fingerprint unchanged.
LATER_DEFAULTS = {"al.initial_rule": "random", "al.initial_indices": [],
                  "al.initial_margin_quantile": 0.0}


def comparable_config(config_dict: dict) -> dict:
    """The config without the fields that do not change results."""
    out = json.loads(json.dumps(config_dict, sort_keys=True))
    for dotted in COSMETIC_FIELDS:
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    for dotted, default in LATER_DEFAULTS.items():
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node.get(p, {})
        if leaf in node and node[leaf] == default:
            del node[leaf]
    return out


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        name = f"{prefix}{k}"
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            out += _diff(a[k], b[k], name + ".")
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

    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        self._lock_fd = None

    def __enter__(self) -> "RunDir":
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"workdir {self.path}: cannot be written ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirError(f"workdir {self.path} is in use by another process; "
                              "wait for it or choose another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return self

    def __exit__(self, *exc):
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def bind_config(self, config_dict: dict) -> None:
        """Write config.json, or check that the existing one describes the same run."""
        path = self.path / "config.json"
        if path.exists() or path.is_symlink():
            old = read_config_json(path)
            changes = _diff(comparable_config(old), comparable_config(config_dict))
            if changes:
                raise RunDirError(
                    f"workdir {self.path} holds a run with another config ({'; '.join(changes[:3])}"
                    f"{'; ...' if len(changes) > 3 else ''}); use a new --workdir")
            return
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config_dict, indent=2, sort_keys=True))
        os.replace(tmp, path)


@contextlib.contextmanager
def run_dir(path: os.PathLike):
    """The run directory locked by process 0 for the block; yields `bind(fn)`.

    `RunDir` on process 0 only (crc_jax.distributed.from_writer). `bind(fn)` runs `fn(rundir)` on process 0
    (checks, then `rundir.bind_config(...)`); a RunDirError there (a directory in use,
    another run's config or journals) is raised on every process.
    """
    with contextlib.ExitStack() as stack:
        held = {}

        def lock():
            held["rundir"] = stack.enter_context(RunDir(path))

        distributed.from_writer(lock, errors=(RunDirError,))
        yield lambda fn: distributed.from_writer(lambda: fn(held["rundir"]), errors=(RunDirError,))
