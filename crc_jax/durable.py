"""Files that survive crashes: the storage layer under the experiment runner and `crc-jax`.

Both applications keep their records in the same few shapes, written here once:

  * checksummed JSON lines (`encode_line`, `decode_line`): one JSON object a line, with a
    CRC-32 of its canonical body, so a line is known whole exactly when its checksum
    verifies, whether or not its newline made it to disk;
  * `append_synced`: every byte appended and fsynced, or an error with the file cut back
    to its size before the append (short writes are continued, never taken as success);
  * `read_lines`: the whole lines from a byte offset (for incremental readers), a torn
    last line reported apart, and `repair`, which cuts only a line that fails its checksum
    and gives a whole last line its missing newline before anything is appended after it;
  * `Journal`: a file of numbered entries (step 0, 1, ...) on those two, read by its one
    writer (the run journals, a project's rounds log);
  * `write_atomic`: a temporary file, fsync, rename, fsync of the folder: the old file or
    the new one, never half of either;
  * `file_lock`: an advisory `flock` the kernel drops when the holder dies;
  * `claim_dir`: an output folder a command may write into (new, empty, or its own);
  * `csv_bytes` / `write_csv`: CSV written through `write_atomic`.

Fault injection for the crash tests lives beside this module (crc_jax.runtime.faults).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import io
import json
import logging
import os
import secrets
import zlib
from pathlib import Path
from collections.abc import Iterable, Iterator, Sequence

from crc_jax.runtime import faults, interrupt
from crc_jax.errors import StorageError

log = logging.getLogger(__name__)

CHECKSUM_KEY = "crc32"


class CorruptLine(ValueError):
    """A newline-terminated line (or any line before the last) that fails its checksum:
    not a crash mid-append but damage, so nothing is cut and the caller reports it."""

    def __init__(self, path: Path, number: int, offset: int, reason: str):
        self.path, self.number, self.offset, self.reason = Path(path), number, offset, reason
        super().__init__(f"{path}: line {number} is corrupt ({reason})")


# -- checksummed JSON lines --------------------------------------------------------------

def _checksum(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return f"{zlib.crc32(canonical.encode()):08x}"


def encode_line(entry: dict) -> str:
    """One checksummed line (with its newline) for `entry`."""
    if CHECKSUM_KEY in entry:
        raise ValueError(f"entries may not carry a {CHECKSUM_KEY!r} key")
    line = dict(entry, **{CHECKSUM_KEY: _checksum(entry)})
    return json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n"


def decode_line(line: str | bytes) -> dict:
    """The entry of one line; ValueError when it is not whole or its checksum is wrong."""
    if isinstance(line, bytes):
        line = line.decode()
    record = json.loads(line)
    if not isinstance(record, dict) or CHECKSUM_KEY not in record:
        raise ValueError("no checksum")
    crc = record.pop(CHECKSUM_KEY)
    if crc != _checksum(record):
        raise ValueError("checksum mismatch")
    return record


@dataclasses.dataclass
class Lines:
    """What `read_lines` found from `start` on.

    entries:        the whole lines' entries, in file order.
    end:            byte offset just past the last whole line (its newline included when
                    it has one): where the next incremental read starts.
    torn:           the bytes of a last line that fails its checksum (a crash mid-append,
                    or an append still in progress in another process); b"" if none.
    needs_newline:  the last whole line has no newline (a crash after the write, an
                    editor); `repair` adds it before anything is appended.
    """

    entries: list
    end: int
    torn: bytes = b""
    needs_newline: bool = False


def read_lines(path: os.PathLike, start: int = 0) -> Lines:
    """Decode the checksummed lines of `path` from byte `start` (a missing file is empty).

    Raises CorruptLine for a bad line that is not the last one (or is newline-terminated):
    that is damage, not a torn append; blank lines are skipped. Raises OSError when the
    file cannot be read.
    """
    path = Path(path)
    if not path.exists():
        return Lines(entries=[], end=start)
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read()
    *complete, last = raw.split(b"\n")
    entries, offset = [], start
    for number, line in enumerate(complete, start=1):
        if not line:   # a blank line holds nothing (e.g. the newline `repair` gave a
            offset += 1  # whole last line that an incremental reader had already read)
            continue
        try:
            entries.append(decode_line(line))
        except (ValueError, UnicodeDecodeError) as err:
            raise CorruptLine(path, number, offset, str(err)) from None
        offset += len(line) + 1
    if not last:
        return Lines(entries=entries, end=offset)
    try:
        entries.append(decode_line(last))
    except (ValueError, UnicodeDecodeError):
        return Lines(entries=entries, end=offset, torn=last)
    return Lines(entries=entries, end=offset + len(last), needs_newline=True)


def repair(path: os.PathLike, lines: Lines) -> None:
    """Make `path` safe to append to after `read_lines` returned `lines` (read to its end):
    cut a torn last line, or give a whole last line its newline; fsynced. A writer calls
    this under its lock; readers never change the file."""
    if not (lines.torn or lines.needs_newline):
        return
    with open(path, "r+b") as f:
        if lines.torn:
            f.truncate(lines.end)
        else:
            f.seek(lines.end)
            f.write(b"\n")
            lines.end += 1
            lines.needs_newline = False
        f.flush()
        os.fsync(f.fileno())
    lines.torn = b""


class Journal:
    """An append-only file of entries numbered by their "step" field: 0, 1, 2, ...

    `read` is for the file's one writer: it repairs the end of the file (a torn last line
    cut and logged, a missing last newline added) and checks the numbering; `entries`
    only reads. Problems are StorageError naming the file; nothing is cut but a torn line.
    """

    def __init__(self, path: os.PathLike):
        self.path = Path(path)

    def _lines(self) -> Lines:
        try:
            lines = read_lines(self.path)
        except CorruptLine as err:
            raise StorageError(f"{err}; the journal was left untouched") from None
        except OSError as err:
            raise StorageError(f"{self.path}: cannot be read as a journal "
                               f"({err.strerror or err})") from None
        for expected, entry in enumerate(lines.entries):
            if entry.get("step") != expected:
                raise StorageError(f"{self.path}: line {expected + 1} holds step "
                                   f"{entry.get('step')}, expected {expected}")
        return lines

    def entries(self) -> list[dict]:
        """The whole entries, without changing the file (a torn last line, e.g. an append
        in progress in another process, is left out)."""
        return self._lines().entries

    def read(self) -> list[dict]:
        """The whole entries, after making the file safe to append to (its writer only)."""
        lines = self._lines()
        if lines.torn:
            log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted "
                        "write", self.path, len(lines.torn))
        try:
            repair(self.path, lines)
        except OSError as err:
            raise StorageError(f"{self.path}: cannot be repaired ({err.strerror or err})") from None
        return lines.entries

    def append(self, entry: dict, *, fault_point: str = "journal_append") -> None:
        """Write one entry whole, flushed and fsynced, before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_synced(self.path, encode_line(entry).encode(), fault_point=fault_point)


