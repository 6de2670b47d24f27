"""How an image's answer follows from its sources: the one rule the page, `import`, the
Python API and Label Studio (webhook and catch-up) share.

A source is who gave an answer: "page", "api", "import:<file>", "init:<file>", or
"label-studio:<project>:<annotation id>" (one Label Studio annotation). Each source holds
at most one value per image, a class name or None (skipped, "unsure"), live or not:

  label / skip   the source's value for the image is this one, live, and the source is
                 now the image's latest (an update of an annotation replaces its value);
  retract        that source's value is withdrawn (a deleted annotation); other sources
                 stand;
  undo           every source of the image is withdrawn ("forget this image's answer",
                 the page's and the API's undo).

An image's answer is the value of its latest live source; without one it has no answer.
A line of a log written before sources were kept apart (no "source" field) is a source of
its own ("") and reads as it always did.

Whether an event is news (and so is written) or a repeat:
  * retract and undo: only when they withdraw something live;
  * a value: unless the source already holds it live. With a revision (a Label Studio
    annotation's `updated_at`), also only when the revision is newer than the source's
    last one written: a retried webhook, or a catch-up that reads the same revision again,
    writes nothing, even after an undo in crc-jax (a newer revision, saved again in Label
    Studio, does revive it); a stale revision never overwrites a newer one. A source last
    written without a revision (a log from before revisions) takes a new value only when
    it differs from its old one.
Fronts where a person answers in crc-jax (the page, the API, `import`) are strict: a value
that differs from the image's current answer is a conflict (another tab answered first;
undo it first), checked before anything is written. Label Studio is not strict: an
annotation made there is the latest answer, as its annotator sees it.
"""

from __future__ import annotations

import dataclasses
import datetime

OPS = ("label", "skip", "undo", "retract")
LEGACY = ""   # the source of a line written without one


@dataclasses.dataclass(frozen=True)
class Held:
    """One source's value for one image."""

    value: str | None       # class name; None: skipped
    live: bool
    seq: int                # position of the line that set it: later is newer
    revision: str | None    # a Label Studio annotation's updated_at, when given


def source_of(event: dict) -> str:
    return str(event.get("source", LEGACY))


def value_of(event: dict) -> str | None:
    return event.get("label") if event["op"] == "label" else None


def _instant(revision: str) -> tuple:
    """A revision as a comparable key: an ISO time (Label Studio's updated_at, with or
    without fractional seconds), else the string itself."""
    try:
        return (0, datetime.datetime.fromisoformat(revision.replace("Z", "+00:00")), "")
    except (ValueError, TypeError):
        return (1, None, str(revision))


def newer(revision: str, than: str) -> bool:
    a, b = _instant(revision), _instant(than)
    if a[0] == b[0] == 0:
        try:
            return a[1] > b[1]
        except TypeError:   # one naive, one aware: compare as text
            pass
    return str(revision) > str(than)


class Sources:
    """Every image's values by source, and the answers they give (see the module docstring)."""

    def __init__(self) -> None:
        self.by_image: dict[int, dict[str, Held]] = {}
        self.answers: dict[int, str | None] = {}

    def copy(self) -> Sources:
        other = Sources()
        other.by_image = {image: dict(held) for image, held in self.by_image.items()}
        other.answers = dict(self.answers)
        return other

    def _settle(self, image: int) -> None:
        live = [h for h in self.by_image.get(image, {}).values() if h.live]
        if live:
            self.answers[image] = max(live, key=lambda h: h.seq).value
        else:
            self.answers.pop(image, None)

    def apply(self, event: dict, seq: int) -> None:
        op, image, source = event["op"], int(event["id"]), source_of(event)
        if op not in OPS:
            raise ValueError(f"unknown labels-log op {op!r} (written by a newer crc-jax?)")
        held = self.by_image.setdefault(image, {})
        if op in ("label", "skip"):
            held[source] = Held(value_of(event), True, seq, event.get("revision"))
        elif op == "retract":
            if source in held:
                revision = event.get("revision") or held[source].revision
                held[source] = dataclasses.replace(held[source], live=False, revision=revision)
        else:   # undo
            for name, h in held.items():
                held[name] = dataclasses.replace(h, live=False)
        self._settle(image)

    def is_news(self, event: dict) -> bool:
        """Whether `event` changes anything (else it is a repeat and is not written)."""
        op, image, source = event["op"], int(event["id"]), source_of(event)
        prev = self.by_image.get(image, {}).get(source)
        if op == "undo":
            return image in self.answers
        if op == "retract":
            return prev is not None and prev.live
        value, revision = value_of(event), event.get("revision")
        if prev is None:
            return True
        if revision is not None:
            if prev.revision is None:
                return prev.value != value
            if not newer(revision, prev.revision):
                return False
        return not (prev.live and prev.value == value)

    def conflict(self, event: dict) -> tuple | None:
        """(image, current answer, new value) when a strict front's value contradicts the
        image's current answer; None otherwise."""
        if event["op"] not in ("label", "skip"):
            return None
        image = int(event["id"])
        if image in self.answers and self.answers[image] != value_of(event):
            return image, self.answers[image], value_of(event)
        return None

    def held(self, image: int) -> dict[str, Held]:
        return dict(self.by_image.get(image, {}))

    def live_sources(self, prefix: str = "") -> dict[str, list[int]]:
        """{source: images where it holds a live value}, for sources starting with `prefix`."""
        out: dict[str, list[int]] = {}
        for image, held in self.by_image.items():
            for source, h in held.items():
                if h.live and source.startswith(prefix):
                    out.setdefault(source, []).append(image)
        return out
