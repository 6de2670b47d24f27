"""Kill tests: SIGKILL during `crc-jax next` and during label saving, rerun: nothing lost or doubled.

The processes kill themselves with SIGKILL at named points (crc_jax.runtime.faults): in a train
step, after training before the model/queue are saved, halfway through the rounds-log
line, and halfway through a labels-log append (from `import` and from the page's server).
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from crc_jax.project import Project, RoundSettings
from image_folder import write_digits

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--model", "mlp", "--width", "32", "--epochs", "2", "--steps-per-epoch", "3", "--no-flip"]


def cli(*args, fault=None, **kwargs):
    env = dict(os.environ)
    env.pop("CRC_JAX_FAULT", None)
    if fault:
        env["CRC_JAX_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "crc_jax.project.cli", *map(str, args)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture
def labeled_project(tmp_path):
    truth = write_digits(tmp_path / "images", 60, broken=False)
    project, _ = Project.create(tmp_path / "proj", tmp_path / "images", image_size=8,
                                classes=[str(d) for d in range(10)], progress=False)
    first = {i: str(truth[p]) for i, p in enumerate(project.paths[:20])}
    project.add_labels(first, queued_only=False)
    return project, truth


@pytest.mark.slow  # five CLI processes, each importing JAX and compiling: ~2.5 min here
def test_killed_next_reruns_to_the_same_queue(labeled_project, tmp_path):
    project, _ = labeled_project
    twin = tmp_path / "twin"
    shutil.copytree(project.dir, twin)
    labels_before = (project.dir / "labels.jsonl").read_bytes()

    for fault in ("train_step:3", "project_save:1", "journal_append:1"):
        r = cli("next", project.dir, "--budget", 10, *FAST, fault=fault)
        assert r.returncode == -signal.SIGKILL, (fault, r.stderr[-2000:])
        assert (project.dir / "labels.jsonl").read_bytes() == labels_before
        assert Project.open(project.dir).rounds() == []  # no round recorded (a torn line is dropped)
    assert (project.dir / "queue.csv").exists()  # written just before the rounds-log line

    r = cli("next", project.dir, "--budget", 10, *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli("next", twin, "--budget", 10, *FAST)  # never interrupted
    assert r.returncode == 0, r.stderr[-2000:]
    done, reference = Project.open(project.dir), Project.open(twin)
    assert len(done.rounds()) == 1 and done.rounds()[0]["step"] == 0
    assert done.queue() == reference.queue()
    assert done.rounds()[0]["queue"] == reference.rounds()[0]["queue"]
    assert (project.dir / "labels.jsonl").read_bytes() == labels_before


def test_killed_import_reruns_without_doubles(labeled_project, tmp_path):
    project, truth = labeled_project
    rows = [(p, str(truth[p])) for p in project.paths[20:35]]
    with open(tmp_path / "more.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "label"), *rows])
    r = cli("import", project.dir, tmp_path / "more.csv", fault="labels_append:1")
    assert r.returncode == -signal.SIGKILL
    expected = {i: str(truth[p]) for i, p in enumerate(project.paths[:35])}
    torn = (project.dir / "labels.jsonl").read_bytes()
    assert not torn.endswith(b"\n")  # killed halfway through the batch's write
    partial = Project.open(project.dir).labels()  # whole lines count, the torn tail does not
    assert 20 <= len(partial) < 35 and partial.items() <= expected.items()
    r = cli("import", project.dir, tmp_path / "more.csv")
    assert r.returncode == 0, r.stderr
    assert f"{35 - len(partial)} new answers" in r.stdout
    lines = (project.dir / "labels.jsonl").read_text().splitlines()
    assert len(lines) == 35 and all(json.loads(line) for line in lines)
    assert Project.open(project.dir).labels() == {i: str(truth[p]) for i, p in enumerate(project.paths[:35])}


def start_server(directory, fault=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("CRC_JAX_FAULT", None)
    if fault:
        env["CRC_JAX_FAULT"] = fault
    proc = subprocess.Popen([sys.executable, "-m", "crc_jax.project.cli", "label", str(directory),
                             "--port", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    assert match, line
    return proc, f"http://127.0.0.1:{match.group(1)}"


def answer(base, image, label):
    request = urllib.request.Request(
        f"{base}/api/answer", data=json.dumps({"id": image, "label": label}).encode(),
        headers={"Content-Type": "application/json", "Origin": base}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


def test_server_killed_while_saving_a_label(labeled_project):
    project, truth = labeled_project
    queue = project.next_batch(10, RoundSettings(model="mlp", width=32, epochs=1,
                                                 steps_per_epoch=3, flip=False))
    given = {i: str(truth[project.paths[i]]) for i in queue}
    proc, base = start_server(project.dir, fault="labels_append:3")
    try:
        assert answer(base, queue[0], given[queue[0]]) == 200
        assert answer(base, queue[1], given[queue[1]]) == 200
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            answer(base, queue[2], given[queue[2]])  # the server dies mid-write
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert set(Project.open(project.dir).pending()) == set(queue[2:])
    proc, base = start_server(project.dir)
    try:
        for image in queue[2:]:  # the page, reloaded, resends what was not saved
            assert answer(base, image, given[image]) == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    events = Project.open(project.dir).log.events()
    page_events = [(e["id"], e["label"]) for e in events if e["source"] == "page"]
    assert page_events == [(i, given[i]) for i in queue]  # each answer once, in order
    assert len((project.dir / "labels.jsonl").read_text().splitlines()) == 30
