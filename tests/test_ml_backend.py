"""The ML backend's webhook and protocol rules, with Flask's test client and the tasks and
annotations of a real Label Studio export (tests/fixtures/label_studio/crc_config). Against
a running Label Studio: tests/test_label_studio_server.py (slow)."""

import csv
import json
import time
from pathlib import Path

import pytest

from crc_jax.project import cli
from crc_jax.project import Project
from crc_jax.project.ml_backend import create_app
from crc_jax.project.settings import RoundSettings
from image_folder import write_digits

FIXTURES = Path(__file__).parent / "fixtures" / "label_studio" / "crc_config"
CONFIG = (FIXTURES / "labeling_config.xml").read_text()
LS_PROJECT = {"id": 1, "label_config": CONFIG}


@pytest.fixture()
def setup(tmp_path):
    root = tmp_path / "root"
    write_digits(root / "images", 24, seed=0, broken=True)
    project, _ = Project.create(tmp_path / "p", root / "images", image_size=8,
                                classes=["even", "odd"], progress=False)
    app = create_app(project, document_root=root)
    tasks = json.loads((FIXTURES / "export.json").read_text())
    labeled = [t for t in tasks if t["annotations"] and "images/" in t["data"]["image"]]
    return project, app.test_client(), labeled, tasks


def post(client, path, body, **headers):
    return client.post(path, json=body, headers=headers)


def webhook(client, action, annotation, task):
    return post(client, "/webhook", {"action": action, "annotation": annotation, "task": task,
                                     "project": LS_PROJECT})


def events(project):
    return [e for e in Project.open(project.dir).log.events()
            if e.get("source", "").startswith("label-studio:")]


def image_of(project, task):
    return project.paths.index(task["data"]["image"].split("?d=images/")[1])


def label_of(annotation):
    return annotation["result"][0]["value"]["choices"][0]


def test_health_setup_and_predict_before_any_model(setup):
    project, client, _, tasks = setup
    assert client.get("/health").get_json()["status"] == "UP"
    reply = post(client, "/setup", {"project": "1.1700000000", "schema": CONFIG})
    assert reply.status_code == 200 and reply.get_json()["model_version"] == "crc-jax-no-model"
    one_class = CONFIG.replace('<Choice value="odd"/>', "")
    reply = post(client, "/setup", {"project": "1.1700000000", "schema": one_class})
    assert reply.status_code == 400 and "'odd'" in reply.get_json()["error"]
    reply = post(client, "/predict", {"tasks": tasks[:3], "label_config": CONFIG})
    assert reply.status_code == 200 and reply.get_json()["results"] == []


def test_requests_from_elsewhere_are_refused(setup):
    _, client, labeled, _ = setup
    assert client.get("/health", headers={"Host": "evil.example:9090"}).status_code == 403
    reply = client.post("/webhook", data="action=START_TRAINING", content_type="text/plain")
    assert reply.status_code == 415


def test_an_annotation_is_written_exactly_once(setup):
    project, client, labeled, _ = setup
    task = labeled[0]
    annotation, image = task["annotations"][0], image_of(project, task)
    reply = webhook(client, "ANNOTATION_CREATED", annotation, task)
    assert reply.status_code == 201 and reply.get_json()["results"][0]["status"] == "saved"
    for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):  # retried, or saved unchanged
        reply = webhook(client, action, annotation, task)
        assert reply.get_json()["results"][0]["status"] == "already saved"
    assert [(e["op"], e["id"], e["label"]) for e in events(project)] == \
        [("label", image, label_of(annotation))]
    assert events(project)[0]["source"] == f"label-studio:1:{annotation['id']}"
    project.undo(image, source="page")  # undone in crc-jax: a late retry does not bring it back
    webhook(client, "ANNOTATION_CREATED", annotation, task)
    assert image not in Project.open(project.dir).labels()


