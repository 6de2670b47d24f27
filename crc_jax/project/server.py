"""The labeling page: a small Flask app over `Project`, served on 127.0.0.1.

Routes (JSON unless noted):
    GET  /                  the page (one HTML file, no assets from the internet)
    GET  /image/<id>        the original file of image <id> of the project
    GET  /api/state         classes, the queue with answers, counts, the round in progress
    POST /api/answer        {"id": 3, "label": "cat"} or {"id": 3, "skip": true}
    POST /api/undo          {"id": 3}
    POST /api/next-round    {"budget": 20}: trains and picks in a background thread
Every answer goes straight to the labels log (fsynced) before the reply. Safety: only
images of the project are served, by id (no paths from the client), and only files the
page can show are served or take a label: inside the images folder (a symlink out of it
is refused) and byte for byte the image in the pool (index.csv's sha256); at start the
images folder must exist where project.json says. POSTs must be JSON from the page's own origin (Origin or
Sec-Fetch-Site checked) and the Host header must name this server, so another web site
cannot post labels or start rounds.

Flask (with Werkzeug's threaded server) is used rather than hand-written HTTP: it is
small, well kept, pure Python, and its routing and file serving (conditional requests,
MIME types, safe paths) are what this page needs.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import io
import logging
import socket
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NoReturn

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request, send_file

from crc_jax.project.api import Project
from crc_jax.project.labels_log import LabelConflict
from crc_jax.project.settings import RoundSettings
from crc_jax.project.store import ProjectError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
BROWSER_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MAX_DIRECT_BYTES = 2 * 1024 * 1024  # larger files are sent as a downscaled preview
PREVIEW_SIDE = 1024


@functools.lru_cache(maxsize=4096)
def file_sha256(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file's bytes (mtime and size: the cache key)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def image_file(project: Project, root: Path, image_id: int):
    """The file of image `image_id`, when the page can show it: inside the images folder
    (no symlink out of it) and byte for byte the image `init` put in the pool (its sha256
    in index.csv). None otherwise: the page neither shows it nor takes a label for it, so
    no label goes on an image the annotator did not see."""
    path = (root / project.paths[image_id]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    try:
        stat = path.stat()
        digest = file_sha256(str(path), stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None
    return path if digest == project.hashes[image_id] else None


def check_images(project: Project) -> None:
    """At start: the images folder must be where project.json says (ProjectError, one line,
    else); queued images the page cannot show are named in a warning."""
    root = project.images_root
    if not root.is_dir():
        raise ProjectError(f"images folder {root} is missing (moved or deleted?): the page "
                           "would show no image; put it back, or set \"images\" in "
                           f"{project.dir / 'project.json'} to its new place")
    queued = project.pending()
    unshown = [i for i in queued if image_file(project, root.resolve(), i) is None]
    if unshown:
        log.warning("%d of the %d images waiting in the queue cannot be shown (missing, outside "
                    "%s, or changed since init), e.g. %s; the page takes no label for them "
                    "(skip them)", len(unshown), len(queued), root, project.paths[unshown[0]])


@functools.lru_cache(maxsize=64)
def preview_png(path: str, mtime: float) -> bytes:
    """The image as an RGB PNG of at most PREVIEW_SIDE pixels a side (mtime: cache key)."""
    from PIL import Image

    from crc_jax.project.scan import to_rgb

    with Image.open(path) as img:
        img.load()
        rgb = to_rgb(img)
    rgb.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
    out = io.BytesIO()
    rgb.save(out, format="PNG")
    return out.getvalue()


class RoundRunner:
    """Runs one labeling round at a time in a background thread and reports its phase.

    `start(n)` runs `before()` when given (phase `before_phase`: e.g. the ML backend
    catching up with Label Studio), then `project.next_batch(n, settings)`, unless a round
    is running (then False), then `after()` when given (phase `after_phase`: e.g. the ML
    backend writing the queue into Label Studio); `state()` is a JSON-ready snapshot. The
    round itself never touches the labels log, so a failed one only leaves its error to show.
    """

    def __init__(self, project: Project, settings: RoundSettings, *,
                 after: Callable[[], None] | None = None, after_phase: str = "",
                 before: Callable[[], None] | None = None, before_phase: str = ""):
        self.project, self.settings = project, settings
        self.after, self.after_phase = after, after_phase
        self.before, self.before_phase = before, before_phase
        self._lock = threading.Lock()
        self.running, self.phase, self.error, self.picked = False, "idle", "", 0
        self.started = self.finished = 0.0

    def start(self, n: int) -> bool:
        with self._lock:
            if self.running:
                return False
            self.running, self.phase, self.error, self.picked = True, "training and picking", "", 0
            self.started = time.time()
        threading.Thread(target=self._run, args=(n,), daemon=True).start()
        return True

    def _run(self, n: int) -> None:
        try:
            if self.before is not None:
                with self._lock:
                    self.phase = self.before_phase or "preparing"
                self.before()
                with self._lock:
                    self.phase = "training and picking"
            picked = self.project.next_batch(n, self.settings)
            with self._lock:
                self.picked, self.phase = len(picked), self.after_phase or "done"
            if self.after is not None:
                self.after()
                with self._lock:
                    self.phase = "done"
        except Exception as err:  # shown on the page; the labels log is untouched
            log.exception("round failed")
            with self._lock:
                self.error, self.phase = f"{type(err).__name__}: {err}", "failed"
        finally:
            with self._lock:
                self.running, self.finished = False, time.time()

    def state(self) -> dict:
        with self._lock:
            elapsed = (time.time() if self.running else self.finished) - self.started
            return {"running": self.running, "phase": self.phase, "error": self.error,
                    "picked": self.picked, "elapsed": round(elapsed, 1) if self.started else 0.0}


@dataclasses.dataclass(frozen=True)
class PageContext:
    """What the page's routes work on (app.extensions["crc_jax"])."""

    project: Project
    runner: RoundRunner
    budget: int
    images_root: Path


