"""crc-jax as a Label Studio ML backend: a small Flask app over `Project`, on 127.0.0.1.

Label Studio's ML-backend protocol (the routes Label Studio calls):
    GET  /health, /     {"status": "UP", ...}
    POST /setup         {"project": "ID.time", "schema": <labeling config>, "hostname",
                        "access_token"} -> {"model_version": "crc-jax-round-K"}
    POST /predict       {"tasks": [...], "label_config": ...} -> {"results": [one prediction
                        per task: the latest round's class and its confidence as the score]}
    POST /webhook       Label Studio's webhook events:
        ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_CREATED: the answer goes into
            the labels log (fsynced before the reply), with the page's rules: an answer
            equal to the saved one is written once (a retried webhook writes nothing more);
            one that contradicts an answer given elsewhere is refused (409). An annotation
            may change its own earlier answer (undo, then the new label). A skipped
            (cancelled) annotation of a queued image is a skip.
        ANNOTATIONS_DELETED: answers written by those annotations are undone.
        START_TRAINING (Label Studio's "Start Training"): a round in a background thread;
            when it ends, the tasks' crc_round / crc_rank fields are rewritten through
            Label Studio's API so that sorting by crc_rank lists the new queue first.
And one route of ours: GET /crc/round, the round in progress (phase, error, picked).

Each webhook answer carries source "label-studio:<LS project>:<annotation id>" in the
labels log; an event already recorded from that source with that label is not written
again, even after an undo. Requests must name this server in Host (DNS rebinding), and
POSTs must be JSON. Flask with Werkzeug's threaded server: no hand-written HTTP.
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
from crc_jax.project.label_studio_client import LabelStudioClient, LabelStudioError, sync_queue_fields
from crc_jax.project.labels_log import LabelConflict
from crc_jax.project.server import RoundRunner, bind, host_refused
from crc_jax.project.settings import RoundSettings
from crc_jax.project.store import ProjectError

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


def annotation_label(annotation: dict, names) -> str | None:
    """The class an annotation answers (None: no answer to the Choices control)."""
    for result in annotation.get("result") or []:
        if result.get("type") == "choices" and result.get("from_name") == names.choice_name:
            choices = (result.get("value") or {}).get("choices") or []
            if len(choices) == 1:
                return str(choices[0])
    return None


class AnnotationAnswers:
    """Label Studio's annotations written into the labels log (the webhook's rules)."""

    def __init__(self, project: Project, index: PathIndex):
        self.project, self.index = project, index

    @staticmethod
    def source(ls_project: int, annotation_id) -> str:
        return f"label-studio:{ls_project}:{annotation_id}"

    def answered_by(self, source: str) -> dict:
        """{image id: label} of the images whose current answer was written by `source`."""
        last = {}
        for event in self.project.log.events():
            last[int(event["id"])] = event
        return {i: e.get("label") for i, e in last.items()
                if e.get("source") == source and e["op"] == "label"}

    def take(self, ls_project: int, annotation: dict, task: dict, names) -> dict:
        """Write one annotation's answer; returns what happened (LabelConflict: refused)."""
        project, ident = self.project, annotation.get("id")
        image, why = self.index.locate((task.get("data") or {}).get(names.data_key, ""))
        if image is None:
            return {"annotation": ident, "status": "ignored", "reason": why}
        source = self.source(ls_project, ident)
        if annotation.get("was_cancelled"):
            if image in project.pending():
                project.skip(image, source=source)
                return {"annotation": ident, "status": "skipped", "image": image}
            return {"annotation": ident, "status": "ignored",
                    "reason": "skipped in Label Studio, not queued here"}
        label = annotation_label(annotation, names)
        if label is None:
            return {"annotation": ident, "status": "ignored",
                    "reason": f"no answer to the Choices control {names.choice_name!r}"}
        if any(e.get("source") == source and e["op"] == "label" and int(e["id"]) == image
               and e.get("label") == label for e in project.log.events()):
            # a retried or repeated webhook: this answer was written once already
            return {"annotation": ident, "status": "already saved", "image": image}
        own, saved = self.answered_by(source), project.answers()
        if own.get(image) not in (None, label):  # the annotation changed its own answer
            project.undo(image, source=source)
        elif image in saved and saved[image] != label:
            given = "skipped (unsure)" if saved[image] is None else f"labeled {saved[image]!r}"
            raise LabelConflict(f"image {image} ({project.paths[image]}) is already {given} in "
                                f"crc-jax (by the page, an import or another annotation), not "
                                f"{label!r}; undo it there first")
        added = project.add_labels({image: label}, source=source, queued_only=False)
        return {"annotation": ident, "status": "saved" if added else "already saved",
                "image": image}

    def delete(self, ls_project: int, annotation_ids: list) -> list:
        """Undo the answers these annotations wrote; returns the images undone."""
        undone = []
        for ident in annotation_ids:
            source = self.source(ls_project, ident)
            for image in self.answered_by(source):
                self.project.undo(image, source=source)
                undone.append(image)
        return undone


