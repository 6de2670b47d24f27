"""Every front on every project kind, end to end at tiny sizes: the journey matrix.

Kinds: images (pixels at 8×8), features from an .npz file, features from a .csv file, an
ONNX backbone (tests/onnx_models.py). Fronts, on each kind:

    next       `crc-jax next` with only a budget and training length: the kind's defaults
               (model, SSL algorithm, strategy, cold start), a cold start then a trained round
               that retypes nothing (the options are kept)
    page       the labeling page's real server on 127.0.0.1 over HTTP: state, every queued
               image's file, an answer for each
    import     each Label Studio export format (JSON, JSON-MIN, CSV, TSV) recorded from a
               real Label Studio (tests/fixtures/label_studio/crc_config)
    serve-ml   `crc-jax serve-ml` started on 127.0.0.1: /health, /setup, /predict for every
               image (the prediction of `crc-jax predict`, on the right task) and an
               annotation through /webhook arriving on the right image
    predict / status / export

The folder is the one the Label Studio exports were recorded on (write_digits(ROOT /
"images", 24, seed=0), without the broken files); classes even/odd. One project per
kind, built once for the module; the checks are outcomes (which image holds which
label, which task gets which prediction, what status counts), not the logs' internals.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from crc_jax.project import cli
from crc_jax.project import Project
from crc_jax.project.scan import list_images
from crc_jax.project.settings import KIND_DEFAULTS
from image_folder import write_digits

LS = Path(__file__).parent / "fixtures" / "label_studio" / "crc_config"
CONFIG = (LS / "labeling_config.xml").read_text()
FORMATS = ["export.json", "export_min.json", "export.csv", "export.tsv"]
KINDS = ["images", "features_npz", "features_csv", "backbone_onnx"]
RECORDED = {"images": "images", "features_npz": "features", "features_csv": "features",
            "backbone_onnx": "backbone"}
BUDGET = 4
SHORT = ["--epochs", "1", "--steps-per-epoch", "2", "--width", "16"]


@pytest.fixture(autouse=True)
def no_document_root_in_env(monkeypatch):
    for name in ("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "LOCAL_FILES_DOCUMENT_ROOT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The document root (ROOT/images: the recorded folder) and each image's class."""
    root = tmp_path_factory.mktemp("journeys")
    digits = write_digits(root / "images", 24, seed=0, broken=False)
    truth = {p: "even" if d % 2 == 0 else "odd" for p, d in digits.items()}
    assert sorted(truth) == list_images(root / "images")
    return root, truth


def source_options(kind: str, root: Path, truth: dict) -> list:
    """`init`'s options for a kind: the vectors (a digit's class plus noise) written as the
    kind asks, or the ONNX model."""
    paths = sorted(truth)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(paths), 5)).astype(np.float32)
    vectors[:, 0] += [3.0 if truth[p] == "even" else -3.0 for p in paths]
    if kind == "images":
        return ["--image-size", 8]
    if kind == "features_npz":
        np.savez(root / "vectors.npz", paths=np.array(paths), features=vectors)
        return ["--features", root / "vectors.npz"]
    if kind == "features_csv":
        with open(root / "vectors.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", *(f"v{k}" for k in range(vectors.shape[1]))])
            writer.writerows([p, *map(float, v)] for p, v in zip(paths, vectors))
        return ["--features", root / "vectors.csv"]
    from onnx_models import write_conv_net

    write_conv_net(root / "net.onnx", side=16)
    return ["--backbone", root / "net.onnx"]


def crc_jax(*args) -> str:
    """Run the CLI in this process (the compiled steps are shared); its output."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    assert code == 0, (args, err.getvalue())
    return out.getvalue()


def http(url: str, payload=None, *, method=None):
    """(status, body as JSON or bytes) of a request to a server on 127.0.0.1."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    if data is not None:
        request.add_header("Content-Type", "application/json")
        request.add_header("Origin", url.split("/", 3)[0] + "//" + url.split("/", 3)[2])
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            status, body, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as err:
        status, body, kind = err.code, err.read(), err.headers.get_content_type()
    return status, json.loads(body) if kind == "application/json" else body


