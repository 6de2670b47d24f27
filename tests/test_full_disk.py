"""A full disk, for real: a project alone on a tiny tmpfs filled to the last byte.

`crc-jax import` and the labeling page append to the labels log through
crc_jax.durable.append_synced. On a full disk the kernel takes the first part of a write
(the free bytes of the log's last page) and refuses the rest: the command must say so in
one line and exit 2, the page must answer with an error, and the log must hold exactly
what was reported saved, never a torn line. Needs the right to mount (root); skipped with
the reason elsewhere. tests/test_durable.py injects short writes without a mount.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mounts
from crc_jax import durable
from crc_jax.project import Project
from image_folder import write_digits

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [str(d) for d in range(10)]


def labels_csv(path: Path, rows) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def cli(*args):
    return subprocess.run([sys.executable, "-m", "crc_jax.project.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def full_disk_project(tmp_path):
    """(project dir, truth, by_path) on a 256 KiB tmpfs holding 12 labels, then filled."""
    reason = mounts.unavailable()
    if reason:
        pytest.skip(reason)
    truth = write_digits(tmp_path / "images", 40, broken=False)
    by_path = sorted(truth)
    disk = mounts.tmpfs(tmp_path / "disk", 256)
    try:
        project, _ = Project.create(disk / "project", tmp_path / "images", image_size=8,
                                    classes=CLASSES, progress=False)
        project.import_file(labels_csv(tmp_path / "first.csv",
                                       [(p, truth[p]) for p in by_path[:12]]))
        mounts.fill(disk)
        yield disk / "project", truth, by_path
    finally:
        mounts.unmount(disk)


def reported(stdout: str) -> tuple[int, int, int]:
    found = re.search(r"^(\d+) new answers imported from \d+ labeled rows \(\d+ already saved, 0 "
                      r"unmapped; (\d+) -> (\d+) labeled\)$", stdout, re.M)
    assert found, stdout
    return tuple(map(int, found.groups()))


def test_import_on_a_full_disk_reports_exactly_what_the_log_holds(full_disk_project, tmp_path):
    project_dir, truth, by_path = full_disk_project
    log = project_dir / "labels.jsonl"
    before = log.read_bytes()
    room = 4096 - len(before) % 4096   # free bytes in the log's last page: all that is left

    # 28 labels whose lines (each names this long file) need more than that room: the
    # kernel writes the first `room` bytes, then refuses the rest
    big = labels_csv(tmp_path / f"labels_{'x' * 140}.csv", [(p, truth[p]) for p in by_path[12:]])
    line = durable.encode_line({"seq": 12, "time": 1.0, "op": "label", "id": 12, "label": "3",
                                "source": f"import:{big.name}"})
    assert 28 * len(line) > room + 200, (len(line), room)
    failed = cli("import", project_dir, big)
    assert failed.returncode == 2, failed
    errors = [ln for ln in failed.stderr.splitlines() if ln.strip()]
    assert len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert re.fullmatch(r"error: .*labels\.jsonl: No space left on device", errors[0]), errors
    assert log.read_bytes() == before   # the short first part was cut back: nothing new

    # two labels fit in the room: reported, and exactly those are in the log
    small = labels_csv(tmp_path / "two.csv", [(p, truth[p]) for p in by_path[12:14]])
    assert 2 * len(line) < room
    done = cli("import", project_dir, small)
    assert done.returncode == 0, done
    added, old, new = reported(done.stdout)
    assert (added, old, new) == (2, 12, 14)
    lines = durable.read_lines(log)
    assert not lines.torn and len(lines.entries) == 14
    assert log.read_bytes().startswith(before)
    project = Project.open(project_dir)
    assert project.labels() == {project.paths.index(p): str(truth[p]) for p in by_path[:14]}


def test_the_page_reports_an_answer_it_could_not_save(full_disk_project):
    from crc_jax.project.server import create_app

    project_dir, truth, by_path = full_disk_project
    project = Project.open(project_dir)
    log = project_dir / "labels.jsonl"
    unlabeled = [i for i in range(len(project)) if i not in project.labels()]
    saved = []   # answers until the disk is full; the one that did not fit is cut back
    for i in unlabeled:
        try:
            project.add_labels({i: "3"}, queued_only=False)
        except OSError:
            break
        saved.append(i)
    assert 0 < len(saved) < len(unlabeled)
    assert len(durable.read_lines(log).entries) == 12 + len(saved)
    before = log.read_bytes()
    project.queue_ids = lambda: unlabeled   # the page takes answers for queued images
    client = create_app(project).test_client()
    reply = client.post("/api/answer", json={"id": unlabeled[-1], "label": "3"})
    assert reply.status_code == 507, reply.data
    assert re.fullmatch(r"not saved: .*labels\.jsonl: No space left on device",
                        reply.get_json()["error"]), reply.get_json()
    assert log.read_bytes() == before
    assert unlabeled[-1] not in Project.open(project_dir).labels()
