"""The storage layer (crc_jax.durable): checksummed lines, whole appends, repairs, locks."""

import errno
import json
import os

import pytest

from crc_jax import durable
from crc_jax.durable import Journal, decode_line, encode_line
from crc_jax.errors import StorageError


def entries(n):
    return [{"step": i, "acquired": [i, i + 10], "labels": [1, 2]} for i in range(n)]


def test_roundtrip(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    for e in entries(3):
        j.append(e)
    assert j.read() == entries(3)


def test_checksum_detects_a_changed_value():
    line = encode_line({"step": 0, "acquired": [5]})
    assert decode_line(line) == {"step": 0, "acquired": [5]}
    with pytest.raises(ValueError, match="checksum"):
        decode_line(line.replace("[5]", "[6]"))


def test_torn_last_line_is_dropped_and_truncated(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    for e in entries(2):
        j.append(e)
    whole = path.read_bytes()
    torn = encode_line(entries(3)[2])[:17]
    path.write_bytes(whole + torn.encode())
    assert j.entries() == entries(2) and path.read_bytes() == whole + torn.encode()  # reading only
    assert j.read() == entries(2)
    assert "torn" in caplog.text
    assert path.read_bytes() == whole
    j.append(entries(3)[2])
    assert j.read() == entries(3)


def test_a_whole_last_line_without_its_newline_is_kept_and_completed(tmp_path):
    """A line whose checksum verifies is whole, newline or not (issue 23): the writer's
    read gives it its newline, and the next append lands on a line of its own."""
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    for e in entries(2):
        j.append(e)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    assert j.entries() == entries(2)
    assert j.read() == entries(2)
    assert path.read_bytes().endswith(b"\n")
    j.append(entries(3)[2])
    assert j.read() == entries(3)


def test_incremental_reads_see_a_newline_less_line_once(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(encode_line({"seq": 0}).encode() + encode_line({"seq": 1}).encode()[:-1])
    first = durable.read_lines(path)
    assert [e["seq"] for e in first.entries] == [0, 1] and first.needs_newline
    durable.repair(path, durable.read_lines(path))          # a writer completes the line
    durable.append_synced(path, encode_line({"seq": 2}).encode(), fault_point="none")
    rest = durable.read_lines(path, start=first.end)         # the reader carries on
    assert [e["seq"] for e in rest.entries] == [2]


def test_corrupt_middle_line_names_it_and_touches_nothing(tmp_path):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    for e in entries(3):
        j.append(e)
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["labels"] = [9, 9]  # checksum no longer matches
    lines[1] = json.dumps(record) + "\n"
    path.write_text("".join(lines))
    before = path.read_bytes()
    with pytest.raises(StorageError, match="line 2"):
        j.read()
    assert path.read_bytes() == before


def test_steps_must_be_consecutive(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    j.append({"step": 0})
    j.append({"step": 2})
    with pytest.raises(StorageError, match="expected 1"):
        j.read()


def test_short_writes_are_continued(tmp_path, monkeypatch):
    """os.write may write fewer bytes than asked; every byte must still land (issue 23)."""
    real_write = os.write
    calls = []

    def short_write(fd, data):
        calls.append(len(data))
        return real_write(fd, bytes(data[:3]))

    monkeypatch.setattr(durable.os, "write", short_write)
    path = tmp_path / "log.jsonl"
    line = encode_line({"seq": 0, "label": "a long enough answer"}).encode()
    durable.append_synced(path, line, fault_point="none")
    assert path.read_bytes() == line and len(calls) > 1


def test_a_failed_append_leaves_the_file_as_it_was_and_raises(tmp_path, monkeypatch):
    """A full disk mid-append: an error, and no part of the new data left in the file."""
    path = tmp_path / "log.jsonl"
    durable.append_synced(path, encode_line({"seq": 0}).encode(), fault_point="none")
    before = path.read_bytes()
    real_write = os.write
    state = {"n": 0}

    def full_disk(fd, data):
        state["n"] += 1
        if state["n"] == 1:
            return real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(durable.os, "write", full_disk)
    with pytest.raises(OSError, match="No space"):
        durable.append_synced(path, encode_line({"seq": 1}).encode() * 3, fault_point="none")
    assert path.read_bytes() == before


def test_write_atomic_replaces_whole_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "queue.csv"
    durable.write_atomic(path, b"old\n")
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(durable.os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        durable.write_atomic(path, b"new\n")
    monkeypatch.setattr(durable.os, "fsync", real_fsync)
    assert path.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.csv"]


def test_file_lock_excludes_a_second_holder(tmp_path):
    lock = tmp_path / ".lock"
    with durable.file_lock(lock, wait=False, pid=True):
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(BlockingIOError):
            with durable.file_lock(lock, wait=False):
                pass
    with durable.file_lock(lock, wait=False):
        pass


def test_csv_rows_as_lists_or_dicts(tmp_path):
    durable.write_csv(tmp_path / "a.csv", ["x", "y"], [[1, "a,b"], [2, "c"]])
    durable.write_csv(tmp_path / "b.csv", ["x", "y"], [{"x": 1, "y": "a,b"}, {"x": 2, "y": "c"}])
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert durable.read_csv(tmp_path / "a.csv") == [{"x": "1", "y": "a,b"}, {"x": "2", "y": "c"}]


def test_an_atomic_write_leaves_a_users_file_of_any_temporary_looking_name_alone(tmp_path):
    """The temporary file is created exclusively under a new name: a user's `NAME.tmp` (the
    name the temporary once had) beside the target is neither overwritten nor removed."""
    target = tmp_path / "report.md"
    users = {tmp_path / "report.md.tmp": b"the user's notes\n",
             tmp_path / ".report.md.tmp": b"more notes\n"}
    for path, data in users.items():
        path.write_bytes(data)
    durable.write_atomic(target, b"# report\n")
    durable.write_atomic(target, b"# report, again\n")
    assert target.read_bytes() == b"# report, again\n"
    assert {p: p.read_bytes() for p in users} == users
    assert sorted(p.name for p in tmp_path.iterdir()) == [".report.md.tmp", "report.md",
                                                          "report.md.tmp"]


# ------------------------------------------- Ctrl-C at any instant of an append keeps it

# Three appends to a run journal or a labels log, in a fresh process with Python's own
# SIGINT handling; Ctrl-C lands during the second one. `how`: "fsync" sends SIGINT from
# inside the kernel's fsync of that append (the instant a line is written but not yet
# synced); "STAGE:ACTION" sets CRC_JAX_FAULT=FAULT.STAGE:2:ACTION (crc_jax.runtime.faults).
APPEND_THREE = """
import json, os, signal, sys
from crc_jax import durable

signal.signal(signal.SIGINT, signal.default_int_handler)   # even if started with it ignored
kind, path, how = sys.argv[1:4]
if how == "fsync":
    real_fsync, calls = os.fsync, []

    def fsync_then_ctrl_c(fd):
        real_fsync(fd)
        calls.append(fd)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    os.fsync = fsync_then_ctrl_c
if kind == "journal":
    journal = durable.Journal(path)
    write = lambda i: journal.append({"step": i, "acquired": [i]})
else:
    from crc_jax.project.labels_log import LabelsLog
    log = LabelsLog(path)
    write = lambda i: log.record([{"op": "label", "id": i, "label": "cat", "source": "page"}])
done = []
try:
    for i in range(3):
        write(i)
        done.append(i)
    print("RESULT " + json.dumps({"done": done, "interrupted": False}))
except KeyboardInterrupt:
    print("RESULT " + json.dumps({"done": done, "interrupted": True}))
"""
FAULT = {"journal": "journal_append", "labels": "labels_append"}


def append_three(tmp_path, kind: str, how: str) -> tuple[dict, list]:
    """(what the process said, the entries a rerun reads) after three appends."""
    import subprocess
    import sys

    path = tmp_path / f"{kind}.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "CRC_JAX_FAULT"}
    if how != "fsync":
        stage, action = how.split(":")
        env["CRC_JAX_FAULT"] = f"{FAULT[kind]}.{stage}:2:{action}"
    proc = subprocess.run([sys.executable, "-c", APPEND_THREE, kind, str(path), how],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    said = json.loads(proc.stdout.split("RESULT ", 1)[1])
    if kind == "journal":
        kept = [e["step"] for e in Journal(path).read()]
    else:
        from crc_jax.project.labels_log import LabelsLog
        kept = sorted(LabelsLog(path).labels())
    return said, kept


@pytest.mark.parametrize("kind", ["journal", "labels"])
@pytest.mark.parametrize("how", ["fsync", "start:sigint", "written:sigint", "synced:sigint"])
def test_ctrl_c_during_an_append_keeps_that_line_whole(tmp_path, kind, how):
    """Whenever Ctrl-C lands inside an append (before its first byte, after its last byte
    before the fsync, during the fsync, after it), the append ends whole and stays: the
    interrupt is raised when it returns, and a rerun reads every line written."""
    said, kept = append_three(tmp_path, kind, how)
    assert said == {"done": [0], "interrupted": True}, (how, said)
    assert kept == [0, 1], (how, kept)          # the second append is whole and kept


@pytest.mark.parametrize("kind", ["journal", "labels"])
def test_a_crash_halfway_through_an_append_loses_only_that_line(tmp_path, kind):
    import subprocess
    import sys

    path = tmp_path / f"{kind}.jsonl"
    env = dict(os.environ, CRC_JAX_FAULT=f"{FAULT[kind]}:2")
    proc = subprocess.run([sys.executable, "-c", APPEND_THREE, kind, str(path), "-"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]           # SIGKILL mid-write
    assert path.read_bytes().count(b"\n") == 1                   # line 2 torn
    if kind == "journal":
        assert [e["step"] for e in Journal(path).read()] == [0]
    else:
        from crc_jax.project.labels_log import LabelsLog
        assert sorted(LabelsLog(path).labels()) == [0]


def test_a_held_back_ctrl_c_reaches_the_installed_handler_after_the_block():
    import signal

    from crc_jax.runtime import interrupt

    seen = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    try:
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):   # the handler would run here without the deferral
                pass
            assert seen == []
        assert seen == [signal.SIGINT]
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGINT)
        assert seen == [signal.SIGINT]                       # ignored stays ignored
        with pytest.raises(KeyboardInterrupt):
            signal.signal(signal.SIGINT, signal.default_int_handler)
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