page = Blueprint("page", __name__)


def ctx() -> PageContext:
    return current_app.extensions["crc_jax"]


def fail(status: int, message: str) -> NoReturn:
    response = jsonify({"error": message})
    response.status_code = status
    abort(response)


def host_refused() -> str | None:
    """Why this request's Host header is refused (it must name this server: DNS
    rebinding protection), or None."""
    host = request.host.rsplit(":", 1)[0] if not request.host.startswith("[") \
        else request.host.split("]")[0] + "]"
    if host not in LOCAL_HOSTS and host != current_app.config.get("BOUND_HOST"):
        return f"host {request.host!r} refused (DNS rebinding protection)"
    return None


@page.before_request
def same_origin_only():
    refused = host_refused()
    if refused:
        fail(403, refused)
    if request.method != "POST":
        return
    origin = request.headers.get("Origin")
    if origin is not None and origin != request.host_url.rstrip("/"):
        fail(403, f"cross-origin request from {origin} refused")
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        fail(403, "cross-site request refused")
    if not request.is_json:
        fail(415, "send JSON (Content-Type: application/json)")


def json_object() -> tuple[dict | None, str]:
    """The request's JSON object, or (None, why not): not JSON, not an object, or nested
    deeper than the parser reads (a RecursionError, which must not become a 500)."""
    try:
        data = request.get_json(silent=True)
    except RecursionError:
        return None, "the JSON is nested too deeply"
    if not isinstance(data, dict):
        return None, "the body must be a JSON object"
    return data, ""


def body() -> dict:
    data, why = json_object()
    if data is None:
        fail(400, why)
    return data


def image_id(data: dict) -> int:
    n = len(ctx().project)
    value = data.get("id")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
        fail(400, f"id must be an image id in 0..{n - 1}, got {value!r}")
    return value


def page_state() -> dict:
    c = ctx()
    project = c.project
    answers = project.answers()
    queue = []
    for row in project.queue():
        i = int(row["id"])
        queue.append({"id": i, "path": row["path"], "predicted": row["predicted"],
                      "confidence": row["confidence"],
                      # null: not answered yet; "": skipped; else the class
                      "answer": (answers[i] or "") if i in answers else None})
    rounds = project.rounds()
    round_state = c.runner.state()
    trained = [e for e in rounds if not e.get("cold_start")]
    # A progress estimate for the page: the last trained round's duration.
    round_state["expected"] = trained[-1]["seconds"] if trained else None
    return {"classes": project.classes, "queue": queue, "budget": c.budget,
            "done": sum(q["answer"] is not None for q in queue), "total": len(queue),
            "labeled": sum(1 for a in answers.values() if a is not None),
            "rounds": len(rounds), "round": round_state}


