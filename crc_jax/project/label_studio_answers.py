"""Label Studio annotations as answers in the labels log: their shape, and what each one
says about which image.

Every annotation is a source of its own, "label-studio:<project>:<annotation id>", written
with its `updated_at` as the revision, through the rules every front shares
(crc_jax.project.label_sources): an annotation's latest revision is its value; a deleted
annotation withdraws its value only; an image's answer is its latest live source.

What one annotation does (`AnnotationAnswers.take`):
  * a single choice of a project class: that class (status "saved", or "already saved"
    when this revision was written before);
  * cancelled (skipped in Label Studio): a skip when the image is in crc-jax's queue and
    no other source answers it ("skipped"); otherwise the annotation adds nothing;
  * anything else: nothing. An annotation whose task is no image of the project (another
    folder, an upload whose bytes match no project image), that answers no project class,
    or that adds nothing, is "ignored" with a reason; where it had given a value before,
    that value is withdrawn.
Shapes are checked first (`BadPayload`, one line naming the field): the ML backend
answers 400 for a request of the wrong shape and skips such a task when catching up.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from crc_jax.project.label_studio_config import LabelingNames

SOURCE_PREFIX = "label-studio:"


class BadPayload(ValueError):
    """A webhook or API reply of the wrong shape (the message names the field)."""


def source(ls_project: int, annotation_id) -> str:
    return f"{SOURCE_PREFIX}{ls_project}:{annotation_id}"


def project_prefix(ls_project: int) -> str:
    return f"{SOURCE_PREFIX}{ls_project}:"


def shown(value) -> str:
    """A short rendering of a bad value for an error line."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_annotation(annotation, where: str) -> dict:
    """`annotation` if it has the shape of a Label Studio annotation, else BadPayload."""
    if not isinstance(annotation, dict):
        raise BadPayload(f"{where} must be an object, got {shown(annotation)}")
    if not is_int(annotation.get("id")):
        raise BadPayload(f"{where}.id must be an integer, got {shown(annotation.get('id'))}")
    for key in ("updated_at",):
        if annotation.get(key) is not None and not isinstance(annotation[key], str):
            raise BadPayload(f"{where}.{key} must be a string, got {shown(annotation[key])}")
    result = annotation.get("result")
    if result is not None and not isinstance(result, list):
        raise BadPayload(f"{where}.result must be a list, got {shown(result)}")
    for k, item in enumerate(result or []):
        if not isinstance(item, dict):
            raise BadPayload(f"{where}.result[{k}] must be an object, got {shown(item)}")
        value = item.get("value")
        if value is not None and not isinstance(value, dict):
            raise BadPayload(f"{where}.result[{k}].value must be an object, got {shown(value)}")
        choices = (value or {}).get("choices")
        if choices is not None and not (isinstance(choices, list) and all(
                isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices)):
            raise BadPayload(f"{where}.result[{k}].value.choices must be a list of names, "
                             f"got {shown(choices)}")
    return annotation


def check_task(task, data_key: str, where: str) -> dict:
    """`task` if it has the shape of a Label Studio task, else BadPayload."""
    if not isinstance(task, dict):
        raise BadPayload(f"{where} must be an object, got {shown(task)}")
    if task.get("id") is not None and not is_int(task["id"]):
        raise BadPayload(f"{where}.id must be an integer, got {shown(task['id'])}")
    data = task.get("data")
    if not isinstance(data, dict):
        raise BadPayload(f"{where}.data must be an object, got {shown(data)}")
    if data.get(data_key) is not None and not isinstance(data[data_key], str):
        raise BadPayload(f"{where}.data.{data_key} must be a string (the image URL), got "
                         f"{shown(data[data_key])}")
    return task


def annotation_value(annotation: dict, names: LabelingNames) -> tuple[str, str | None]:
    """("label", class), ("skip", None), or ("none", why) for a checked annotation."""
    if annotation.get("was_cancelled"):
        return "skip", None
    picked: list = []
    for result in annotation.get("result") or []:
        if result.get("type") == "choices" and result.get("from_name") == names.choice_name:
            picked += (result.get("value") or {}).get("choices") or []
    if len(picked) == 1:
        return "label", str(picked[0])
    if picked:
        return "none", f"{len(picked)} choices in one answer; crc-jax takes one class per image"
    return "none", f"no answer to the Choices control {names.choice_name!r}"


class AnnotationAnswers:
    """Annotations written into a project's labels log. `locate(url, ls_project)` maps a
    task's image URL to (image id, how) or (None, why)."""

    def __init__(self, project, locate: Callable[[str, int], tuple]):
        self.project, self.locate = project, locate

    def take(self, ls_project: int, annotation: dict, task: dict, names: LabelingNames) -> dict:
        """Write one checked annotation's value; returns what happened (see the module)."""
        project, ident = self.project, annotation["id"]
        own = source(ls_project, ident)
        revision = {"revision": annotation["updated_at"]} if annotation.get("updated_at") else {}
        outcome = {"annotation": ident, "task": task.get("id")}
        image, why = self.locate(task["data"].get(names.data_key) or "", ls_project)
        if image is None:
            return {**outcome, "status": "ignored", "image": None,
                    "reason": f"not an image of this crc-jax project: {why}"}
        outcome["image"] = image
        kind, value = annotation_value(annotation, names)
        if kind == "label" and value not in project.classes:
            kind, value = "none", (f"{value!r} is not a class of the crc-jax project "
                                   f"({', '.join(project.classes)})")
        held = project.log.held(image)
        mine = held.get(own)
        if kind == "label":
            written = project.log.record([{"op": "label", "id": image, "label": value,
                                           "source": own, **revision}], strict=False)
            return {**outcome, "status": "saved" if written else "already saved"}
        others = any(h.live for s, h in held.items() if s != own)
        if kind == "skip" and not others and image in project.queue_ids():
            written = project.log.record([{"op": "skip", "id": image, "source": own,
                                           **revision}], strict=False)
            return {**outcome, "status": "skipped" if written else "already saved"}
        if kind == "skip":
            value = ("skipped in Label Studio; in crc-jax it is answered already"
                     if others else "skipped in Label Studio; it is not in crc-jax's queue")
        withdrawn = []
        if mine is not None and mine.live:
            withdrawn = project.log.record([{"op": "retract", "id": image, "source": own,
                                             **revision}], strict=False)
        return {**outcome, "status": "ignored", "reason": value,
                **({"withdrawn": True} if withdrawn else {})}

    def delete(self, ls_project: int, annotation_ids: list) -> list:
        """Withdraw the values these (deleted) annotations gave; returns the images."""
        live = self.project.log.live_sources(project_prefix(ls_project))
        events = [{"op": "retract", "id": image, "source": source(ls_project, ident)}
                  for ident in annotation_ids for image in live.get(source(ls_project, ident), [])]
        written = self.project.log.record(events, strict=False) if events else []
        return [int(e["id"]) for e in written]