def test_sources_combine_changes_and_deletions(setup):
    """Another annotation with another answer is the latest answer (no refusal: its
    annotator sees it in Label Studio); deleting it brings the first one's back; the first
    annotation changing its answer (a newer revision) replaces its own value."""
    project, client, labeled, _ = setup
    task = labeled[0]
    annotation, image = task["annotations"][0], image_of(project, task)
    label = label_of(annotation)
    other = "odd" if label == "even" else "even"
    changed = {**annotation, "updated_at": "2030-01-01T00:00:00Z",
               "result": [{**annotation["result"][0], "value": {"choices": [other]}}]}
    webhook(client, "ANNOTATION_CREATED", annotation, task)
    reply = webhook(client, "ANNOTATION_CREATED", {**changed, "id": 999}, task)
    assert reply.status_code == 201 and reply.get_json()["results"][0]["status"] == "saved"
    assert Project.open(project.dir).labels()[image] == other
    reply = post(client, "/webhook", {"action": "ANNOTATIONS_DELETED", "project": LS_PROJECT,
                                      "annotations": [{"id": 999}]})
    assert reply.get_json()["undone"] == [image]
    assert Project.open(project.dir).labels()[image] == label
    # The same annotation changing its answer: its value replaced.
    assert webhook(client, "ANNOTATION_UPDATED", changed, task).status_code == 201
    assert Project.open(project.dir).labels()[image] == other
    # Deleted in Label Studio: the answer it wrote is withdrawn; nothing else answers.
    reply = post(client, "/webhook", {"action": "ANNOTATIONS_DELETED", "project": LS_PROJECT,
                                      "annotations": [{"id": annotation["id"]}]})
    assert reply.get_json()["undone"] == [image]
    assert image not in Project.open(project.dir).labels()


def test_tasks_that_are_not_project_images_are_ignored(setup):
    project, client, _, tasks = setup
    stray = next(t for t in tasks if "other/" in t["data"]["image"])
    reply = webhook(client, "ANNOTATION_CREATED", stray["annotations"][0], stray)
    assert reply.status_code == 201
    result = reply.get_json()["results"][0]
    assert result["status"] == "ignored" and "outside the images folder" in result["reason"]
    assert events(project) == []


def test_a_skipped_task_is_a_skip_only_when_queued(setup):
    project, client, labeled, tasks = setup
    project.next_batch(3, RoundSettings(cold_start="random"))
    by_image = {image_of(project, t): t for t in tasks if "images/" in t["data"]["image"]}
    queued = project.pending()[0]
    cancelled = {"id": 500, "result": [], "was_cancelled": True}
    reply = webhook(client, "ANNOTATION_CREATED", cancelled, by_image[queued])
    assert reply.get_json()["results"][0]["status"] == "skipped"
    assert Project.open(project.dir).answers()[queued] is None
    unqueued = next(i for i in by_image if i not in project.queue_ids())
    reply = webhook(client, "ANNOTATION_CREATED", {**cancelled, "id": 501}, by_image[unqueued])
    assert reply.get_json()["results"][0]["status"] == "ignored"
    assert unqueued not in Project.open(project.dir).answers()


# -- requests of the wrong shape: 400 and one JSON line, never 500 -----------------------

ANNOTATION = {"id": 9, "task": 5, "updated_at": "2026-12-01T10:00:00Z", "was_cancelled": False,
              "result": [{"from_name": "choice", "to_name": "image", "type": "choices",
                          "value": {"choices": ["even"]}}]}
TASK = {"id": 5, "data": {"image": "/data/local-files/?d=images/batch_0/digit_0000.png"}}
VALID = {
    "/setup": {"project": "1.1700000000", "schema": CONFIG},
    "/predict": {"tasks": [TASK], "label_config": CONFIG},
    "/webhook": {"action": "ANNOTATION_CREATED", "annotation": ANNOTATION, "task": TASK,
                 "project": LS_PROJECT},
    "/webhook deleted": {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 9}],
                         "project": {"id": 1}},
    "/webhook bulk": {"action": "ANNOTATIONS_CREATED", "annotation": [ANNOTATION],
                      "task": [TASK], "project": LS_PROJECT},
}
DEEP = "[" * 100_000 + "]" * 100_000
# The shapes a careful user sent (each a 500 with a traceback before).
NAMED = [
    ("/setup", {"project": "abc", "schema": CONFIG}, "project must be Label Studio's project id"),
    ("/webhook", {**VALID["/webhook"], "project": {"id": "abc", "label_config": CONFIG}},
     "project.id must be"),
    ("/webhook", {**VALID["/webhook"], "annotation": {**ANNOTATION, "result": "even"}},
     "annotation.result must be a list"),
    ("/webhook", {**VALID["/webhook"], "annotation": {
        **ANNOTATION, "result": [{**ANNOTATION["result"][0], "value": ["even"]}]}},
     r"annotation.result[0].value must be an object"),
    ("/webhook", {**VALID["/webhook"], "task": {**TASK, "data": ["x"]}},
     "task.data must be an object"),
    ("/predict", {**VALID["/predict"], "tasks": [{"data": ["x"]}]}, "tasks[0].data must be"),
    ("/webhook", {**VALID["/webhook deleted"], "annotations": 7}, "annotations must be a list"),
    ("/webhook bulk", {**VALID["/webhook bulk"], "annotation": [{**ANNOTATION, "result": "x"}]},
     "annotation[0].result must be a list"),
    ("/webhook", DEEP, "nested too deeply"),
    ("/predict", DEEP, "nested too deeply"),
    ("/setup", DEEP, "nested too deeply"),
    ("/webhook deleted", {**VALID["/webhook deleted"], "project": {"id": [1]}}, "project.id"),
]