@page.get("/")
def index():
    return Response(page_html(), mimetype="text/html")


@page.get("/image/<int:image_id>")
def image(image_id: int):
    project, root = ctx().project, ctx().images_root
    if not 0 <= image_id < len(project):
        abort(404)
    path = image_file(project, root, image_id)
    if path is None:
        abort(404)
    if path.suffix.lower() in BROWSER_FORMATS and path.stat().st_size <= MAX_DIRECT_BYTES:
        # a neutral download name: the file's own may hold a newline, not allowed in headers
        response = send_file(path, max_age=3600,
                             download_name=f"image_{image_id}{path.suffix.lower()}")
    else:  # TIFF, 16-bit, or a big photo: a PNG preview the browser shows quickly
        try:
            data = preview_png(str(path), path.stat().st_mtime)
        except (OSError, ValueError):
            abort(404)
        response = Response(data, mimetype="image/png")
        response.cache_control.max_age = 3600
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@page.get("/api/state")
def get_state():
    return jsonify(page_state())


@page.post("/api/answer")
def answer():
    project = ctx().project
    data = body()
    i = image_id(data)
    try:
        if data.get("skip") is True:
            project.skip(i, source="page")
        else:
            label = data.get("label")
            if label not in project.classes:
                fail(400, f"label must be one of {', '.join(project.classes)}, got {label!r}")
            if image_file(project, ctx().images_root, i) is None:
                fail(409, f"image {i} ({project.paths[i]}) cannot be shown: its file is "
                          "missing, outside the images folder, or changed since init; it "
                          "cannot be labeled here (skip it, or put the file back)")
            project.add_labels({i: label}, source="page")
    except LabelConflict as err:
        fail(409, str(err))
    except ProjectError as err:
        fail(400, str(err))
    return jsonify({"ok": True, "id": i})


@page.errorhandler(OSError)
def not_saved(err: OSError):
    """A write the file system refused (full, read-only): the answer was not saved."""
    where = f"{err.filename}: " if err.filename else ""
    response = jsonify({"error": f"not saved: {where}{err.strerror or err}"})
    response.status_code = 507 if err.errno == errno.ENOSPC else 500
    return response


@page.post("/api/undo")
def undo():
    i = image_id(body())
    ctx().project.undo(i, source="page")
    return jsonify({"ok": True, "id": i})


@page.post("/api/next-round")
def next_round():
    n = body().get("budget", ctx().budget)
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        fail(400, f"budget must be a positive integer, got {n!r}")
    if not ctx().runner.start(n):
        fail(409, "a round is already running")
    return jsonify({"ok": True}), 202


def page_html() -> str:
    return resources.files("crc_jax.project").joinpath("static/label.html").read_text("utf-8")


def create_app(project: Project, *, settings: RoundSettings = RoundSettings(),
               budget: int = 20) -> Flask:
    """The Flask app for `project`; rounds started from the page use `settings`."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    app.extensions["crc_jax"] = PageContext(project=project,
                                            runner=RoundRunner(project, settings),
                                            budget=budget,
                                            images_root=project.images_root.resolve())
    app.register_blueprint(page)
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or ProjectError naming the port when it is taken.

    SO_REUSEADDR: a page restarted right after a kill may bind while the old connections
    linger in the kernel (FIN_WAIT/TIME_WAIT, up to a minute); a port another process
    listens on is still refused."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as err:
        sock.close()
        reason = getattr(err, "strerror", None) or str(err)
        raise ProjectError(f"--port {port}: cannot listen on {host}:{port} ({reason}); "
                           "choose another port") from None
    sock.listen(64)
    return sock


def make_server(project: Project, *, host: str = "127.0.0.1", port: int = 8765,
                settings: RoundSettings = RoundSettings(), budget: int = 20):
    """A threaded Werkzeug server for the page (call .serve_forever(); .port)."""
    from werkzeug.serving import make_server as werkzeug_server

    check_images(project)
    sock = bind(host, port)
    app = create_app(project, settings=settings, budget=budget)
    app.config["BOUND_HOST"] = host
    server = werkzeug_server(host, sock.getsockname()[1], app, threaded=True, fd=sock.fileno())
    server.listening_socket = sock  # type: ignore[attr-defined]  # keep it referenced: the server uses its descriptor
    return server
