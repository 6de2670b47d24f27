"""crc-jax as a Label Studio ML backend: a small Flask app over `Project`, on 127.0.0.1.

Label Studio's ML-backend protocol (the routes Label Studio calls):
    GET  /health, /     {"status": "UP", ...}
    POST /setup         {"project": "ID.time", "schema": <labeling config>, "hostname",
                        "access_token"} -> {"model_version": "crc-jax-round-K"}
    POST /predict       {"tasks": [...], "label_config": ...} -> {"results": [one prediction
                        per task: the latest round's class and its confidence as the score]}
    POST /webhook       Label Studio's webhook events:
        ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_CREATED: each annotation's
            value goes into the labels log (fsynced before the reply) as a source of its
            own, under the rules every front shares (crc_jax.project.label_sources; what
            one annotation does: crc_jax.project.label_studio_answers). An annotation that
            cannot be applied is "ignored" with a reason, counted by `crc-jax status` and
            written on its task in Label Studio (crc_note).
        ANNOTATIONS_DELETED: the values of those annotations are withdrawn (other sources
            of the image stand).
        START_TRAINING (Label Studio's "Start Training"): a round in a background thread,
            after catching up with Label Studio; when it ends, the tasks' crc_round /
            crc_rank fields are rewritten through Label Studio's API so that sorting by
            crc_rank lists the new queue first.
And routes of ours: GET /crc/round, the round in progress (phase, error, picked); GET
/crc/sync, the last catch-up with each Label Studio project
(crc_jax.project.label_studio_sync: annotations made while serve-ml was down arrive on
start, on a project's first /setup and before each round).

Requests must name this server in Host (DNS rebinding), and POSTs must be JSON objects
of the protocol's shape: anything else is a 400 with a one-line JSON error naming the
field. Flask with Werkzeug's threaded server: no hand-written HTTP.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from pathlib import Path
from typing import NoReturn

from flask import Blueprint, Flask, abort, current_app, jsonify, request

from crc_jax.project import label_studio, label_studio_config
from crc_jax.project.api import Project
from crc_jax.project.exchange import PathIndex
from crc_jax.project.label_studio_answers import (
    BadPayload, check_annotation, check_task, is_int, shown)
from crc_jax.project.label_studio_client import LabelStudioClient, LabelStudioError
from crc_jax.project.label_studio_sync import LabelStudioSync, ignored_count
from crc_jax.project.settings import RoundSettings
from crc_jax.project.store import ProjectError
from crc_jax.project.web import RoundRunner, bind, host_refused, json_object, serve

log = logging.getLogger(__name__)

ANSWER_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
NO_MODEL = "crc-jax-no-model"


@functools.lru_cache(maxsize=16)
def names_of(config_text: str) -> label_studio_config.LabelingNames:
    return label_studio_config.parse(config_text, "Label Studio's labeling config")


class Predictions:
    """The latest trained round's predictions for every image, computed once per round."""

    def __init__(self, project: Project):
        self.project = project
        self._lock = threading.Lock()
        self._version: str | None = None
        self._rows: dict | None = None

    def version(self) -> str:
        trained = [e for e in self.project.rounds() if e.get("model")]
        return label_studio.model_version(trained[-1]) if trained else NO_MODEL

    def rows(self) -> tuple[str, dict | None]:
        """(model version, {id: {"predicted", "confidence"}} or None before any training)."""
        version = self.version()
        if version == NO_MODEL:
            return version, None
        with self._lock:
            if self._version != version:
                self._rows = {r["id"]: r for r in self.project.predict()}
                self._version = version
            return version, self._rows


@dataclasses.dataclass(frozen=True)
class BackendContext:
    """What the backend's routes work on (app.extensions["crc_jax_ml"])."""

    project: Project
    predictions: Predictions
    sync: LabelStudioSync
    runner: RoundRunner
    budget: int


backend = Blueprint("ml_backend", __name__)


def ctx() -> BackendContext:
    return current_app.extensions["crc_jax_ml"]