def label_on_the_page(project: Project, truth: dict) -> dict:
    """The real page server on 127.0.0.1 (the project's own settings): every queued image
    fetched and answered over HTTP. Returns {path: (image status, answer status)}."""
    from crc_jax.project.server import make_server

    server = make_server(project, port=0, budget=BUDGET)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}"
    seen = {}
    try:
        status, state = http(f"{url}/api/state")
        assert status == 200 and state["classes"] == ["even", "odd"] and state["total"] == BUDGET
        for item in state["queue"]:
            image_status, data = http(f"{url}/image/{item['id']}")
            answer, _ = http(f"{url}/api/answer", {"id": item["id"], "label": truth[item["path"]]})
            seen[item["path"]] = (image_status, answer, len(data))
    finally:
        server.shutdown()
        server.server_close()
    return seen


@pytest.fixture(scope="module", params=KINDS)
def journey(request, world, tmp_path_factory):
    """One project of the kind: init, a cold `next` with the defaults, the page labels its
    queue, a trained `next` with no option at all. Copies are kept of the project right
    after init (for the imports) and after the trained round (for serve-ml)."""
    root, truth = world
    kind = request.param
    work = tmp_path_factory.mktemp(kind)
    directory = work / "project"
    crc_jax("init", directory, "--images", root / "images", "--classes", "even,odd",
            *source_options(kind, work, truth))
    shutil.copytree(directory, work / "as_made")
    crc_jax("next", directory, "--budget", BUDGET, *SHORT)
    cold = Project.open(directory).queue()
    page = label_on_the_page(Project.open(directory), truth)
    crc_jax("next", directory)
    shutil.copytree(directory, work / "trained")
    return {"kind": kind, "dir": directory, "work": work, "root": root, "truth": truth,
            "cold_queue": [r["path"] for r in cold], "page": page}


def labels_by_path(directory: Path) -> dict:
    project = Project.open(directory)
    return {project.paths[i]: c for i, c in project.labels().items()}


def test_next_with_the_kinds_defaults(journey):
    project = Project.open(journey["dir"])
    kind = RECORDED[journey["kind"]]
    assert project.kind == kind
    assert json.loads((journey["dir"] / "project.json").read_text())["kind"] == kind
    cold, trained = project.rounds()
    assert cold["cold_start"] and not trained["cold_start"]
    for entry in (cold, trained):
        assert {k: entry["settings"][k] for k in KIND_DEFAULTS[kind]} == KIND_DEFAULTS[kind]
        assert (entry["settings"]["epochs"], entry["settings"]["width"]) == (1, 16)
    assert cold["strategy"] == KIND_DEFAULTS[kind]["cold_start"]
    assert trained["strategy"] == KIND_DEFAULTS[kind]["strategy"]
    assert len(trained["queue"]) == BUDGET and trained["model"]


def test_the_page_labels_the_images_it_shows(journey):
    page, truth = journey["page"], journey["truth"]
    assert sorted(page) == sorted(journey["cold_queue"])
    assert all(image == 200 and size > 0 and answer == 200
               for image, answer, size in page.values()), page
    labels = labels_by_path(journey["dir"])
    assert labels == {p: truth[p] for p in page}


@pytest.mark.parametrize("name", FORMATS)
def test_import_of_each_label_studio_format(journey, name, tmp_path):
    directory = tmp_path / "project"
    shutil.copytree(journey["work"] / "as_made", directory)
    out = crc_jax("import", directory, LS / name, "--document-root", journey["root"],
                  "--skip-unmapped")
    with open(LS / "expected_labels.csv", newline="") as f:
        expected = {r["path"]: r["label"] for r in csv.DictReader(f)}
    assert labels_by_path(directory) == expected
    assert f"{len(expected)} new answers imported" in out


@pytest.fixture
def serve_ml(journey, tmp_path):
    """`crc-jax serve-ml` on a copy of the trained project, started on 127.0.0.1 (any
    free port); its URL. Stopped with Ctrl-C (SIGINT) at the end."""
    directory = tmp_path / "project"
    shutil.copytree(journey["work"] / "trained", directory)
    log = tmp_path / "serve_ml.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "crc_jax.project.cli", "serve-ml", str(directory),
                                 "--port", "0", "--document-root", str(journey["root"])],
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = proc.stdout.readline()   # the URL, printed once it listens ("" if it died)
        if "http://" not in line:
            proc.kill()
            proc.wait()
            pytest.fail(f"serve-ml did not start: {line}{log.read_text()[-2000:]}")
        yield directory, line.split("http://", 1)[1].split()[0]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert proc.returncode == 130, log.read_text()[-2000:]


