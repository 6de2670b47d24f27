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
is refused) and byte for byte the image in the pool (index.csv's sha256, checked on the
bytes served and again on every answer); at start the images folder must exist where
project.json says and hold the project's files. An image that cannot be shown is a 404
whose JSON error says why, and the page shows that reason. POSTs must be JSON from the
page's own origin (Origin or Sec-Fetch-Site checked) and the Host header must name this
server, so another web site cannot post labels or start rounds.

Flask (with Werkzeug's threaded server) is used rather than hand-written HTTP: it is
small, well kept, pure Python, and its routing and file serving (conditional requests,
MIME types, safe paths) are what this page needs.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import logging
from importlib import resources
from pathlib import Path
from typing import NoReturn

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, request, send_file

from crc_jax.project.api import Project
from crc_jax.project.labels_log import LabelConflict
from crc_jax.project.settings import RoundSettings
from crc_jax.project.store import ProjectError
from crc_jax.project.web import RoundRunner, bind, host_refused, json_object, serve

log = logging.getLogger(__name__)

BROWSER_FORMATS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MAX_DIRECT_BYTES = 2 * 1024 * 1024  # larger files are sent as a downscaled preview
PREVIEW_SIDE = 1024


@dataclasses.dataclass(frozen=True)
class ImageBytes:
    """A file the page may show: its path and the bytes read once, hashed and served."""

    path: Path
    data: bytes
    digest: str


def read_image(project: Project, root: Path, image_id: int) -> ImageBytes | str:
    """The bytes of image `image_id`'s file when the page can show it, else why not (one
    phrase). It can when the file is inside the images folder (no symlink out of it) and
    its bytes are those `init` put in the pool (index.csv's sha256): the bytes are read
    and hashed on every call, since a file replaced by another picture of the same size
    and modification time (`cp -p`, `rsync -a`) cannot be told apart otherwise. So no
    label goes on an image the annotator did not see. A file whose sha256 init did not
    record (a features project of an older crc-jax) is shown as it is."""
    path = (root / project.paths[image_id]).resolve()
    if not path.is_relative_to(root):
        return "its file lies outside the images folder (a symlink out of it)"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"its file is missing from {root}"
    except OSError as err:
        return f"its file cannot be read ({err.strerror or err})"
    digest = hashlib.sha256(data).hexdigest()
    if project.hashes[image_id] and digest != project.hashes[image_id]:
        return "its file has changed since init (other bytes than the image in the pool)"
    return ImageBytes(path=path, data=data, digest=digest)


def unchecked(project: Project) -> int:
    """How many images have no sha256 in index.csv (features projects of older versions)."""
    return sum(not h for h in project.hashes)


def check_images(project: Project) -> None:
    """At start: the images folder must be where project.json says, and hold at least one
    of the project's files (ProjectError, one line, else: a page that can show no image
    is of no use); queued images the page cannot show are named in a warning."""
    root = project.images_root
    if not root.is_dir():
        raise ProjectError(f"images folder {root} is missing (moved or deleted?): the page "
                           "would show no image; put it back, or set \"images\" in "
                           f"{project.dir / 'project.json'} to its new place")
    if not any((root / p).is_file() for p in project.paths):
        vectors = (" (a features project's pool holds vectors only: the page shows the "
                   "original files)" if project.holds_vectors else "")
        raise ProjectError(f"none of the {len(project)} image files of this project is in "
                           f"{root}{vectors}: put them back, or set \"images\" in "
                           f"{project.dir / 'project.json'} to where they are")
    if unchecked(project):
        log.warning("%s", notice(project))
    queued = project.pending()
    unshown = [(i, why) for i in queued
               if isinstance(why := read_image(project, root.resolve(), i), str)]
    if unshown:
        i, why = unshown[0]
        log.warning("%d of the %d images waiting in the queue cannot be shown, e.g. %s: %s; "
                    "the page takes no label for them (skip them)", len(unshown), len(queued),
                    project.paths[i], why)


def notice(project: Project) -> str:
    """What the page says above every image, or "" (nothing to say)."""
    missing = unchecked(project)
    if not missing:
        return ""
    return (f"index.csv records no sha256 for {missing} of the {len(project)} images (a "
            "features project made by an older crc-jax): the page shows those files as they "
            "are now and cannot check that they are the pictures the vectors were computed "
            "from")


PREVIEWS: dict[str, bytes] = {}   # sha256 of a file: its PNG preview (the newest 64)


def preview_png(shown: ImageBytes) -> bytes:
    """The image as an RGB PNG of at most PREVIEW_SIDE pixels a side."""
    from PIL import Image

    from crc_jax.project.scan import to_rgb

    if shown.digest not in PREVIEWS:
        with Image.open(io.BytesIO(shown.data)) as img:
            img.load()
            rgb = to_rgb(img)
        rgb.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
        out = io.BytesIO()
        rgb.save(out, format="PNG")
        while len(PREVIEWS) >= 64:
            PREVIEWS.pop(next(iter(PREVIEWS)), None)
        PREVIEWS[shown.digest] = out.getvalue()
    return PREVIEWS[shown.digest]


@dataclasses.dataclass(frozen=True)
class PageContext:
    """What the page's routes work on (app.extensions["crc_jax"])."""

    project: Project
    runner: RoundRunner
    budget: int
    images_root: Path
    notice: str


page = Blueprint("page", __name__)


def ctx() -> PageContext:
    return current_app.extensions["crc_jax"]


def fail(status: int, message: str) -> NoReturn:
    response = jsonify({"error": message})
    response.status_code = status
    abort(response)


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
            "notice": c.notice,
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
        fail(404, f"no image {image_id} (ids run 0..{len(project) - 1})")
    shown = read_image(project, root, image_id)
    if isinstance(shown, str):
        fail(404, unshown_message(project, image_id, shown))
    suffix = shown.path.suffix.lower()
    if suffix in BROWSER_FORMATS and len(shown.data) <= MAX_DIRECT_BYTES:
        # the bytes just hashed, not the file again; a neutral download name: the file's
        # own may hold a newline, not allowed in headers
        response = send_file(io.BytesIO(shown.data), download_name=f"image_{image_id}{suffix}",
                             etag=shown.digest, max_age=3600)
    else:  # TIFF, 16-bit, or a big photo: a PNG preview the browser shows quickly
        try:
            data = preview_png(shown)
        except (OSError, ValueError) as err:
            fail(404, unshown_message(project, image_id, f"its file cannot be decoded ({err})"))
        response = send_file(io.BytesIO(data), mimetype="image/png", etag=shown.digest,
                             max_age=3600)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def unshown_message(project: Project, image_id: int, why: str) -> str:
    return f"image {image_id} ({project.paths[image_id]}) cannot be shown: {why}"


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
            shown = read_image(project, ctx().images_root, i)
            if isinstance(shown, str):
                fail(409, f"{unshown_message(project, i, shown)}; it cannot be labeled here "
                          "(skip it, or put the file back)")
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


def create_app(project: Project, *, settings: RoundSettings | None = None,
               budget: int = 20) -> Flask:
    """The Flask app for `project`; rounds started from the page use `settings` (by
    default the project's: its kind's defaults and the kept options)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    settings = project.round_settings() if settings is None else settings
    app.extensions["crc_jax"] = PageContext(project=project,
                                            runner=RoundRunner(project, settings),
                                            budget=budget,
                                            images_root=project.images_root.resolve(),
                                            notice=notice(project))
    app.register_blueprint(page)
    return app


def make_server(project: Project, *, host: str = "127.0.0.1", port: int = 8765,
                settings: RoundSettings | None = None, budget: int = 20):
    """A threaded Werkzeug server for the page (call .serve_forever(); .port)."""
    check_images(project)
    sock = bind(host, port)
    return serve(create_app(project, settings=settings, budget=budget), host, sock)