class QueueSync:
    """The Label Studio projects this backend is connected to (by /setup), and writing the
    crc_* queue fields into their tasks after a round (errors logged, never raised)."""

    def __init__(self, project: Project, index: PathIndex, client: LabelStudioClient | None):
        self.project, self.index, self.client = project, index, client
        self.connections: dict[int, tuple] = {}  # LS project id -> (client, labeling names)
        self.synced: dict[int, str] = {}         # LS project id -> the queue version written
        self._lock = threading.Lock()

    def queue_version(self) -> str:
        rounds = self.project.rounds()
        return f"{len(rounds)}:{len(self.project.pending())}" if rounds else "none"

    def connect(self, ls_project: int, names, hostname, token) -> None:
        """Remember how to reach `ls_project` (the given client, else /setup's hostname and
        token) and write its queue fields in the background when they are out of date."""
        ls_client = self.client
        if ls_client is None and hostname and token:
            ls_client = LabelStudioClient(hostname, token)
        if ls_client is None or not ls_project:
            return
        self.connections[ls_project] = (ls_client, names)
        if self.synced.get(ls_project) != self.queue_version():
            threading.Thread(target=self.sync, args=(ls_project,), daemon=True).start()

    def sync(self, ls_project: int) -> None:
        with self._lock:
            if ls_project not in self.connections:
                return
            ls_client, names = self.connections[ls_project]
            version = self.queue_version()
            try:
                sync_queue_fields(ls_client, ls_project, self.project, self.index, names)
                self.synced[ls_project] = version
            except (LabelStudioError, OSError, ValueError) as err:
                log.warning("could not write the queue into Label Studio project %s: %s",
                            ls_project, err)

    def sync_all(self) -> None:
        for ls_project in list(self.connections):
            self.sync(ls_project)


@dataclasses.dataclass(frozen=True)
class BackendContext:
    """What the backend's routes work on (app.extensions["crc_jax_ml"])."""

    project: Project
    index: PathIndex
    predictions: Predictions
    answers: AnnotationAnswers
    queue: QueueSync
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
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        fail(400, "the body must be a JSON object")
    return data


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
    ls_project = int(str(data.get("project", "0")).split(".", 1)[0] or 0)
    ctx().queue.connect(ls_project, names, data.get("hostname"), data.get("access_token"))
    return jsonify({"model_version": ctx().predictions.version()})


@backend.post("/predict")
def predict():
    data = body()
    names = names_for(data.get("label_config"))
    tasks = data.get("tasks")
    if not isinstance(tasks, list):
        fail(400, "tasks must be a list")
    version, rows = ctx().predictions.rows()
    if rows is None:  # nothing trained yet: Label Studio stores no prediction
        return jsonify({"results": [], "model_version": version})
    results = []
    for task in tasks:
        url = (task.get("data") or {}).get(names.data_key, "") if isinstance(task, dict) else ""
        image, _ = ctx().index.locate(url)
        if image is None:  # not an image of this project: an empty prediction
            results.append({"result": [], "score": None, "model_version": version})
            continue
        row = rows[image]
        results.append({"result": label_studio.choice_result(names, row["predicted"]),
                        "score": float(row["confidence"]), "model_version": version})
    return jsonify({"results": results, "model_version": version})