# -- appending and replacing -------------------------------------------------------------

def append_synced(path: os.PathLike, data: bytes, *, fault_point: str) -> None:
    """Append all of `data`, then fsync, before returning.

    A short write is continued until every byte is written; an error (a full disk, a
    read-only file system) cuts the file back to its size before this append and is
    raised, so the file never ends in a part of `data` that a caller believes saved.
    Ctrl-C is held back until the append has ended (crc_jax.runtime.interrupt.deferred): an
    interrupt at any instant neither cuts back what was written whole nor leaves a part.
    Fault injection at `fault_point` writes half of `data`, fsyncs and dies: the torn
    line a crash leaves; at `fault_point`.start, .written and .synced it acts at those
    instants (crc_jax.runtime.faults).
    """
    with interrupt.deferred():
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                faults.maybe_kill(f"{fault_point}.start")
                if faults.armed(fault_point):  # a crash halfway through the write
                    os.write(fd, data[:len(data) // 2])
                    os.fsync(fd)
                    faults.kill_now()
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    if written <= 0:
                        raise OSError(f"{path}: the write made no progress")
                    view = view[written:]
                faults.maybe_kill(f"{fault_point}.written")
                os.fsync(fd)
                faults.maybe_kill(f"{fault_point}.synced")
            except BaseException as err:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                    os.fsync(fd)
                _name(err, path)
                raise
        finally:
            os.close(fd)


def _new_temporary(path: Path) -> Path:
    """An empty file created beside `path` under a name no file had (O_EXCL), so writing it
    cannot overwrite a user's file; the umask sets its mode, as for any file we write."""
    while True:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as err:
            _name(err, path, instead_of=tmp)
            raise


def _name(err: BaseException, path: os.PathLike, *, instead_of: os.PathLike | None = None) -> None:
    """Give an OSError from a write on an open file (which carries no file name), or one
    naming the temporary file `instead_of`, the name `path`, so the one line a command
    prints names the file the user asked for."""
    if isinstance(err, OSError) and (err.filename is None or (
            instead_of is not None and err.filename == str(instead_of))):
        err.filename = str(path)


def write_atomic(path: os.PathLike, data: bytes) -> None:
    """Replace `path` by `data` whole: temporary file, fsync, rename, fsync the folder.
    On an error the temporary file is removed and `path` is unchanged. The temporary file is
    a new one (created exclusively under a unique name), never a file already there."""
    path = Path(path)
    tmp = _new_temporary(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        _name(err, path, instead_of=tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- output folders ----------------------------------------------------------------------

def claim_dir(path: os.PathLike, marker: str, *, command: str, accept: Sequence[str] = (),
              flag: str = "") -> Path:
    """Make `path` an output folder of `command`, which then writes only there.

    The folder must be new, empty, or hold `marker` (the file this function leaves in every
    folder it claims) or one of `accept` (files only that command writes); otherwise it
    holds someone else's files, and StorageError says so in one line (`flag`, e.g.
    "--out", names the option that gave it). A command never overwrites what it did not
    write: this is the one place that decides.
    """
    path = Path(path)
    where = f"{flag} {path}".strip()
    if path.exists() and not path.is_dir():
        raise StorageError(f"{where}: exists and is not a directory; give a new or empty "
                           "folder")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if names and not names & {marker, *accept}:
            shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
            raise StorageError(f"{where}: not empty and not made by {command} (it holds "
                               f"{shown}); give a new or empty folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not (path / marker).exists():
            (path / marker).write_text(f"written by {command}: it may replace its own files "
                                       "here\n")
    except OSError as err:
        raise StorageError(f"{where}: cannot be written ({err.strerror or err})") from None
    return path


# -- locks -------------------------------------------------------------------------------

@contextlib.contextmanager
def file_lock(path: os.PathLike, *, wait: bool = True, pid: bool = False) -> Iterator[int]:
    """Hold an exclusive advisory `flock` on `path` (created if missing) for the block.

    wait=False raises BlockingIOError at once when another process holds it; pid=True
    writes this process's id into the lock file (for people looking at a busy directory).
    The kernel releases the lock when the holder dies, so a crash never leaves it stuck.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BaseException:
        os.close(fd)
        raise
    try:
        if pid:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield fd
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# -- CSV ---------------------------------------------------------------------------------

def csv_bytes(header: Sequence[str], rows: Iterable) -> bytes:
    """CSV of `rows` (sequences, or dicts keyed by `header`) under `header`, "\\n" line ends."""
    out = io.StringIO()
    rows = list(rows)
    if rows and isinstance(rows[0], dict):
        by_name = csv.DictWriter(out, fieldnames=list(header), lineterminator="\n")
        by_name.writeheader()
        by_name.writerows(rows)
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return out.getvalue().encode()


def write_csv(path: os.PathLike, header: Sequence[str], rows: Iterable) -> None:
    """`csv_bytes(header, rows)` written to `path` through `write_atomic`."""
    write_atomic(path, csv_bytes(header, rows))


def read_csv(path: os.PathLike) -> list[dict]:
    """The rows of a CSV file with a header, as dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))

