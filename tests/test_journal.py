"""The journal: whole lines with checksums, torn tails dropped, corruption refused."""

import json

import pytest

from crc_jax.errors import RunDirError
from crc_jax.run.journal import Journal, decode, encode


def entries(n):
    return [{"step": i, "acquired": [i, i + 10], "labels": [1, 2]} for i in range(n)]


def test_roundtrip(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    for e in entries(3):
        j.append(e)
    assert j.read() == entries(3)


def test_checksum_detects_a_changed_value():
    line = encode({"step": 0, "acquired": [5]})
    assert decode(line) == {"step": 0, "acquired": [5]}
    with pytest.raises(ValueError, match="checksum"):
        decode(line.replace("[5]", "[6]"))


def test_torn_last_line_is_dropped_and_truncated(tmp_path, caplog):
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    for e in entries(2):
        j.append(e)
    whole = path.read_bytes()
    torn = encode(entries(3)[2])[:17]
    path.write_bytes(whole + torn.encode())
    assert j.read() == entries(2)
    assert "torn" in caplog.text
    assert path.read_bytes() == whole
    j.append(entries(3)[2])
    assert j.read() == entries(3)


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
    with pytest.raises(RunDirError, match="line 2"):
        j.read()
    assert path.read_bytes() == before


def test_steps_must_be_consecutive(tmp_path):
    j = Journal(tmp_path / "journal.jsonl")
    j.append({"step": 0})
    j.append({"step": 2})
    with pytest.raises(RunDirError, match="expected 1"):
        j.read()
