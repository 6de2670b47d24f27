"""serve-ml in step with Label Studio: every annotation arrives, made while serve-ml listens
(its webhook) or not (catching up), and none lands on a picture the annotator did not see.

The project keeps `DIR/label_studio.json` (written whole, atomically):
    {"projects": {"3": {"seen": {"17": "<updated_at>", ...},    the cursor: each annotation's
                                                                 revision at the last catch-up
                        "ignored": {"18": {"task": 40, "reason": "..."}}}},
     "uploads": {"/data/upload/3/1a2b3c4d-img.png": "<sha256>"}}  uploaded files read

Catching up (`catch_up`): Label Studio's JSON export of the project's annotated tasks (one
request); each annotation whose revision differs from the cursor is taken as its webhook
would be (crc_jax.project.label_studio_answers), and each annotation the cursor or the
labels log knows that is gone from Label Studio is withdrawn (deleted while serve-ml was
down); then the cursor is saved. It runs when serve-ml starts (for the projects in the
file, given --label-studio-url), when a Label Studio project first calls /setup in this
process, and before each round. Webhooks and catch-ups run one at a time, so a catch-up's
snapshot never undoes a newer webhook, and both go through the same rules, so a webhook
that a catch-up has already applied (or the reverse) writes nothing.

An uploaded file ("/data/upload/...") is a project image only when its bytes are one
image's: the sha256 of the file Label Studio serves against index.csv's (for a project
whose index holds none, the image files as they are now). Its name is never used.

Ignored annotations are counted by `crc-jax status` (`ignored_count`); in Label Studio their
tasks carry the reason in the data field crc_note, and crc_status "ignored" when the task
is no image of the project (the data manager shows both as columns).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import posixpath
import threading
import time
import urllib.parse
from pathlib import Path

from crc_jax import durable
from crc_jax.project import label_studio, label_studio_config
from crc_jax.project.exchange import UPLOAD_PREFIX, UPLOADS, PathIndex
from crc_jax.project.label_studio_answers import (
    AnnotationAnswers, BadPayload, check_annotation, check_task, project_prefix)
from crc_jax.project.label_studio_client import (
    LabelStudioClient, LabelStudioError, sync_queue_fields)
from crc_jax.project.store import ProjectError

log = logging.getLogger(__name__)

STATE_FILE = "label_studio.json"


def read_state(path: Path) -> dict:
    empty: dict = {"projects": {}, "uploads": {}}
    if not path.exists():
        return empty
    try:
        data = json.loads(path.read_text())
        if not (isinstance(data, dict) and isinstance(data.get("projects"), dict)
                and isinstance(data.get("uploads"), dict)):
            raise ValueError("not crc-jax's layout")
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ProjectError(f"{path}: unreadable ({err}); it is crc-jax's record of Label "
                           "Studio: delete it, and serve-ml rebuilds it when Label Studio "
                           "next connects") from None
    return data


def ignored_count(directory: Path) -> int:
    """Label Studio annotations serve-ml could not apply (for `crc-jax status`)."""
    projects = read_state(Path(directory) / STATE_FILE)["projects"]
    return sum(len(p.get("ignored") or {}) for p in projects.values())


class SyncState:
    """DIR/label_studio.json in memory, saved whole (see the module docstring)."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / STATE_FILE
        self.data = read_state(self.path)
        self._lock = threading.RLock()

    def save(self) -> None:
        with self._lock:
            text = json.dumps(self.data, indent=1, sort_keys=True) + "\n"
            durable.write_atomic(self.path, text.encode())

    def _project(self, ls_project: int) -> dict:
        return self.data["projects"].setdefault(str(ls_project), {"seen": {}, "ignored": {}})

    def projects(self) -> list[int]:
        return [int(p) for p in self.data["projects"]]

    def add_project(self, ls_project: int) -> None:
        with self._lock:
            if str(ls_project) not in self.data["projects"]:
                self._project(ls_project)
                self.save()

    def seen(self, ls_project: int) -> dict:
        with self._lock:
            return dict(self._project(ls_project)["seen"])

    def set_seen(self, ls_project: int, seen: dict) -> None:
        with self._lock:
            self._project(ls_project)["seen"] = dict(seen)

    def ignored(self, ls_project: int) -> dict:
        with self._lock:
            return dict(self._project(ls_project)["ignored"])

    def set_ignored(self, ls_project: int, annotation, task, reason: str | None) -> bool:
        """Record (reason) or forget (None) an ignored annotation; whether it changed."""
        with self._lock:
            ignored, key = self._project(ls_project)["ignored"], str(annotation)
            entry = {"task": task, "reason": reason}
            if reason is None:
                return ignored.pop(key, None) is not None
            if ignored.get(key) == entry:
                return False
            ignored[key] = entry
            return True

    def note(self, ls_project: int, task) -> str | None:
        """The reason an annotation of `task` was ignored (the latest), or None."""
        with self._lock:
            entries = sorted(self._project(ls_project)["ignored"].items(),
                             key=lambda kv: int(kv[0]))
        reasons = [e["reason"] for _, e in entries if e.get("task") == task]
        return reasons[-1] if reasons else None

    def upload(self, url: str) -> str | None:
        return self.data["uploads"].get(url)

    def set_upload(self, url: str, digest: str) -> None:
        with self._lock:   # uploads are read by /predict too, beside a save
            self.data["uploads"][url] = digest