def fail(status: int, message: str) -> NoReturn:
    response = jsonify({"status": "error", "error": message})
    response.status_code = status
    abort(response)


@backend.before_request
def local_json_only():
    refused = host_refused()
    if refused:
        fail(403, refused)
    if request.method == "POST" and not request.is_json:
        fail(415, "send JSON (Content-Type: application/json)")


def body() -> dict:
    data, why = json_object()
    if data is None:
        fail(400, why)
    return data


def project_id(value, field: str) -> int:
    """Label Studio's project id: 3, "3", or /setup's "3.1700000000"; absent: 0."""
    if value is None or value == "":
        return 0
    if is_int(value) and value >= 0:
        return value
    head = value.split(".", 1)[0] if isinstance(value, str) else ""
    if head.isdigit():
        return int(head)
    fail(400, f"{field} must be Label Studio's project id (e.g. 3 or \"3.1700000000\"), got "
              f"{shown(value)}")


def checked(check, *args):
    """check(*args), a BadPayload turned into a 400."""
    try:
        return check(*args)
    except BadPayload as err:
        fail(400, str(err))


def names_for(config_text) -> label_studio_config.LabelingNames:
    if not isinstance(config_text, str):
        fail(400, "no labeling config in the request")
    classes = ctx().project.classes
    try:
        names = names_of(config_text)
        if classes:
            label_studio_config.check_classes(names, classes, "Label Studio's labeling config")
    except ProjectError as err:
        fail(400, str(err))
    return names


@backend.get("/")
@backend.get("/health")
def health():
    return jsonify({"status": "UP", "model_class": "crc-jax",
                    "model_version": ctx().predictions.version()})


@backend.post("/setup")
def setup():
    data = body()
    names = names_for(data.get("schema"))
    ls_project = project_id(data.get("project"), "project")
    hostname, token = data.get("hostname"), data.get("access_token")
    for field, value in (("hostname", hostname), ("access_token", token)):
        if value is not None and not isinstance(value, str):
            fail(400, f"{field} must be a string, got {shown(value)}")
    ctx().sync.connect(ls_project, names, hostname, token)
    return jsonify({"model_version": ctx().predictions.version()})


@backend.post("/predict")
def predict():
    data = body()
    names = names_for(data.get("label_config"))
    ls_project = project_id(data.get("project"), "project")
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        fail(400, f"tasks must be a list, got {shown(tasks)}")
    for k, task in enumerate(tasks):
        checked(check_task, task, names.data_key, f"tasks[{k}]")
    version, rows = ctx().predictions.rows()
    if rows is None:  # nothing trained yet: Label Studio stores no prediction
        return jsonify({"results": [], "model_version": version})
    results = []
    for task in tasks:
        try:
            image, _ = ctx().sync.locate(task["data"].get(names.data_key) or "", ls_project)
        except LabelStudioError:   # an upload that cannot be read now
            image = None
        if image is None:  # not an image of this project: an empty prediction
            results.append({"result": [], "score": None, "model_version": version})
            continue
        row = rows[image]
        results.append({"result": label_studio.choice_result(names, row["predicted"]),
                        "score": float(row["confidence"]), "model_version": version})
    return jsonify({"results": results, "model_version": version})


def pairs(data: dict, names) -> list:
    """Checked (annotation, task) pairs of an annotation webhook (one, or a bulk creation)."""
    annotations, tasks = data.get("annotation"), data.get("task")
    if isinstance(annotations, dict) and isinstance(tasks, dict):
        return [(checked(check_annotation, annotations, "annotation"),
                 checked(check_task, tasks, names.data_key, "task"))]
    if isinstance(annotations, list) and isinstance(tasks, list):
        by_id = {}
        for k, task in enumerate(tasks):
            checked(check_task, task, names.data_key, f"task[{k}]")
            by_id[task.get("id")] = task
        out = []
        for k, annotation in enumerate(annotations):
            checked(check_annotation, annotation, f"annotation[{k}]")
            ref = annotation.get("task")
            if not is_int(ref) or ref not in by_id:
                fail(400, f"annotation[{k}].task must be the id of a task in the request, got "
                          f"{shown(ref)}")
            out.append((annotation, by_id[ref]))
        return out
    fail(400, "an annotation webhook needs 'annotation' and 'task' (two objects, or two lists)")


