"""Label Studio's formats: the tasks crc-jax exports, and the labels in Label Studio's exports.

Tasks (`image_tasks`): one per image of the project. Its image URL is Label Studio's
local-files URL, `/data/local-files/?d=<path relative to the document root>`, where the
document root is Label Studio's `LOCAL_FILES_DOCUMENT_ROOT` (its default is `/`). Data
fields Label Studio's data manager can sort and filter by:
    crc_status   "labeled", "skipped", "queued" or "" (unlabeled, not queued); the ML
                 backend also writes "ignored" on a task that is no image of the project
                 and whose annotation it could not apply, with the reason in crc_note
    crc_round    the round that queued the image (null when not queued)
    crc_rank     1, 2, ... in the queue's order for queued images without an answer; null
                 otherwise (Label Studio sorts numbers before nulls: ascending = the queue)
Labeled images carry their label as an annotation (not ground truth unless asked); once a
round has trained a model, every task carries its prediction with the model's confidence
as the score.

Exports read (`read_export`): JSON (tasks with annotations), JSON-MIN (one flat object per
annotated task, the answer keyed by the Choices control's name), CSV and TSV (the same
columns). Each returns (image URL, class) pairs, one per labeled task. The answers of a
task that disagree are refused, not settled by order. Without the labeling config, the
answer column of a flat export is `choice`, or else the only column that is neither Label
Studio's metadata, the image's data key nor a crc_* field (`answer_column`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

from crc_jax.project.label_studio_config import DEFAULT_NAMES, LabelingNames
from crc_jax.project.store import ProjectError

LOCAL_FILES = "/data/local-files/"


def model_version(round_entry: dict) -> str:
    """The name a round's model carries in Label Studio (a new name makes it ask again)."""
    return f"crc-jax-round-{round_entry['step']}"


def local_files_url(image: Path, document_root: Path) -> str:
    """`/data/local-files/?d=...` for an absolute image path under `document_root`."""
    relative = Path(os.path.normpath(image)).relative_to(document_root).as_posix()
    return LOCAL_FILES + "?d=" + urllib.parse.quote(relative, safe="/")


def choice_result(names: LabelingNames, label: str) -> list:
    """The `result` of an answer: one choice of the Choices control."""
    return [{"from_name": names.choice_name, "to_name": names.image_name, "type": "choices",
             "value": {"choices": [label]}}]


def queue_fields(project) -> dict:
    """{id: (round, rank)} for queued images without an answer, in the queue's order."""
    rounds = project.rounds()
    if not rounds:
        return {}
    step = rounds[-1]["step"]
    return {i: (step, rank) for rank, i in enumerate(project.pending(), start=1)}


def task_fields(answers: dict, queued: dict, image_id: int) -> dict:
    """The crc_* data fields of one image (see the module docstring)."""
    if image_id in answers:
        status = "labeled" if answers[image_id] is not None else "skipped"
    else:
        status = "queued" if image_id in queued else ""
    step, rank = queued.get(image_id, (None, None))
    return {"crc_status": status, "crc_round": step, "crc_rank": rank}


def ignored_fields(note: str | None, data: dict) -> dict:
    """The crc_* fields of a task that is no image of the project: "ignored" and the
    reason while one of its annotations is ignored; cleared once none is."""
    if note is not None:
        return {"crc_status": "ignored", "crc_note": note}
    if data.get("crc_status") == "ignored" or data.get("crc_note") is not None:
        return {"crc_status": "", "crc_note": None}
    return {}


def image_tasks(project, names: LabelingNames, document_root: Path, *,
                ground_truth: bool = False) -> tuple[list, dict]:
    """Every image of `project` as a Label Studio task; also a summary of what was written."""
    root = Path(os.path.realpath(document_root))
    images = Path(os.path.realpath(project.images_root))
    if not images.is_relative_to(root):
        raise ProjectError(f"--document-root {document_root}: the images folder {images} is not "
                           "inside it; Label Studio serves local files only under its "
                           "LOCAL_FILES_DOCUMENT_ROOT")
    answers, queued = project.answers(), queue_fields(project)
    predictions, version = {}, None
    trained = [e for e in project.rounds() if e.get("model")]
    if trained:
        version = model_version(trained[-1])
        predictions = {row["id"]: row for row in project.predict()}
    tasks = []
    for i, path in enumerate(project.paths):
        data = {names.data_key: local_files_url(images / path, root),
                **task_fields(answers, queued, i)}
        task: dict[str, Any] = {"data": data}
        if answers.get(i) is not None:
            task["annotations"] = [{"result": choice_result(names, answers[i]),
                                    "ground_truth": bool(ground_truth), "was_cancelled": False}]
        if i in predictions:
            task["predictions"] = [{"model_version": version,
                                    "score": float(predictions[i]["confidence"]),
                                    "result": choice_result(names, predictions[i]["predicted"])}]
        tasks.append(task)
    summary = {"tasks": len(tasks), "labeled": sum(v is not None for v in answers.values()),
               "queued": len(queued), "model_version": version}
    return tasks, summary


# -- reading Label Studio's exports -------------------------------------------------------

