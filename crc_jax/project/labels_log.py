"""The labels log: every answer an annotator gives, appended whole, fsynced, never rewritten.

One checksummed JSON line per event (crc_jax.durable):
    {"seq": n, "op": "label", "id": 17, "label": "cat", "source": "page", "time": ...}
    {"seq": n, "op": "skip",  "id": 17, ...}        unsure: kept out of later queues
    {"seq": n, "op": "undo",  "id": 17, ...}        forget the answer for image 17
The current labels are the log replayed. Writers (the labeling page's threads, `import`,
the Python API, another process) take an exclusive `flock` around read-check-append, so
two tabs answering one image cannot both be written: the second gets a `LabelConflict`
unless it gives the same answer, which is then a no-op (nothing is doubled). A last line
that fails its checksum (a crash mid-append) is ignored on reading and cut off by the next
writer; a whole last line without its newline is an answer like any other.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from crc_jax import durable

log = logging.getLogger(__name__)

OPS = ("label", "skip", "undo")


class LabelConflict(ValueError):
    """An answer that contradicts one already saved (another tab, another process)."""


class LabelsLog:
    """Append-only labels log at `path`; state() gives {id: label or None (skipped)}."""

    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        self._offset = 0
        self._needs_newline = False   # the last line read is whole but lacks its newline
        self._answers: dict[int, object] = {}  # id -> class name, or None when skipped
        self._events: list[dict] = []
        self._mutex = threading.RLock()  # threads of one process share this object

    # -- reading -------------------------------------------------------------------------
    def _catch_up(self, *, repair: bool) -> None:
        """Read the bytes appended since the last read (by us or another process)."""
        with self._mutex:
            if self.path.exists():
                self._read_new(repair=repair)

    def _read_new(self, *, repair: bool) -> None:
        try:
            lines = durable.read_lines(self.path, start=self._offset)
        except durable.CorruptLine as err:
            raise ValueError(f"{self.path}: a line near byte {err.offset} is corrupt "
                             f"({err.reason}); the log was left untouched") from None
        for event in lines.entries:
            self._apply(event)
        if lines.end != self._offset or lines.torn:
            self._needs_newline = lines.needs_newline   # new bytes decide
        elif self._needs_newline:   # nothing new since a read (without repair) that found the
            lines.needs_newline = True   # last line whole but without its newline: add it now
        if repair:
            if lines.torn:
                log.warning("%s: cutting a torn last line (%d bytes) left by a crash",
                            self.path, len(lines.torn))
            durable.repair(self.path, lines)
            self._needs_newline = lines.needs_newline
        self._offset = lines.end

    def _apply(self, event: dict) -> None:
        self._events.append(event)
        op, image = event["op"], int(event["id"])
        if op == "label":
            self._answers[image] = event["label"]
        elif op == "skip":
            self._answers[image] = None
        elif op == "undo":
            self._answers.pop(image, None)

    def refresh(self) -> None:
        self._catch_up(repair=False)

    def answers(self) -> dict:
        """{id: class name, or None for skipped}: the log replayed."""
        self.refresh()
        return dict(self._answers)

    def labels(self) -> dict:
        """{id: class name} of labeled images (skips left out)."""
        return {k: v for k, v in self.answers().items() if v is not None}

    def events(self) -> list[dict]:
        self.refresh()
        return list(self._events)

    # -- writing -------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Exclusive across threads and processes; yields with the state up to date."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._mutex, durable.file_lock(self.path.with_suffix(".lock")):
            self._catch_up(repair=True)
            yield self

    def _append(self, events: list[dict]) -> None:
        """Write events (inside `locked`), fsync, then apply them."""
        seq = len(self._events)
        lines = []
        for i, event in enumerate(events):
            lines.append(durable.encode_line({"seq": seq + i, "time": round(time.time(), 3),
                                              **event}))
        durable.append_synced(self.path, "".join(lines).encode(), fault_point="labels_append")
        self._catch_up(repair=False)

    def record(self, events: list[dict]) -> list[dict]:
        """Append answers atomically as a batch after checking them all; returns those written.

        An event: {"op": "label"|"skip"|"undo", "id": int, "label": str (label only),
        "source": str}. An answer equal to the saved one is dropped (no double); one that
        differs from a saved answer raises LabelConflict and nothing is written.
        """
        with self.locked():
            fresh, conflicts = [], []
            state = dict(self._answers)
            for event in events:
                if event["op"] not in OPS:
                    raise ValueError(f"unknown labels-log op {event['op']!r}")
                image = int(event["id"])
                new = event.get("label") if event["op"] == "label" else None
                if event["op"] == "undo":
                    if image in state:
                        state.pop(image)
                        fresh.append(event)
                    continue
                if image in state:
                    if state[image] != new:
                        conflicts.append((image, state[image], new))
                    continue
                state[image] = new
                fresh.append(event)
            if conflicts:
                image, old, new = conflicts[0]
                raise LabelConflict(
                    f"image {image} already has the answer {json.dumps(old)}, not "
                    f"{json.dumps(new)} (answered elsewhere, e.g. another tab); undo it first"
                    + (f"; {len(conflicts) - 1} more conflicts" if len(conflicts) > 1 else ""))
            if fresh:
                self._append(fresh)
            return fresh
