"""crc-jax against a real Label Studio server (slow: `make test-label-studio`).

Label Studio 1.23.2 runs on 127.0.0.1 (tests/label_studio_server.py), started with the
environment docs/labeling.md gives. The project's images live under Label Studio's
document root, beside another folder holding a file with the same relative path.

- Round trip: `crc-jax export --format label-studio` → a Label Studio project made with the
  written config → every image URL answers 200 with the file's bytes, every annotation and
  prediction equals crc-jax's → annotate through Label Studio's API → Label Studio's JSON,
  JSON-MIN, CSV and TSV exports → `crc-jax import` of each gives the same labels.
- A user's labeling config (other control names) read by export and import; without the
  config, import finds the answer column of its JSON-MIN export.
- The ML backend (`crc-jax serve-ml`, given a personal access token) connected through
  Label Studio's API: an annotation
  reaches the labels log once (updated and retried: still once), one contradicting another
  source is the latest answer until it is deleted, Start Training runs a round whose queue
  sorts first by crc_rank, and retrieved predictions carry the new model's class and
  confidence.
- In step (a fresh project and serve-ml): cat -> dog -> cat ends cat; one of two equal
  annotations deleted keeps the label; an upload named like a project image but another
  picture is not applied (its task says why, `crc-jax status` counts it) while an upload of
  a project image's bytes under another name is; serve-ml killed, an annotation made and
  another deleted in Label Studio, serve-ml restarted: both arrive.

CRC_JAX_RECORD_LABEL_STUDIO=1 writes the exports to tests/fixtures/label_studio/ for the
fast suite (tests/test_label_studio_formats.py).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import requests
from PIL import Image

import label_studio_server
from crc_jax.project import cli
from crc_jax.project import Project
from crc_jax.project.exchange import PathIndex
from crc_jax.project.settings import RoundSettings
from image_folder import write_digits

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "label_studio"
RECORD = os.environ.get("CRC_JAX_RECORD_LABEL_STUDIO") == "1"
CLASSES = ["even", "odd"]
FAST = RoundSettings(model="mlp", width=32, epochs=1, steps_per_epoch=3, flip=False)
FAST_ARGS = ["--model", "mlp", "--width", "32", "--epochs", "1", "--steps-per-epoch", "3",
             "--no-flip"]
WRONG_FOLDER = "other/batch_0/digit_0000.png"  # same relative path as a project image
USER_CONFIG = """<View>
  <Header value="Even or odd?"/>
  <Image name="img" value="$image" zoom="true"/>
  <Choices name="label" toName="img" choice="single-radio">
    <Choice value="even"/>
    <Choice value="odd"/>
  </Choices>