def pairs(data: dict) -> list:
    """(annotation, task) pairs of an annotation webhook (one, or a bulk creation)."""
    annotations, tasks = data.get("annotation"), data.get("task")
    if isinstance(annotations, dict) and isinstance(tasks, dict):
        return [(annotations, tasks)]
    if isinstance(annotations, list) and isinstance(tasks, list):
        by_id = {t.get("id"): t for t in tasks if isinstance(t, dict)}
        return [(a, by_id.get(a.get("task"), {})) for a in annotations if isinstance(a, dict)]
    fail(400, "an annotation webhook needs 'annotation' and 'task'")


@backend.post("/webhook")
def webhook():
    c = ctx()
    data = body()
    action = data.get("action")
    project_info = data.get("project") if isinstance(data.get("project"), dict) else {}
    ls_project = int(project_info.get("id") or 0)
    if action == "START_TRAINING":
        if not c.runner.start(c.budget):
            return jsonify({"status": "ok", "detail": "a round is already running"}), 200
        return jsonify({"status": "ok", "detail": f"round started (budget {c.budget})"}), 201
    if action == "ANNOTATIONS_DELETED":
        ids = [a.get("id") for a in data.get("annotations") or [] if isinstance(a, dict)]
        return jsonify({"status": "ok", "undone": c.answers.delete(ls_project, ids)}), 200
    if action not in ANSWER_EVENTS:
        return jsonify({"status": "ok", "detail": f"{action!r} ignored"}), 200
    names = names_for(project_info.get("label_config"))
    results = []
    try:
        for annotation, task in pairs(data):
            results.append(c.answers.take(ls_project, annotation, task, names))
    except LabelConflict as err:
        fail(409, str(err))
    except ProjectError as err:
        fail(400, str(err))
    return jsonify({"status": "ok", "results": results}), 201


@backend.get("/crc/round")
def round_state():
    state = ctx().runner.state()
    state["model_version"] = ctx().predictions.version()
    state["pending"] = ctx().project.pending()
    return jsonify(state)


def create_app(project: Project, *, settings: RoundSettings = RoundSettings(), budget: int = 20,
               document_root: str | os.PathLike = "/", client: LabelStudioClient | None = None) -> Flask:
    """The ML backend for `project`. `client`: Label Studio's API for writing the queue
    fields after a round (default: the hostname and token Label Studio sends to /setup)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024  # webhooks carry whole tasks
    index = PathIndex(project.paths, project.classes, project.images_root, document_root)
    queue = QueueSync(project, index, client)
    app.extensions["crc_jax_ml"] = BackendContext(
        project=project, index=index, predictions=Predictions(project),
        answers=AnnotationAnswers(project, index), queue=queue, budget=budget,
        runner=RoundRunner(project, settings, after=queue.sync_all,
                           after_phase="writing the queue into Label Studio"))
    app.register_blueprint(backend)
    return app


def make_server(project: Project, *, host: str = "127.0.0.1", port: int = 9090,
                settings: RoundSettings = RoundSettings(), budget: int = 20,
                document_root: str | os.PathLike = "/", client: LabelStudioClient | None = None):
    """A threaded Werkzeug server for the ML backend (call .serve_forever(); .port)."""
    from werkzeug.serving import make_server as werkzeug_server

    sock = bind(host, port)
    app = create_app(project, settings=settings, budget=budget, document_root=Path(document_root),
                     client=client)
    app.config["BOUND_HOST"] = host
    server = werkzeug_server(host, sock.getsockname()[1], app, threaded=True, fd=sock.fileno())
    server.listening_socket = sock  # type: ignore[attr-defined]
    return server
