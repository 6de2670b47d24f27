"""The little of Label Studio's REST API the ML backend uses: a project's labeling config,
its annotated tasks (to catch up on annotations made while the backend was down), an
uploaded file's bytes (to match it to a project image by content), listing tasks and
updating their data.

After a round, the ML backend writes each task's crc_status / crc_round / crc_rank data
fields (crc_jax.project.label_studio) so that sorting Label Studio's data manager by
crc_rank lists the new queue first. Only tasks whose fields change are updated.

Tokens: a legacy API token is sent as `Authorization: Token <key>`; a personal access
token (a JWT refresh token, three dot-separated parts) is first exchanged at
/api/token/refresh for an access token sent as `Bearer`.

HTTP goes through urllib rather than the official client, label-studio-sdk: the calls
here are a few lines each, while the SDK (2.1.2, the version the registry holds and Label
Studio 1.23.2 pins) brings 38 packages into the environment (pandas, OpenCV, nltk, black,
Faker, ...; about 410 MB) and pins numpy below 2.3, which would move the tested numpy.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request

from crc_jax.project import label_studio

log = logging.getLogger(__name__)


class LabelStudioError(RuntimeError):
    """A Label Studio API call that failed, with the URL and the status."""


class LabelStudioClient:
    """Calls to one Label Studio server (`url`, e.g. http://127.0.0.1:8080) with a token."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self._authorization: str | None = None

    def _auth_header(self) -> str:
        if self._authorization is None:
            if self.token.count(".") == 2:  # a personal access token: exchange it
                access = self._call("POST", "/api/token/refresh/", {"refresh": self.token},
                                    auth=False)["access"]
                self._authorization = f"Bearer {access}"
            else:
                self._authorization = f"Token {self.token}"
        return self._authorization

    def _open(self, method: str, path: str, body=None, *, auth: bool = True,
              retry: bool = True, limit: int | None = None) -> bytes:
        """The reply's bytes (at most `limit`: more is an error)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = self._auth_header()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read() if limit is None else response.read(limit + 1)
        except urllib.error.HTTPError as err:
            if err.code == 401 and auth and retry and self.token.count(".") == 2:
                self._authorization = None  # the short-lived access token expired: refresh
                return self._open(method, path, body, retry=False, limit=limit)
            detail = err.read()[:300].decode(errors="replace")
            raise LabelStudioError(f"{method} {self.url}{path}: HTTP {err.code} {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", None) or err
            raise LabelStudioError(f"{method} {self.url}{path}: {reason}") from None
        if limit is not None and len(raw) > limit:
            raise LabelStudioError(f"{method} {self.url}{path}: more than {limit} bytes")
        return raw

    def _call(self, method: str, path: str, body=None, *, auth: bool = True, retry: bool = True):
        raw = self._open(method, path, body, auth=auth, retry=retry)
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            raise LabelStudioError(f"{method} {self.url}{path}: the reply is not JSON") from None

    def project(self, project_id: int) -> dict:
        """A project's settings (its `label_config` among them)."""
        reply = self._call("GET", f"/api/projects/{int(project_id)}")
        if not isinstance(reply, dict):
            raise LabelStudioError(f"GET {self.url}/api/projects/{project_id}: not a project")
        return reply

    def annotated_tasks(self, project_id: int) -> list:
        """Every task of a project that has an annotation (cancelled ones included), with
        its annotations: Label Studio's JSON export, in one request."""
        path = f"/api/projects/{int(project_id)}/export?exportType=JSON&download_all_tasks=false"
        reply = self._call("GET", path)
        if not isinstance(reply, list):
            raise LabelStudioError(f"GET {self.url}{path}: expected a list of tasks")
        return reply

    def file_bytes(self, url: str, limit: int = 256 * 1024 * 1024) -> bytes:
        """The bytes of a file Label Studio serves (an upload: /data/upload/...)."""
        path = urllib.parse.urlsplit(url)
        return self._open("GET", urllib.parse.urlunsplit(("", "", path.path, path.query, "")),
                          limit=limit)

    def tasks(self, project_id: int, page_size: int = 100):
        """Every task of a Label Studio project (id and data), page by page."""
        page, seen = 1, 0
        while True:
            query = urllib.parse.urlencode({"project": project_id, "page": page,
                                            "page_size": page_size})
            batch = self._call("GET", f"/api/tasks?{query}")
            tasks = batch.get("tasks", []) if isinstance(batch, dict) else batch
            yield from tasks
            seen += len(tasks)
            total = batch.get("total", seen) if isinstance(batch, dict) else seen
            if not tasks or seen >= total:
                return
            page += 1

    def task(self, task_id: int) -> dict:
        reply = self._call("GET", f"/api/tasks/{int(task_id)}")
        if not isinstance(reply, dict):
            raise LabelStudioError(f"GET {self.url}/api/tasks/{task_id}: not a task")
        return reply

    def update_task_data(self, task_id: int, data: dict) -> None:
        self._call("PATCH", f"/api/tasks/{task_id}", {"data": data})


def sync_queue_fields(client: LabelStudioClient, ls_project: int, project, locate,
                      names, notes=None) -> int:
    """Write the crc_* fields of every task of `ls_project` that maps to an image of
    `project` (`locate(task) -> (image id or None, why)`); `notes(task id)`: the reason
    an annotation of that task was ignored, written as crc_note (tasks that map to no
    image then get crc_status "ignored"). Returns how many tasks changed."""
    answers, queued = project.answers(), label_studio.queue_fields(project)
    changed = 0
    for task in list(client.tasks(ls_project)):
        data = task.get("data") if isinstance(task.get("data"), dict) else {}
        image, _ = locate(task)
        note = notes(task.get("id")) if notes is not None else None
        if image is None:
            fields = label_studio.ignored_fields(note, data)
        else:
            fields = label_studio.task_fields(answers, queued, image)
            if note is not None or data.get("crc_note") is not None:
                fields["crc_note"] = note
        if all(data.get(k) == v for k, v in fields.items()):
            continue
        client.update_task_data(task["id"], {**data, **fields})
        changed += 1
    log.info("Label Studio project %s: crc fields of %d tasks updated", ls_project, changed)
    return changed