</View>
"""
EXPORTS = {"JSON": "export.json", "JSON_MIN": "export_min.json", "CSV": "export.csv",
           "TSV": "export.tsv"}


@pytest.fixture(scope="module")
def ls(tmp_path_factory):
    if not label_studio_server.installed():
        pytest.skip("Label Studio is not installed: .ci/install_label_studio "
                    "(make test-label-studio installs it)")
    root = tmp_path_factory.mktemp("document_root")
    with label_studio_server.running(root, tmp_path_factory.mktemp("ls_data")) as server:
        yield server


@pytest.fixture(scope="module")
def token(ls):
    """A personal access token, as docs/labeling.md says (Label Studio gives a user one)."""
    return ls.call("POST", "/api/token/")["token"]


def write_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def world(ls, tmp_path_factory):
    """A project with labels, a trained round, a queue with an answer and a skip."""
    root = ls.document_root
    truth = write_digits(root / "images", 24, seed=0, broken=True)
    parity = {p: CLASSES[d % 2] for p, d in truth.items()}
    write_png(root / WRONG_FOLDER, 99)
    project, _ = Project.create(tmp_path_factory.mktemp("crc") / "proj", root / "images",
                                image_size=8, classes=CLASSES, progress=False)
    even = [i for i, p in enumerate(project.paths) if parity[p] == "even"][:4]
    odd = [i for i, p in enumerate(project.paths) if parity[p] == "odd"][:4]
    project.add_labels({i: parity[project.paths[i]] for i in even + odd}, queued_only=False)
    project.next_batch(6, FAST)
    first, second = project.pending()[:2]
    project.add_labels({first: parity[project.paths[first]]})
    project.skip(second)
    return SimpleNamespace(root=root, parity=parity, project=project,
                           index=PathIndex(project.paths, CLASSES, project.images_root, root))


def export_tasks(world, out: Path, *extra) -> list:
    assert cli.main(["export", str(world.project.dir), "--format", "label-studio", "--out",
                     str(out), "--document-root", str(world.root), *map(str, extra)]) == 0
    return json.loads(out.read_text())


def make_project(ls, config: str, tasks: list) -> int:
    """A Label Studio project with `config`, Local Files storages (not synced), `tasks`."""
    pid = ls.call("POST", "/api/projects", json={"title": "crc-jax", "label_config": config})["id"]
    for folder in ("images", "other"):
        ls.call("POST", "/api/storages/localfiles", json={
            "project": pid, "title": folder, "path": str(ls.document_root / folder),
            "use_blob_urls": True})
    ls.call("POST", f"/api/projects/{pid}/import", json=tasks)
    return pid


def choice(names_choice: str, names_image: str, label: str) -> list:
    return [{"from_name": names_choice, "to_name": names_image, "type": "choices",
             "value": {"choices": [label]}}]


def annotate(ls, task_id: int, result: list) -> dict:
    return ls.call("POST", f"/api/tasks/{task_id}/annotations", json={"result": result})


def image_of(world, task: dict, key: str = "image"):
    return world.index.locate(task["data"].get(key, ""))[0]


def labels_by_path(project) -> dict:
    return {project.paths[i]: c for i, c in Project.open(project.dir).labels().items()}


def add_strays(ls, world, pid: int, tmp_path: Path, result) -> dict:
    """A task from another folder (same relative path as a project image) and an uploaded
    image, both annotated in Label Studio; returns their task ids."""
    ls.call("POST", f"/api/projects/{pid}/import",
            json=[{"data": {"image": f"/data/local-files/?d={WRONG_FOLDER}"}}])
    stray = write_png(tmp_path / "stray_upload.png", 7)
    with open(stray, "rb") as f:
        ls.call("POST", f"/api/projects/{pid}/import", files={"file": ("stray.png", f, "image/png")})
    tasks = {t["data"]["image"]: t for t in ls.tasks(pid)}
    wrong = tasks[f"/data/local-files/?d={WRONG_FOLDER}"]
    upload = next(t for url, t in tasks.items() if url.startswith("/data/upload/"))
    assert ls.get(wrong["data"]["image"]).status_code == 200  # Label Studio shows it
    lookalike = world.parity["batch_0/digit_0000.png"]
    annotate(ls, wrong["id"], result(CLASSES[1 - CLASSES.index(lookalike)]))  # the other class
    annotate(ls, upload["id"], result("even"))
    return {"wrong": wrong["data"]["image"], "upload": upload["data"]["image"]}


def import_each_export(ls, world, pid: int, tmp_path: Path, config: Path, expected: dict,
                       strays: dict, formats=EXPORTS, record_as=None):
    """Label Studio's exports, each imported into a new project: the same labels."""
    for export_type, name in formats.items():
        path = tmp_path / name
        path.write_bytes(ls.export(pid, export_type))
        fresh, _ = Project.create(tmp_path / f"fresh_{export_type}", world.root / "images",
                                  image_size=8, progress=False)
        args = ["import", str(fresh.dir), str(path), "--document-root", str(world.root),
                "--label-config", str(config)]
        assert cli.main(args) == 2  # the stray rows are unmapped: nothing without the option
        assert labels_by_path(fresh) == {}
        proc = subprocess.run([sys.executable, "-m", "crc_jax.project.cli", *args, "--skip-unmapped"],
                              capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert proc.returncode == 0, (export_type, proc.stderr)
        for url in strays.values():
            assert f"not imported: {url}" in proc.stdout, (export_type, proc.stdout)
        assert labels_by_path(fresh) == expected, export_type
        if record_as:
            (FIXTURES / record_as).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, FIXTURES / record_as / name)
    if record_as:
        shutil.copy(config, FIXTURES / record_as / "labeling_config.xml")
        with open(FIXTURES / record_as / "expected_labels.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["path", "label"])
            writer.writerows(sorted(expected.items()))
        (FIXTURES / record_as / "unmapped.txt").write_text(
            "".join(f"{kind} {url}\n" for kind, url in sorted(strays.items())))


def test_round_trip_through_label_studio(ls, world, tmp_path):
    project = world.project
    tasks_file = tmp_path / "tasks.json"
    export_tasks(world, tasks_file)
    config = tmp_path / "tasks.label_config.xml"
    pid = make_project(ls, config.read_text(), json.loads(tasks_file.read_text()))

    labels, predicted = project.labels(), {r["id"]: r for r in project.predict()}
    seen = set()
    for task in ls.tasks(pid):
        image = image_of(world, task)
        seen.add(image)
        response = ls.get(task["data"]["image"])
        assert response.status_code == 200, task["data"]["image"]
        assert response.content == (project.images_root / project.paths[image]).read_bytes()
        annotations = task["annotations"]
        if image in labels:
            assert [a["result"] for a in annotations] == [choice("choice", "image", labels[image])]
            assert annotations[0]["ground_truth"] is False
        else:
            assert annotations == []
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "crc-jax-round-0"
        assert prediction["score"] == pytest.approx(float(predicted[image]["confidence"]))
        assert prediction["result"] == choice("choice", "image", predicted[image]["predicted"])
    assert seen == set(range(len(project)))
    ordered = ls.tasks(pid, ordering=["tasks:data.crc_rank"])
    pending = project.pending()
    assert [image_of(world, t) for t in ordered[:len(pending)]] == pending

    # Annotate in Label Studio: a queued image, plus two rows that are not project images.
    tasks = {image_of(world, t): t for t in ls.tasks(pid)}
    queued = pending[0]
    annotate(ls, tasks[queued]["id"], choice("choice", "image", world.parity[project.paths[queued]]))
    strays = add_strays(ls, world, pid, tmp_path, lambda c: choice("choice", "image", c))
    expected = {**labels_by_path(project), project.paths[queued]: world.parity[project.paths[queued]]}
    import_each_export(ls, world, pid, tmp_path, config, expected, strays,
                       record_as="crc_config" if RECORD else None)


def test_a_user_labeling_config_names_the_answer(ls, world, tmp_path):
    """Export reads the names of a given config; its JSON-MIN export keys the answer by the
    control's name ('label'), which import takes from the same config."""
    config = tmp_path / "user_config.xml"
    config.write_text(USER_CONFIG)
    tasks = export_tasks(world, tmp_path / "tasks.json", "--label-config", config)
    assert not (tmp_path / "tasks.label_config.xml").exists()
    pid = make_project(ls, USER_CONFIG, tasks)
    labels = world.project.labels()
    for task in ls.tasks(pid):
        image = image_of(world, task)
        expected = [choice("label", "img", labels[image])] if image in labels else []
        assert [a["result"] for a in task["annotations"]] == expected
    strays = add_strays(ls, world, pid, tmp_path, lambda c: choice("label", "img", c))
    min_export = tmp_path / "min.json"
    min_export.write_bytes(ls.export(pid, "JSON_MIN"))
    assert '"label": ' in min_export.read_text()
    fresh, _ = Project.create(tmp_path / "fresh", world.root / "images", image_size=8,
                              progress=False)
    # Without the config: the answer column is the one column that is neither Label
    # Studio's metadata, the image column nor a crc_* field ('label').
    assert cli.main(["import", str(fresh.dir), str(min_export), "--document-root",
                     str(world.root), "--skip-unmapped"]) == 0
    assert labels_by_path(fresh) == labels_by_path(world.project)
    import_each_export(ls, world, pid, tmp_path, config, labels_by_path(world.project), strays,
                       formats={"JSON_MIN": "export_min.json", "CSV": "export.csv"},
                       record_as="user_config" if RECORD else None)


def start_backend(ls, project, root: Path, port: int, token: str, log: Path):
    """`crc-jax serve-ml` for `project` on `port`, once it answers /health."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "crc_jax.project.cli", "serve-ml", str(project.dir), "--port", str(port),
             "--document-root", str(root), "--budget", "4", *FAST_ARGS,
             "--label-studio-url", ls.url],
            stdout=out, stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(ROOT), LABEL_STUDIO_API_KEY=token))
    assert wait_for(f"http://127.0.0.1:{port}/health", process, log).json()["status"] == "UP"
    return process


def wait_for(url: str, process, log: Path, timeout: float = 300):
    deadline = time.time() + timeout
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            assert time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)


def log_events(project, source_prefix="label-studio:") -> list:
    return [e for e in Project.open(project.dir).log.events()
            if str(e.get("source", "")).startswith(source_prefix)]


def test_ml_backend_connected_through_label_studio(ls, world, tmp_path, token):
    project = world.project
    tasks = export_tasks(world, tmp_path / "tasks.json")
    pid = make_project(ls, (tmp_path / "tasks.label_config.xml").read_text(), tasks)
    port = label_studio_server.free_port()
    backend = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve_ml.log"
    process = start_backend(ls, project, world.root, port, token, log)
    try:
        ml = ls.call("POST", "/api/ml", json={"url": backend, "project": pid, "title": "crc-jax"})
        assert any(h["url"] == backend + "/webhook"
                   for h in ls.call("GET", f"/api/webhooks?project={pid}"))
        # Connected, the backend catches up: the annotations `export` wrote into the tasks
        # (crc-jax's own labels) become sources of their own, the answers unchanged.
        labels_before = Project.open(project.dir).labels()
        wait_caught_up(backend, pid, process, log)
        assert len(Project.open(project.dir).log.live_sources(f"label-studio:{pid}:")) == \
            len(labels_before)
        assert Project.open(project.dir).labels() == labels_before

        # An annotation made in Label Studio reaches the labels log once.
        tasks = {image_of(world, t): t for t in ls.tasks(pid)}
        target = project.pending()[0]
        label = world.parity[project.paths[target]]
        result = choice("choice", "image", label)
        before = log_events(project)
        annotation = annotate(ls, tasks[target]["id"], result)
        new = log_events(project)[len(before):]
        assert [(e["op"], e["id"], e["label"]) for e in new] == [("label", target, label)], new
        ls.call("PATCH", f"/api/annotations/{annotation['id']}", json={"result": result})
        payload = {"action": "ANNOTATION_CREATED",  # Label Studio's webhook, sent again
                   "annotation": ls.call("GET", f"/api/annotations/{annotation['id']}"),
                   "task": ls.call("GET", f"/api/tasks/{tasks[target]['id']}"),
                   "project": ls.call("GET", f"/api/projects/{pid}")}
        for _ in range(2):
            response = requests.post(backend + "/webhook", json=payload, timeout=30)
            assert response.status_code == 201, response.text
            assert response.json()["results"][0]["status"] == "already saved"
        assert len(log_events(project)) == len(before) + 1

        # Deleting the annotation in Label Studio withdraws its answer; annotating again redoes it.
        ls.call("DELETE", f"/api/annotations/{annotation['id']}")
        assert target not in Project.open(project.dir).labels()
        annotate(ls, tasks[target]["id"], result)
        assert Project.open(project.dir).labels()[target] == label
        events = log_events(project)
        assert [(e["op"], e["id"]) for e in events[-3:]] == \
            [("label", target), ("retract", target), ("label", target)]

        # An annotation contradicting an answer given elsewhere is the latest answer (its
        # annotator sees it in Label Studio); deleted, the earlier answer is back.
        labeled = next(i for i in project.labels() if i != target)
        given = project.labels()[labeled]
        other = CLASSES[1 - CLASSES.index(given)]
        contrary = annotate(ls, tasks[labeled]["id"], choice("choice", "image", other))
        assert Project.open(project.dir).labels()[labeled] == other
        ls.call("DELETE", f"/api/annotations/{contrary['id']}")
        assert Project.open(project.dir).labels()[labeled] == given

        # Start Training in Label Studio runs a round; its queue sorts first by crc_rank.
        rounds = len(project.rounds())
        ls.call("POST", f"/api/ml/{ml['id']}/train", json={})
        deadline = time.time() + 900
        while True:
            state = requests.get(backend + "/crc/round", timeout=30).json()
            if not state["running"] and state["phase"] in ("done", "failed"):
                break
            assert time.time() < deadline, state
            time.sleep(2)
        assert state["phase"] == "done", (state, log.read_text()[-3000:])
        assert len(Project.open(project.dir).rounds()) == rounds + 1
        pending = Project.open(project.dir).pending()
        ordered = ls.tasks(pid, ordering=["tasks:data.crc_rank"])
        assert [image_of(world, t) for t in ordered[:len(pending)]] == pending
        assert all(t["data"]["crc_rank"] is None for t in ordered[len(pending):])

        # Retrieved predictions: the new model's class and confidence on every task.
        ls.call("POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={pid}",
                json={"selectedItems": {"all": True, "excluded": []}})
        predicted = {r["id"]: r for r in Project.open(project.dir).predict()}
        version = f"crc-jax-round-{rounds}"
        for task in ls.tasks(pid):
            image = image_of(world, task)
            (latest,) = [p for p in task["predictions"] if p["model_version"] == version]
            assert latest["result"] == choice("choice", "image", predicted[image]["predicted"])
            assert latest["score"] == pytest.approx(float(predicted[image]["confidence"]))
    finally:
        process.terminate()  # the backend this test started
        process.wait(timeout=60)


def wait_caught_up(backend: str, pid: int, process, log: Path, timeout: float = 300) -> dict:
    """The backend's report of its catch-up with Label Studio project `pid`, once there is
    one (it catches up in the background: on start, and on the project's first /setup)."""
    deadline = time.time() + timeout
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        report = requests.get(backend + "/crc/sync", timeout=30).json()["projects"].get(str(pid))
        if report:
            assert not report.get("error"), (report, log.read_text()[-3000:])
            return report
        assert time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def until(condition, what: str, timeout: float = 120):
    """Wait for `condition()`: Label Studio sends a webhook with a 1 s timeout, so on a busy
    machine its POST may return before serve-ml has written the answer."""
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what
        time.sleep(0.1)


def upload(ls, pid: int, name: str, data: bytes) -> dict:
    """A file uploaded into Label Studio as a task of its own (not a local file)."""
    ls.call("POST", f"/api/projects/{pid}/import", files={"file": (name, data, "image/png")})
    return next(t for t in ls.tasks(pid) if t["data"]["image"].startswith("/data/upload/")
                and t["data"]["image"].endswith("-" + name))


def test_ml_backend_in_step_with_label_studio(ls, world, tmp_path, capsys, token):
    project, _ = Project.create(tmp_path / "proj", world.root / "images", image_size=8,
                                classes=CLASSES, progress=False)
    index = PathIndex(project.paths, CLASSES, project.images_root, world.root)
    assert cli.main(["export", str(project.dir), "--format", "label-studio", "--out",
                     str(tmp_path / "tasks.json"), "--document-root", str(world.root)]) == 0
    pid = make_project(ls, (tmp_path / "tasks.label_config.xml").read_text(),
                       json.loads((tmp_path / "tasks.json").read_text()))
    port = label_studio_server.free_port()
    backend, log = f"http://127.0.0.1:{port}", tmp_path / "serve_ml.log"
    process = start_backend(ls, project, world.root, port, token, log)
    try:
        ls.call("POST", "/api/ml", json={"url": backend, "project": pid, "title": "crc-jax"})
        wait_caught_up(backend, pid, process, log)
        tasks = {index.locate(t["data"]["image"])[0]: t for t in ls.tasks(pid)}

        def labels():
            return Project.open(project.dir).labels()

        # cat -> dog -> cat (created, updated, updated): the last answer stands.
        first = 0
        made = annotate(ls, tasks[first]["id"], choice("choice", "image", "even"))
        for label in ("odd", "even"):
            ls.call("PATCH", f"/api/annotations/{made['id']}",
                    json={"result": choice("choice", "image", label)})
        until(lambda: len([e for e in log_events(project) if e["id"] == first]) == 3,
              "three answers of one annotation")
        assert [e["label"] for e in log_events(project) if e["id"] == first] == \
            ["even", "odd", "even"]
        assert labels()[first] == "even"

        # Two annotations saying odd on one image: deleting one keeps the label.
        second = 1
        a, b = (annotate(ls, tasks[second]["id"], choice("choice", "image", "odd"))
                for _ in range(2))
        until(lambda: len([e for e in log_events(project) if e["id"] == second]) == 2,
              "both annotations")
        ls.call("DELETE", f"/api/annotations/{a['id']}")
        until(lambda: [e["op"] for e in log_events(project) if e["id"] == second][-1] == "retract",
              "the first one withdrawn")
        assert labels()[second] == "odd"
        ls.call("DELETE", f"/api/annotations/{b['id']}")
        until(lambda: second not in labels(), "the second one withdrawn")

        # An upload named like a project image, another picture: not applied; its task
        # says why; status counts it. A project image's bytes under another name: applied.
        named = 2
        name = Path(project.paths[named]).name
        assert sum(Path(p).name == name for p in project.paths) == 1
        lookalike = upload(ls, pid, name, write_png(tmp_path / "lookalike.png", 5).read_bytes())
        annotate(ls, lookalike["id"], choice("choice", "image", "even"))

        def note():
            return ls.call("GET", f"/api/tasks/{lookalike['id']}")["data"].get("crc_note")

        until(lambda: note() is not None, "the reason written on the task")
        data = ls.call("GET", f"/api/tasks/{lookalike['id']}")["data"]
        assert data["crc_status"] == "ignored", data
        assert f"{project.paths[named]!r} has its name but is another picture" in data["crc_note"]
        assert named not in labels()
        assert cli.main(["status", str(project.dir)]) == 0
        assert "Label Studio: 1 annotations ignored" in capsys.readouterr().out
        copied = 3
        same = upload(ls, pid, "renamed.png",
                      (project.images_root / project.paths[copied]).read_bytes())
        annotate(ls, same["id"], choice("choice", "image", "odd"))
        until(lambda: labels().get(copied) == "odd", "the upload of a project image's bytes")

        # serve-ml killed; in Label Studio an annotation made, another deleted; restarted:
        # both arrive (the webhooks sent meanwhile went nowhere).
        gone, made_down = 4, 5
        doomed = annotate(ls, tasks[gone]["id"], choice("choice", "image", "even"))
        until(lambda: labels().get(gone) == "even", "an annotation before the kill")
        process.kill()
        process.wait(timeout=60)
        annotate(ls, tasks[made_down]["id"], choice("choice", "image", "odd"))
        ls.call("DELETE", f"/api/annotations/{doomed['id']}")
        assert made_down not in labels() and labels()[gone] == "even"
        process = start_backend(ls, project, world.root, port, token, log)
        report = wait_caught_up(backend, pid, process, log)
        assert labels()[made_down] == "odd" and gone not in labels(), report
        assert report["saved"] >= 1 and report["withdrawn"] == 1, report
    finally:
        process.terminate()  # the backend this test started
        process.wait(timeout=60)