def file_digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return None


class Resolver:
    """A task's image URL -> (image id, how) or (None, why): local files by their full
    path (exchange.PathIndex), uploads by their bytes only."""

    def __init__(self, project, index: PathIndex, state: SyncState):
        self.project, self.index, self.state = project, index, state
        self._by_hash: dict[str, list[int]] | None = None
        self._lock = threading.Lock()

    def by_hash(self) -> dict[str, list[int]]:
        with self._lock:
            if self._by_hash is None:
                table: dict[str, list[int]] = {}
                root = self.project.images_root
                for i, (path, digest) in enumerate(zip(self.project.paths, self.project.hashes)):
                    digest = digest or file_digest(root / path)
                    if digest:
                        table.setdefault(digest, []).append(i)
                self._by_hash = table
            return self._by_hash

    def locate(self, url: str, client: LabelStudioClient | None) -> tuple[int | None, str]:
        path = urllib.parse.urlsplit(str(url).strip()).path
        if path.startswith(UPLOADS):
            return self._upload(str(url).strip(), path, client)
        return self.index.locate(url)

    def _upload(self, url: str, path: str, client) -> tuple[int | None, str]:
        """LabelStudioError when the file cannot be read now (tried again later)."""
        name = UPLOAD_PREFIX.sub("", posixpath.basename(urllib.parse.unquote(path)))
        digest = self.state.upload(url)
        if digest is None:
            if client is None:
                return None, ("a file uploaded to Label Studio; crc-jax matches an upload by its "
                              "bytes only and cannot read it without Label Studio's address "
                              "and token (serve-ml --label-studio-url)")
            digest = hashlib.sha256(client.file_bytes(url)).hexdigest()
            self.state.set_upload(url, digest)
        ids = self.by_hash().get(digest, [])
        if len(ids) == 1:
            return ids[0], "upload with the bytes of a project image"
        if ids:
            return None, (f"an uploaded file whose bytes are those of {len(ids)} images of the "
                          f"project ({', '.join(self.project.paths[i] for i in ids[:3])}); "
                          "label them in crc-jax")
        same_name = [p for p in self.project.paths if posixpath.basename(p) == name]
        hint = (f"; the project's {same_name[0]!r} has its name but is another picture"
                if same_name else "")
        return None, f"an uploaded file ({name!r}) whose bytes are no image of the project{hint}"


