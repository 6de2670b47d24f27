"""Labels in and out: a CSV with header `path,label`, or a Label Studio JSON export.

Import: every row must name an image of the project (its path as in the queue, relative
to the images folder; for Label Studio, the task's image URL, matched by that relative
path, by a `?d=` local-files path ending in it, or by a unique file name, with Label
Studio's 8-hex upload prefix removed) and a class. Everything is checked before anything
is saved; the first problems are named in one message.
Export: `csv` (path,label) or `label-studio` (tasks with one choices annotation each).
"""

from __future__ import annotations

import csv
import json
import re
import urllib.parse
from pathlib import Path

from crc_jax import durable
from crc_jax.project.store import ProjectError

UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
FORMATS = ("csv", "label-studio")


class PathIndex:
    """The image paths and classes a labels file is checked against (a project, or a scan)."""

    def __init__(self, paths: list, classes: list):
        self.paths, self.classes = list(paths), list(classes)
        self._id_of = {p: i for i, p in enumerate(self.paths)}


def read_labels_file(path: Path) -> list[tuple[str, str]]:
    """(path, class name) pairs from a CSV (header path,label) or a Label Studio JSON file."""
    if not path.is_file():
        raise ProjectError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        return read_label_studio(text, path)
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames][:2] != ["path", "label"]:
        raise ProjectError(f"{path}: expected a CSV with header 'path,label', got "
                           f"{','.join(reader.fieldnames or []) or 'an empty file'}")
    rows = []
    for number, row in enumerate(reader, start=2):
        p, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not p or not label:
            raise ProjectError(f"{path}: line {number} needs both a path and a label")
        rows.append((p, label))
    return rows


def _choice(task: dict):
    """The class of a Label Studio task: the last annotation's first choice (or JSON-MIN)."""
    for annotation in reversed(task.get("annotations") or []):
        if annotation.get("was_cancelled"):
            continue
        for result in annotation.get("result") or []:
            choices = (result.get("value") or {}).get("choices")
            if choices:
                return str(choices[0])
    if isinstance(task.get("choice"), str):  # the JSON-MIN export
        return task["choice"]
    return None


def read_label_studio(text: str, path: Path) -> list[tuple[str, str]]:
    try:
        tasks = json.loads(text)
    except ValueError as err:
        raise ProjectError(f"{path}: not valid JSON ({err})") from None
    if isinstance(tasks, dict):
        tasks = [tasks]
    rows = []
    for number, task in enumerate(tasks, start=1):
        if not isinstance(task, dict):
            raise ProjectError(f"{path}: task {number} is not an object")
        data = task.get("data") if isinstance(task.get("data"), dict) else task
        image = data.get("image")
        label = _choice(task)
        if not isinstance(image, str):
            raise ProjectError(f"{path}: task {number} has no data.image")
        if label is not None:  # unannotated tasks carry no label: nothing to import
            rows.append((image, label))
    return rows


def _candidates(reference: str) -> list[str]:
    """Relative paths a Label Studio image URL may stand for, most specific first."""
    parsed = urllib.parse.urlparse(reference)
    query = urllib.parse.parse_qs(parsed.query)
    out = [reference]
    if "d" in query:
        out.append(query["d"][0])
    out.append(urllib.parse.unquote(parsed.path))
    return out


def resolve_rows(index: PathIndex, rows: list) -> dict:
    """{id: class name} for (path, class) rows; unknown files or classes raise, naming them."""
    project = index
    by_name: dict[str, list[int]] = {}
    for i, p in enumerate(project.paths):
        by_name.setdefault(Path(p).name, []).append(i)
    resolved, unknown_files, seen = {}, [], {}
    for reference, label in rows:
        image = None
        for cand in _candidates(reference):
            cand = cand.lstrip("/")
            if cand in project._id_of:
                image = project._id_of[cand]
                break
            for i, p in enumerate(project.paths):
                if cand.endswith("/" + p):
                    image = i
                    break
            if image is not None:
                break
        if image is None:
            name = UPLOAD_PREFIX.sub("", Path(urllib.parse.urlparse(reference).path).name)
            matches = by_name.get(name, [])
            image = matches[0] if len(matches) == 1 else None
        if image is None:
            unknown_files.append(reference)
            continue
        if image in seen and seen[image] != label:
            raise ProjectError(f"{reference!r} is given two labels: {seen[image]!r} and {label!r}")
        seen[image] = label
        resolved[image] = label
    if unknown_files:
        raise ProjectError(f"{len(unknown_files)} labeled files are not images of this project, "
                           f"e.g. {unknown_files[0]!r}; nothing was imported")
    known = set(project.classes)
    if known:
        bad = sorted({c for c in resolved.values()} - known)
        if bad:
            raise ProjectError(f"unknown class {bad[0]!r} (classes: {', '.join(project.classes)}); "
                               "nothing was imported")
    return resolved


def export(project, out: Path, fmt: str) -> int:
    """Write the labels to `out` (a new file); returns how many images carry a label."""
    if fmt not in FORMATS:
        raise ProjectError(f"--format: unknown {fmt!r}; allowed: {', '.join(FORMATS)}")
    if out.exists():
        raise ProjectError(f"--out {out}: already exists; choose a new file")
    labels = project.labels()
    ids = sorted(labels)
    if fmt == "csv":
        data = durable.csv_bytes(["path", "label"], [[project.paths[i], labels[i]] for i in ids])
    else:
        tasks = [{"id": i + 1,
                  "data": {"image": "/data/local-files/?d=" + urllib.parse.quote(
                      f"{project.images_root.as_posix().lstrip('/')}/{project.paths[i]}")},
                  "annotations": [{"result": [{"type": "choices", "from_name": "label",
                                               "to_name": "image",
                                               "value": {"choices": [labels[i]]}}]}]}
                 for i in ids]
        data = (json.dumps(tasks, indent=1) + "\n").encode()
    durable.write_atomic(out, data)
    return len(ids)
