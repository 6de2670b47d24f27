"""The little of Label Studio's REST API the ML backend uses: list tasks, update task data.

After a round, the ML backend writes each task's crc_status / crc_round / crc_rank data
fields (crc_jax.project.label_studio) so that sorting Label Studio's data manager by
crc_rank lists the new queue first. Only tasks whose fields change are updated.

Tokens: a legacy API token is sent as `Authorization: Token <key>`; a personal access
token (a JWT refresh token, three dot-separated parts) is first exchanged at
/api/token/refresh for an access token sent as `Bearer`. HTTP goes through urllib.
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

    def _call(self, method: str, path: str, body=None, *, auth: bool = True, retry: bool = True):
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = self._auth_header()
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            if err.code == 401 and auth and retry and self.token.count(".") == 2:
                self._authorization = None  # the short-lived access token expired: refresh
                return self._call(method, path, body, retry=False)
            detail = err.read()[:300].decode(errors="replace")
            raise LabelStudioError(f"{method} {self.url}{path}: HTTP {err.code} {detail}") from None
        except urllib.error.URLError as err:
            raise LabelStudioError(f"{method} {self.url}{path}: {err.reason}") from None
        return json.loads(raw) if raw else None

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

    def update_task_data(self, task_id: int, data: dict) -> None:
        self._call("PATCH", f"/api/tasks/{task_id}", {"data": data})


def sync_queue_fields(client: LabelStudioClient, ls_project: int, project, index,
                      names) -> int:
    """Write the crc_* fields of every task of `ls_project` that maps to an image of
    `project` (through `index`, a exchange.PathIndex); returns how many tasks changed."""
    answers, queued = project.answers(), label_studio.queue_fields(project)
    changed = 0
    for task in list(client.tasks(ls_project)):
        data = task.get("data") or {}
        image, _ = index.locate(data.get(names.data_key, ""))
        if image is None:
            continue
        fields = label_studio.task_fields(answers, queued, image)
        if all(data.get(k) == v for k, v in fields.items()):
            continue
        client.update_task_data(task["id"], {**data, **fields})
        changed += 1
    log.info("Label Studio project %s: crc fields of %d tasks updated", ls_project, changed)
    return changed