class LabelStudioSync:
    """The Label Studio projects serve-ml answers for, kept in step with the labels log."""

    def __init__(self, project, index: PathIndex, client: LabelStudioClient | None = None):
        self.project, self.client = project, client
        self.state = SyncState(project.dir)
        self.resolver = Resolver(project, index, self.state)
        self.answers = AnnotationAnswers(project, self.locate)
        self.clients: dict[int, LabelStudioClient] = {}   # from /setup, without --label-studio-url
        self.names: dict[int, label_studio_config.LabelingNames] = {}
        self.reports: dict[int, dict] = {}                 # the last catch-up of each project
        self.queue_synced: dict[int, str] = {}
        self._contacted: set[int] = set()                 # projects that called /setup
        self.lock = threading.RLock()        # webhooks and catch-ups, one at a time
        self._queue_lock = threading.Lock()

    def client_for(self, ls_project: int) -> LabelStudioClient | None:
        return self.clients.get(ls_project) or self.client

    def locate(self, url: str, ls_project: int) -> tuple[int | None, str]:
        return self.resolver.locate(url, self.client_for(ls_project))

    # -- connections -----------------------------------------------------------------------
    def connect(self, ls_project: int, names, hostname, token) -> None:
        """Label Studio's /setup: remember the project (and its address and token when no
        --label-studio-url was given); in the background, catch up on its first contact in
        this process and write its queue fields when they are out of date."""
        if not ls_project:
            return
        if self.client is None and hostname and token and ls_project not in self.clients:
            self.clients[ls_project] = LabelStudioClient(hostname, token)
        self.names[ls_project] = names
        if self.client_for(ls_project) is None:
            return
        self.state.add_project(ls_project)
        first = ls_project not in self._contacted
        self._contacted.add(ls_project)
        if first or self.queue_synced.get(ls_project) != self.queue_version():
            threading.Thread(target=self._contact, args=(ls_project, first), daemon=True).start()

    def _contact(self, ls_project: int, first: bool) -> None:
        if first:
            self.catch_up_safely(ls_project)
        if self.queue_synced.get(ls_project) != self.queue_version():
            self.sync_queue(ls_project)

    def start(self) -> threading.Thread:
        """Catch up, in the background, with every project serve-ml answered for before."""
        thread = threading.Thread(target=self.catch_up_all, daemon=True)
        thread.start()
        return thread

    # -- webhooks --------------------------------------------------------------------------
    def take(self, ls_project: int, pairs: list, names) -> list:
        """Checked (annotation, task) pairs of a webhook, written; their outcomes."""
        with self.lock:
            results = [self.answers.take(ls_project, a, t, names) for a, t in pairs]
            self._record_ignored(ls_project, results, {t.get("id"): t for _, t in pairs}, names)
            return results

    def delete(self, ls_project: int, annotation_ids: list) -> list:
        """Deleted annotations: their values withdrawn; returns the images."""
        with self.lock:
            undone = self.answers.delete(ls_project, annotation_ids)
            self._forget(ls_project, annotation_ids)
            return undone

    def _forget(self, ls_project: int, annotation_ids) -> None:
        ignored = self.state.ignored(ls_project)
        tasks = {ignored[str(i)]["task"] for i in annotation_ids if str(i) in ignored}
        for ident in annotation_ids:
            self.state.set_ignored(ls_project, ident, None, None)
        if tasks:
            self.state.save()
            self._write_notes(ls_project, tasks, {}, self.names.get(ls_project))

    def _record_ignored(self, ls_project: int, results: list, tasks: dict, names) -> None:
        touched = set()
        for r in results:
            reason = r.get("reason") if r["status"] == "ignored" else None
            if self.state.set_ignored(ls_project, r["annotation"], r["task"], reason):
                touched.add(r["task"])
        if touched:
            self.state.save()
            self._write_notes(ls_project, touched, tasks, names)

    def _write_notes(self, ls_project: int, task_ids, tasks: dict, names) -> None:
        """The crc_note (and, for tasks that are no image, crc_status) of these tasks, as
        the ignored annotations say now. Errors are logged: the next round's queue sync
        writes them again."""
        client = self.client_for(ls_project)
        if client is None:
            return
        for task_id in task_ids:
            if task_id is None:
                continue
            try:
                task = tasks.get(task_id) or client.task(task_id)
                data: dict = task["data"] if isinstance(task.get("data"), dict) else {}
                url = data.get((names or label_studio_config.DEFAULT_NAMES).data_key)
                image = self.locate(url, ls_project)[0] if isinstance(url, str) else None
                note = self.state.note(ls_project, task_id)
                if image is None:
                    fields = label_studio.ignored_fields(note, data)
                else:
                    fields = {"crc_note": note} if note or data.get("crc_note") else {}
                if any(data.get(k) != v for k, v in fields.items()):
                    client.update_task_data(task_id, {**data, **fields})
            except (LabelStudioError, OSError, ValueError) as err:
                log.warning("could not write the note of Label Studio task %s: %s", task_id, err)

    # -- catching up -----------------------------------------------------------------------
    def catch_up(self, ls_project: int) -> dict:
        """Apply what Label Studio holds that the labels log lacks (see the module)."""
        client = self.client_for(ls_project)
        if client is None:
            return {}
        with self.lock:
            started = time.time()
            config = client.project(ls_project).get("label_config")
            names = label_studio_config.parse(str(config or ""), f"Label Studio project "
                                              f"{ls_project}'s labeling config")
            self.names[ls_project] = names
            cursor, seen, present = self.state.seen(ls_project), {}, set()
            counts: collections.Counter = collections.Counter()
            results, tasks = [], {}
            for number, task in enumerate(client.annotated_tasks(ls_project), start=1):
                try:
                    check_task(task, names.data_key, f"task {number}")
                    annotations = task.get("annotations") or []
                    if not isinstance(annotations, list):
                        raise BadPayload(f"task {number}.annotations must be a list")
                    for annotation in annotations:
                        check_annotation(annotation, f"task {number}.annotations[]")
                except BadPayload as err:
                    log.warning("Label Studio project %s: %s; skipped", ls_project, err)
                    counts["malformed"] += 1
                    continue
                for annotation in annotations:
                    key, revision = str(annotation["id"]), annotation.get("updated_at") or ""
                    present.add(key)
                    if cursor.get(key) == revision:
                        seen[key] = revision
                        continue
                    try:
                        result = self.answers.take(ls_project, annotation, task, names)
                    except LabelStudioError as err:   # an upload unreadable now: next time
                        log.warning("Label Studio project %s, annotation %s: %s", ls_project,
                                    key, err)
                        counts["failed"] += 1
                        continue
                    seen[key] = revision
                    results.append(result)
                    tasks[task.get("id")] = task
                    counts[result["status"]] += 1
            prefix = project_prefix(ls_project)
            in_log = {s[len(prefix):] for s in self.project.log.live_sources(prefix)}
            gone = sorted((set(cursor) | in_log | set(self.state.ignored(ls_project))) - present)
            gone_ids = [int(g) for g in gone if g.isdigit()]
            withdrawn = self.answers.delete(ls_project, gone_ids)
            self.state.set_seen(ls_project, seen)
            self._record_ignored(ls_project, results, tasks, names)
            self._forget(ls_project, gone_ids)
            self.state.save()
            report = {"annotations": len(present), "saved": counts["saved"],
                      "skipped": counts["skipped"], "ignored": counts["ignored"],
                      "withdrawn": len(withdrawn), "failed": counts["failed"],
                      "malformed": counts["malformed"], "error": "",
                      "seconds": round(time.time() - started, 2), "time": round(time.time(), 3)}
            self.reports[ls_project] = report
            log.info("caught up with Label Studio project %s: %s", ls_project, report)
            return report

    def catch_up_safely(self, ls_project: int) -> None:
        """catch_up, its failure logged and reported (Label Studio down, a bad config)."""
        try:
            self.catch_up(ls_project)
        except (LabelStudioError, ProjectError, OSError, ValueError) as err:
            log.warning("could not catch up with Label Studio project %s: %s", ls_project, err)
            self.reports[ls_project] = {"error": str(err), "time": round(time.time(), 3)}

    def catch_up_all(self) -> None:
        for ls_project in self.state.projects():
            if self.client_for(ls_project) is not None:
                self.catch_up_safely(ls_project)

    # -- the queue fields --------------------------------------------------------------------
    def queue_version(self) -> str:
        rounds = self.project.rounds()
        return f"{len(rounds)}:{len(self.project.pending())}" if rounds else "none"

    def sync_queue(self, ls_project: int) -> None:
        """Write the crc_* fields into the project's tasks (errors logged, never raised)."""
        with self._queue_lock:
            client = self.client_for(ls_project)
            names = self.names.get(ls_project)
            if client is None or names is None:
                return
            version = self.queue_version()

            def locate(task):
                data = task.get("data") if isinstance(task.get("data"), dict) else {}
                url = data.get(names.data_key)
                try:
                    return self.locate(url, ls_project) if isinstance(url, str) else (None, "")
                except LabelStudioError as err:   # an upload unreadable now
                    return None, str(err)

            try:
                sync_queue_fields(client, ls_project, self.project, locate, names,
                                  lambda task: self.state.note(ls_project, task))
                self.queue_synced[ls_project] = version
            except (LabelStudioError, OSError, ValueError) as err:
                log.warning("could not write the queue into Label Studio project %s: %s",
                            ls_project, err)

    def sync_all(self) -> None:
        for ls_project in self.state.projects():
            self.sync_queue(ls_project)

    def before_round(self) -> None:
        """Catch up before a round trains, so it trains on every annotation."""
        self.catch_up_all()

