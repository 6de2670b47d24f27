"""Small real file systems for the tests: a tiny tmpfs (a disk that fills up) and a
read-only bind mount. They need the right to mount (root, or CAP_SYS_ADMIN); `unavailable()`
says why not when the machine does not allow it, so the tests can skip with that reason.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import subprocess
import tempfile
from pathlib import Path


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True, timeout=60)


def unmount(path: os.PathLike) -> None:
    subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=60)


@functools.lru_cache(maxsize=1)
def unavailable() -> str:
    """Why this machine cannot mount a tmpfs here ("" when it can)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "mounting a tmpfs needs root (CAP_SYS_ADMIN); not root here"
    probe = Path(tempfile.mkdtemp(prefix="mount_probe_"))
    try:
        _mount("-t", "tmpfs", "-o", "size=16k", "tmpfs", str(probe))
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", "") or str(err)
        return f"mount -t tmpfs is not allowed here ({detail.strip().splitlines()[-1:]})"
    unmount(probe)
    probe.rmdir()
    return ""


def tmpfs(path: Path, size_kib: int) -> Path:
    """Mount a tmpfs of `size_kib` KiB at `path` (created); unmount it with `unmount`."""
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path))
    return path


def read_only(path: Path) -> Path:
    """Make `path` (a directory) read-only in place: a read-only bind mount over itself."""
    _mount("--bind", str(path), str(path))
    _mount("-o", "remount,bind,ro", str(path))
    return path


def fill(directory: Path, name: str = "filler") -> int:
    """Fill the file system of `directory` with one file until the disk is full; bytes written."""
    written = 0
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 4096, 512, 64, 1):
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    n = os.write(fd, chunk)
                    written += n
                    if n < size:
                        break
    finally:
        os.close(fd)
    probe = directory / ".probe"
    try:
        probe.write_bytes(b"x" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC, err
    else:
        raise AssertionError(f"{directory}: still room after filling it")
    finally:
        probe.unlink(missing_ok=True)
    return written