@backend.post("/webhook")
def webhook():
    c = ctx()
    data = body()
    action = data.get("action")
    if not isinstance(action, str):
        fail(400, f"action must be a string (Label Studio's webhook action), got {shown(action)}")
    project_info = data.get("project", {})
    if not isinstance(project_info, dict):
        fail(400, f"project must be an object, got {shown(project_info)}")
    ls_project = project_id(project_info.get("id"), "project.id")
    if action == "START_TRAINING":
        if not c.runner.start(c.budget):
            return jsonify({"status": "ok", "detail": "a round is already running"}), 200
        return jsonify({"status": "ok", "detail": f"round started (budget {c.budget})"}), 201
    if action == "ANNOTATIONS_DELETED":
        deleted = data.get("annotations")
        if not isinstance(deleted, list) or not all(
                isinstance(a, dict) and is_int(a.get("id")) for a in deleted):
            fail(400, f"annotations must be a list of objects with an integer id, got "
                      f"{shown(deleted)}")
        undone = c.sync.delete(ls_project, [a["id"] for a in deleted])
        return jsonify({"status": "ok", "undone": undone}), 200
    if action not in ANSWER_EVENTS:
        return jsonify({"status": "ok", "detail": f"{action!r} ignored"}), 200
    names = names_for(project_info.get("label_config"))
    checked_pairs = pairs(data, names)
    try:
        results = c.sync.take(ls_project, checked_pairs, names)
    except LabelStudioError as err:   # an uploaded file Label Studio did not serve now
        fail(503, f"{err}; the annotation is taken when serve-ml next catches up")
    ignored = sum(r["status"] == "ignored" for r in results)
    return jsonify({"status": "ok", "ignored": ignored, "results": results}), 201


@backend.get("/crc/round")
def round_state():
    state = ctx().runner.state()
    state["model_version"] = ctx().predictions.version()
    state["pending"] = ctx().project.pending()
    return jsonify(state)


@backend.get("/crc/sync")
def sync_state():
    """The last catch-up with each Label Studio project, and the annotations ignored."""
    sync = ctx().sync
    return jsonify({"projects": {str(p): r for p, r in sync.reports.items()},
                    "ignored": ignored_count(ctx().project.dir)})


def create_app(project: Project, *, settings: RoundSettings | None = None, budget: int = 20,
               document_root: str | os.PathLike = "/", client: LabelStudioClient | None = None) -> Flask:
    """The ML backend for `project`. `settings`: the rounds' settings (default: the
    project's, from its kind and kept options). `client`: Label Studio's API for catching up
    and for writing the queue fields after a round (default: the hostname and token Label
    Studio sends to /setup)."""
    settings = settings or project.round_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024  # webhooks carry whole tasks
    index = PathIndex(project.paths, project.classes, project.images_root, document_root)
    sync = LabelStudioSync(project, index, client)
    app.extensions["crc_jax_ml"] = BackendContext(
        project=project, predictions=Predictions(project), sync=sync, budget=budget,
        runner=RoundRunner(project, settings, before=sync.before_round,
                           before_phase="catching up with Label Studio", after=sync.sync_all,
                           after_phase="writing the queue into Label Studio"))
    app.register_blueprint(backend)
    return app


def make_server(project: Project, *, host: str = "127.0.0.1", port: int = 9090,
                settings: RoundSettings | None = None, budget: int = 20,
                document_root: str | os.PathLike = "/", client: LabelStudioClient | None = None):
    """A threaded Werkzeug server for the ML backend (call .serve_forever(); .port)."""
    sock = bind(host, port)
    app = create_app(project, settings=settings, budget=budget, document_root=Path(document_root),
                     client=client)
    app.extensions["crc_jax_ml"].sync.start()   # catch up with the projects known from before
    return serve(app, host, sock)
