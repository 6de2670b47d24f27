"""The run journal: the append-only record of what was labeled, one line per completed step.

Each line is a JSON object with a CRC-32 checksum of its canonical body, written whole,
flushed and fsynced before the next step starts. On reading, a torn last line (a crash
mid-append) is reported and dropped; a bad line anywhere else is an error naming it.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from pathlib import Path

from crc_jax.run import faults
from crc_jax.errors import RunDirError

log = logging.getLogger(__name__)


def _checksum(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return f"{zlib.crc32(canonical.encode()):08x}"


def encode(entry: dict) -> str:
    """One journal line (with trailing newline) for `entry`."""
    if "crc32" in entry:
        raise ValueError("journal entries may not carry a 'crc32' key")
    line = dict(entry, crc32=_checksum(entry))
    return json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n"


def decode(line: str) -> dict:
    """The entry of one line; ValueError when it is not whole or its checksum is wrong."""
    record = json.loads(line)
    if not isinstance(record, dict) or "crc32" not in record:
        raise ValueError("no checksum")
    crc = record.pop("crc32")
    if crc != _checksum(record):
        raise ValueError("checksum mismatch")
    return record


class Journal:
    """An append-only JSON-lines file of completed acquisition steps."""

    def __init__(self, path: os.PathLike):
        self.path = Path(path)

    def read(self) -> list[dict]:
        """All whole entries. Drops (and truncates away) a torn last line; raises on others."""
        if not self.path.exists():
            return []
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise RunDirError(f"{self.path}: cannot be read as a journal "
                              f"({err.strerror or err})") from None
        lines = raw.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        entries = []
        for number, line in enumerate(complete, start=1):
            try:
                entries.append(decode(line.decode()))
            except (ValueError, UnicodeDecodeError) as err:
                # A newline-terminated line was written whole: a bad one is corruption.
                raise RunDirError(f"{self.path}: line {number} is corrupt ({err}); "
                                  "the journal was left untouched") from None
        if tail:
            log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run",
                        self.path, len(tail))
            with open(self.path, "r+b") as f:
                f.truncate(len(raw) - len(tail))
                f.flush()
                os.fsync(f.fileno())
        for expected, entry in enumerate(entries):
            if entry.get("step") != expected:
                raise RunDirError(f"{self.path}: line {expected + 1} holds step "
                                  f"{entry.get('step')}, expected {expected}")
        return entries

    def append(self, entry: dict) -> None:
        """Write one entry whole, then flush and fsync, before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_synced(self.path, encode(entry).encode(), fault_point="journal_append")


def append_synced(path: Path, data: bytes, *, fault_point: str) -> None:
    """Append `data` with one write, then fsync, before returning. Fault injection at
    `fault_point` writes half of it, fsyncs and dies: the torn line a crash leaves."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if faults.armed(fault_point):  # a crash halfway through the write
            os.write(fd, data[:len(data) // 2])
            os.fsync(fd)
            faults.kill_now()
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` by `data` whole: temporary file, fsync, rename, fsync the folder."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
