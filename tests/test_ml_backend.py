"""The ML backend's webhook and protocol rules, with Flask's test client and the tasks and
annotations of a real Label Studio export (tests/fixtures/label_studio/crc_config). Against
a running Label Studio: tests/test_label_studio_server.py (slow)."""

import json
from pathlib import Path

import pytest

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


def test_conflicts_own_changes_and_deletions(setup):
    project, client, labeled, _ = setup
    task = labeled[0]
    annotation, image = task["annotations"][0], image_of(project, task)
    label = label_of(annotation)
    other = "odd" if label == "even" else "even"
    changed = {**annotation, "result": [{**annotation["result"][0], "value": {"choices": [other]}}]}
    webhook(client, "ANNOTATION_CREATED", annotation, task)
    # Another annotation contradicting the saved answer: refused, nothing written.
    reply = webhook(client, "ANNOTATION_CREATED", {**changed, "id": 999}, task)
    assert reply.status_code == 409 and "undo it there first" in reply.get_json()["error"]
    assert Project.open(project.dir).labels()[image] == label
    # The same annotation changing its answer: undo, then the new label.
    assert webhook(client, "ANNOTATION_UPDATED", changed, task).status_code == 201
    assert Project.open(project.dir).labels()[image] == other
    # Deleted in Label Studio: the answer it wrote is undone.
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