def task(ident: int, path: str) -> dict:
    return {"id": ident, "data": {"image": "/data/local-files/?d=images/" + urllib.parse.quote(path)}}


def test_serve_ml_predicts_for_the_right_task_and_takes_annotations(journey, serve_ml):
    directory, address = serve_ml
    url = f"http://{address}"
    truth = journey["truth"]
    project = Project.open(directory)
    expected = {r["path"]: r for r in project.predict()}
    status, health = http(f"{url}/health")
    assert status == 200 and health["model_version"] == "crc-jax-round-1"
    assert http(f"{url}/setup", {"project": "1.0", "schema": CONFIG})[0] == 200
    tasks = [task(100 + k, p) for k, p in enumerate(project.paths)]
    stray = {"id": 999, "data": {"image": "/data/upload/1/5dfa1c90-stray.png"}}
    status, reply = http(f"{url}/predict", {"tasks": [stray, *tasks[::-1]], "label_config": CONFIG})
    assert status == 200 and len(reply["results"]) == len(tasks) + 1
    assert reply["results"][0]["result"] == []              # not an image of the project
    for sent, result in zip(tasks[::-1], reply["results"][1:]):
        path = project.paths[sent["id"] - 100]
        assert result["result"][0]["value"]["choices"] == [expected[path]["predicted"]], path
        assert result["score"] == pytest.approx(float(expected[path]["confidence"]), abs=1e-4)

    unlabeled = next(p for p in project.paths if p not in labels_by_path(directory))
    annotation = {"id": 7001, "was_cancelled": False, "result": [{
        "type": "choices", "from_name": "choice", "to_name": "image",
        "value": {"choices": [truth[unlabeled]]}}]}
    status, _ = http(f"{url}/webhook", {
        "action": "ANNOTATION_CREATED", "annotation": annotation,
        "task": task(100 + project.paths.index(unlabeled), unlabeled),
        "project": {"id": 1, "label_config": CONFIG}})
    assert status in (200, 201)
    assert labels_by_path(directory) == {**labels_by_path(journey["dir"]), unlabeled: truth[unlabeled]}


def test_predict_status_export(journey, tmp_path):
    directory, truth = journey["dir"], journey["truth"]
    crc_jax("predict", directory, "--out", tmp_path / "predictions.csv")
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == sorted(truth)
    assert all(r["predicted"] in ("even", "odd") for r in rows)
    labels = labels_by_path(directory)
    assert {r["path"]: r["label"] for r in rows if r["label"]} == labels

    st = json.loads(crc_jax("status", directory, "--json"))
    assert (st["kind"], st["images"], st["labeled"], st["rounds"], st["queued"]) == \
        (RECORDED[journey["kind"]], len(truth), len(labels), 2, BUDGET)
    assert st["labels_per_class"] == {c: sum(v == c for v in labels.values()) for c in ("even", "odd")}
    assert st["kept_options"] == {"budget": BUDGET, "epochs": 1, "steps_per_epoch": 2, "width": 16}

    crc_jax("export", directory, "--out", tmp_path / "labels.csv")
    with open(tmp_path / "labels.csv", newline="") as f:
        assert {r["path"]: r["label"] for r in csv.DictReader(f)} == labels
    crc_jax("export", directory, "--format", "label-studio", "--out", tmp_path / "tasks.json",
            "--document-root", journey["root"])
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    by_path = {urllib.parse.unquote(t["data"]["image"].split("?d=images/", 1)[1]): t for t in tasks}
    assert sorted(by_path) == sorted(truth)
    for path, t in by_path.items():
        answers = [a["result"][0]["value"]["choices"][0] for a in t.get("annotations", [])]
        assert answers == ([labels[path]] if path in labels else []), path
        assert t["predictions"][0]["model_version"] == "crc-jax-round-1"