def _one_choice(value, where: str) -> str | None:
    """The class in a JSON-MIN/CSV cell: "cat", {"choices": ["cat"]}, or nothing."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        if len(value) > 1:
            raise ProjectError(f"{where}: {len(value)} choices in one answer; crc-jax takes one "
                               "class per image")
        value = value[0] if value else None
    if value is None or value == "":
        return None
    return str(value)


def _no_key(path: Path, key: str, what: str, keys) -> ProjectError:
    return ProjectError(f"{path}: no {what} {key!r}; the file has {', '.join(map(repr, keys))}; "
                        "give --label-config FILE (the Label Studio project's labeling config)")


def _list_of(record: dict, key: str, where: str) -> list:
    """record[key] as a list (missing or empty: []); another shape is refused, not skipped:
    answers in a file of the wrong shape would otherwise be lost without a word."""
    value = record.get(key) or []
    if not isinstance(value, list):
        raise ProjectError(f"{where}: {key!r} is a {type(value).__name__}, expected a list; "
                           "give Label Studio's JSON export as it was written")
    return value


def read_tasks(tasks: list, path: Path, names: LabelingNames | None) -> list:
    """(image URL, class) of every labeled task of Label Studio's JSON export."""
    use = names or DEFAULT_NAMES
    rows, from_names, annotated = [], set(), 0
    for number, task in enumerate(tasks, start=1):
        where = f"{path}: task {number}"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ProjectError(f"{where} is not a Label Studio task (an object with 'data')")
        if use.data_key not in task["data"]:
            raise _no_key(path, use.data_key, f"data key in task {number}:", task["data"])
        labels = set()
        for annotation in _list_of(task, "annotations", where):
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue
            annotated += 1
            for result in _list_of(annotation, "result", f"{where}, an annotation"):
                if not isinstance(result, dict) or result.get("type") != "choices":
                    continue
                if names is not None and result.get("from_name") != names.choice_name:
                    continue
                from_names.add(result.get("from_name"))
                label = _one_choice(result.get("value"), where)
                if label is not None:
                    labels.add(label)
        if len(labels) > 1:
            raise ProjectError(f"{where}: its answers disagree ({', '.join(sorted(labels))}); "
                               "settle them in Label Studio first")
        if labels:
            rows.append((task["data"][use.data_key], labels.pop()))
    if len(from_names) > 1:
        raise ProjectError(f"{path}: answers come from several Choices controls "
                           f"({', '.join(sorted(map(str, from_names)))}); give --label-config FILE")
    if annotated and not rows:
        raise ProjectError(f"{path}: {annotated} annotations, none answering the Choices control "
                           f"{use.choice_name!r}; give --label-config FILE (the project's config)")
    return rows


# Columns of Label Studio's JSON-MIN, CSV and TSV exports that are not an answer: its own
# (label_studio_sdk's converter) and the task data fields crc-jax writes.
EXPORT_METADATA = frozenset({"id", "annotator", "annotation_id", "created_at", "updated_at",
                             "lead_time", "agreement"})
CRC_FIELDS = frozenset({"crc_status", "crc_round", "crc_rank", "crc_note"})


def answer_column(keys: set, data_key: str, path: Path) -> str | None:
    """The column holding the answer when the labeling config is not given: "choice"
    (crc-jax's and the stock template's name), else the one column that is neither Label
    Studio's metadata, the image's data key nor a crc_* field. None: no answer column;
    several candidates are refused (which one is the answer is not known)."""
    if DEFAULT_NAMES.choice_name in keys:
        return DEFAULT_NAMES.choice_name
    others = sorted(keys - EXPORT_METADATA - CRC_FIELDS - {data_key})
    if len(others) > 1:
        raise ProjectError(f"{path}: the answer may be in any of the columns "
                           f"{', '.join(map(repr, others))}; give --label-config FILE (the "
                           "Label Studio project's labeling config) to name its Choices control")
    return others[0] if others else None


def read_flat(records: list, path: Path, names: LabelingNames | None) -> list:
    """(image URL, class) pairs of JSON-MIN / CSV / TSV records (dicts of columns)."""
    use = names or DEFAULT_NAMES
    if not records:
        return []
    keys = set().union(*(r.keys() for r in records))
    if use.data_key not in keys:
        raise _no_key(path, use.data_key, "image column", sorted(keys))
    column = use.choice_name if names is not None else answer_column(keys, use.data_key, path)
    if column is None or column not in keys:
        if "annotation_id" in keys:  # annotated rows whose answer we cannot find
            raise _no_key(path, use.choice_name, "answer column", sorted(keys))
        return []
    rows = []
    for number, record in enumerate(records, start=1):
        label = _one_choice(record.get(column), f"{path}: row {number}")
        if label is not None:
            rows.append((record.get(use.data_key) or "", label))
    return rows


def read_export(text: str, path: Path, names: LabelingNames | None) -> list:
    """(image URL, class) pairs from Label Studio's JSON, JSON-MIN, CSV or TSV export."""
    if text.lstrip().startswith(("[", "{")):
        try:
            loaded = json.loads(text)
        except ValueError as err:
            raise ProjectError(f"{path}: not valid JSON ({err})") from None
        records = [loaded] if isinstance(loaded, dict) else loaded
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise ProjectError(f"{path}: expected a list of Label Studio tasks (JSON objects)")
        if any(isinstance(r.get("data"), dict) for r in records):
            return read_tasks(records, path, names)
        return read_flat(records, path, names)
    first_line = text.split("\n", 1)[0]
    delimiter = "\t" if path.suffix.lower() == ".tsv" or "\t" in first_line else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    return read_flat(list(reader), path, names)