def paths_in(value, prefix=()):
    yield prefix
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from paths_in(inner, prefix + (key,))


def replaced(value, path, new):
    if not path:
        return new
    value = json.loads(json.dumps(value))
    inner = value
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = new
    return value


def send(client, route, payload):
    url = route.split(" ")[0]
    if isinstance(payload, str):
        return client.post(url, data=payload, content_type="application/json")
    return client.post(url, json=payload)


@pytest.mark.parametrize("route,payload,message", NAMED,
                         ids=[f"{r} {m}" for r, _, m in NAMED])
def test_named_bad_requests_are_400(setup, route, payload, message):
    _, client, _, _ = setup
    reply = send(client, route, payload)
    assert reply.status_code == 400, reply.data[:300]
    error = reply.get_json()["error"]
    assert message in error and "\n" not in error, error


def test_no_request_shape_gives_500(setup):
    """Every field of each valid request replaced by a value of every other JSON type."""
    project, client, _, _ = setup
    wrong = ["abc", 7, -1, 1.5, True, None, [], [1], {}, {"a": 1}]
    tried = 0
    for route, valid in VALID.items():
        for path in paths_in(valid):
            for value in wrong:
                reply = send(client, route, replaced(valid, path, value))
                tried += 1
                assert reply.status_code < 500, (route, path, value, reply.data[:300])
                if reply.status_code >= 400:
                    assert "\n" not in reply.get_json()["error"], (route, path, value)
    assert tried > 500


# -- catching up, uploads by content, what an ignored annotation leaves -----------------

class RecordedLabelStudio:
    """Label Studio's API as LabelStudioClient calls it, answering from the recorded JSON
    export (a real Label Studio's, tests/fixtures/label_studio/crc_config); the real
    server: tests/test_label_studio_server.py."""

    def __init__(self, tasks, files=None):
        self.tasks_by_id = {t["id"]: t for t in json.loads(json.dumps(tasks))}
        self.files, self.updates, self.exports = dict(files or {}), [], 0

    def project(self, pid):
        return {"id": pid, "label_config": CONFIG}

    def annotated_tasks(self, pid):
        self.exports += 1
        return [t for t in json.loads(json.dumps(list(self.tasks_by_id.values())))
                if t["annotations"]]

    def task(self, task_id):
        return self.tasks_by_id[task_id]

    def tasks(self, pid):
        return list(self.tasks_by_id.values())

    def file_bytes(self, url):
        return self.files[url]

    def update_task_data(self, task_id, data):
        self.updates.append((task_id, data))
        self.tasks_by_id[task_id]["data"] = data


def backend_with(tmp_path, studio, settings=RoundSettings()):
    root = tmp_path / "root"
    write_digits(root / "images", 24, seed=0, broken=True)
    project, _ = Project.create(tmp_path / "p", root / "images", image_size=8,
                                classes=["even", "odd"], progress=False)
    app = create_app(project, document_root=root, client=studio, settings=settings, budget=4)
    return project, app.test_client()


def sync_of(client):
    return client.application.extensions["crc_jax_ml"].sync


def expected_labels():
    with open(FIXTURES / "expected_labels.csv", newline="") as f:
        return {r["path"]: r["label"] for r in csv.DictReader(f)}


def test_catching_up_applies_what_was_missed_and_withdraws_what_was_deleted(tmp_path):
    tasks = json.loads((FIXTURES / "export.json").read_text())
    studio = RecordedLabelStudio(tasks, {"/data/upload/1/5dfa1c90-stray.png": b"not a project image"})
    project, client = backend_with(tmp_path, studio)
    sync = sync_of(client)
    report = sync.catch_up(1)
    labels = {project.paths[i]: c for i, c in Project.open(project.dir).labels().items()}
    assert labels == expected_labels()
    assert report["saved"] == len(labels) and report["ignored"] == 2
    assert client.get("/crc/sync").get_json()["ignored"] == 2
    log_size = (project.dir / "labels.jsonl").stat().st_size
    assert sync.catch_up(1)["saved"] == 0   # the cursor: nothing new, nothing written
    assert (project.dir / "labels.jsonl").stat().st_size == log_size
    # While serve-ml was down: one annotation deleted, one changed.
    first, second = [t for t in studio.tasks_by_id.values() if "images/" in t["data"]["image"]][:2]
    first["annotations"] = []
    old = second["annotations"][0]["result"][0]["value"]["choices"][0]
    new = "odd" if old == "even" else "even"
    second["annotations"][0]["result"][0]["value"]["choices"] = [new]
    second["annotations"][0]["updated_at"] = "2030-01-01T00:00:00Z"
    report = sync.catch_up(1)
    assert report["withdrawn"] == 1 and report["saved"] == 1
    labels = Project.open(project.dir).labels()
    assert image_of(project, first) not in labels and labels[image_of(project, second)] == new


