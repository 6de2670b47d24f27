"""What the labeling page (crc_jax.project.server) and the Label Studio ML backend
(crc_jax.project.ml_backend) share: a listening socket, the Host check against DNS
rebinding, reading a request's JSON object, the Werkzeug server over a Flask app, and the
runner of one labeling round at a time in a background thread."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from flask import Flask, current_app, request

from crc_jax.project.api import Project
from crc_jax.project.settings import RoundSettings
from crc_jax.project.store import ProjectError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


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


def host_refused() -> str | None:
    """Why this request's Host header is refused (it must name this server: DNS
    rebinding protection), or None."""
    host = request.host.rsplit(":", 1)[0] if not request.host.startswith("[") \
        else request.host.split("]")[0] + "]"
    if host not in LOCAL_HOSTS and host != current_app.config.get("BOUND_HOST"):
        return f"host {request.host!r} refused (DNS rebinding protection)"
    return None


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


def serve(app: Flask, host: str, sock: socket.socket):
    """A threaded Werkzeug server for `app` on the bound socket `sock` (call
    .serve_forever(); .port); requests must then name `host` or a local name."""
    from werkzeug.serving import make_server as werkzeug_server

    app.config["BOUND_HOST"] = host
    server = werkzeug_server(host, sock.getsockname()[1], app, threaded=True, fd=sock.fileno())
    server.listening_socket = sock  # type: ignore[attr-defined]  # keep it referenced: the server uses its descriptor
    return server