def test_an_upload_is_matched_by_its_bytes_never_by_its_name(tmp_path, capsys):
    studio = RecordedLabelStudio([])
    project, client = backend_with(tmp_path, studio)
    target = project.paths.index("batch_0/digit_0003.png")
    lookalike = "/data/upload/1/0a1b2c3d-digit_0003.png"    # its name, another picture
    renamed = "/data/upload/1/9f8e7d6c-renamed.png"         # another name, its bytes
    studio.files = {lookalike: b"another picture",
                    renamed: (project.images_root / project.paths[target]).read_bytes()}
    for task_id, url in ((40, lookalike), (41, renamed)):
        studio.tasks_by_id[task_id] = {"id": task_id, "data": {"image": url}, "annotations": []}
    first = webhook(client, "ANNOTATION_CREATED", {**ANNOTATION, "id": 50, "task": 40},
                    studio.tasks_by_id[40]).get_json()["results"][0]
    assert first["status"] == "ignored" and "'batch_0/digit_0003.png' has its name but is " \
        "another picture" in first["reason"]
    assert target not in Project.open(project.dir).labels()
    # What the annotator sees in Label Studio's data manager, and what status counts.
    (task_id, data), = studio.updates
    assert task_id == 40 and data["crc_status"] == "ignored" and data["crc_note"] == first["reason"]
    assert data["image"] == lookalike
    assert cli.main(["status", str(project.dir)]) == 0
    assert "Label Studio: 1 annotations ignored" in capsys.readouterr().out
    second = webhook(client, "ANNOTATION_CREATED", {**ANNOTATION, "id": 51, "task": 41},
                     studio.tasks_by_id[41]).get_json()["results"][0]
    assert second["status"] == "saved" and second["image"] == target
    assert Project.open(project.dir).labels() == {target: "even"}
    # The ignored annotation deleted in Label Studio: no longer counted, its note cleared.
    post(client, "/webhook", {"action": "ANNOTATIONS_DELETED", "project": LS_PROJECT,
                              "annotations": [{"id": 50}]})
    assert client.get("/crc/sync").get_json()["ignored"] == 0
    assert studio.tasks_by_id[40]["data"]["crc_status"] == "" and \
        studio.tasks_by_id[40]["data"]["crc_note"] is None


def test_without_label_studio_s_address_an_upload_is_ignored_with_the_reason(setup):
    project, client, _, tasks = setup
    upload = next(t for t in tasks if t["data"]["image"].startswith("/data/upload/"))
    result = webhook(client, "ANNOTATION_CREATED", upload["annotations"][0], upload)
    result = result.get_json()["results"][0]
    assert result["status"] == "ignored" and "--label-studio-url" in result["reason"]
    assert events(project) == []


def test_a_round_started_from_label_studio_catches_up_first(tmp_path):
    """One annotation made while serve-ml was down (one label: a cold start, no training):
    Start Training catches up before the round, which counts the label."""
    tasks = json.loads((FIXTURES / "export.json").read_text())[:1]
    project, client = backend_with(tmp_path, RecordedLabelStudio(tasks),
                                   RoundSettings(cold_start="random"))
    sync_of(client).state.add_project(1)   # connected before (its /setup), then serve-ml restarted
    reply = post(client, "/webhook", {"action": "START_TRAINING", "project": LS_PROJECT})
    assert reply.status_code == 201
    state = client.get("/crc/round").get_json()
    deadline = time.monotonic() + 600   # a guard against a hang, not a timing
    while state["running"]:
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
        state = client.get("/crc/round").get_json()
    assert state["phase"] == "done", state
    (entry,) = Project.open(project.dir).rounds()
    assert entry["num_labeled"] == 1 and len(Project.open(project.dir).labels()) == 1
