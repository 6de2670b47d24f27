"""The labels log: every answer an annotator gives, appended whole, fsynced, never rewritten.

One checksummed JSON line per event (crc_jax.durable):
    {"seq": n, "op": "label", "id": 17, "label": "cat", "source": "page", "time": ...}
    {"seq": n, "op": "skip",  "id": 17, "source": ...}    unsure: kept out of later queues
    {"seq": n, "op": "retract", "id": 17, "source": ...}  that source's answer withdrawn
    {"seq": n, "op": "undo",  "id": 17, ...}              forget every answer for image 17
A Label Studio annotation's lines also carry "revision" (its updated_at). The current
answers are the log replayed through crc_jax.project.label_sources (an image's answer is
its latest live source). Writers (the labeling page's threads, `import`, the ML backend,
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
from crc_jax.project import label_sources

log = logging.getLogger(__name__)

OPS = label_sources.OPS


class LabelConflict(ValueError):
    """An answer that contradicts one already saved (another tab, another process)."""


class LabelsLog:
    """Append-only labels log at `path`; state() gives {id: label or None (skipped)}."""

    def __init__(self, path: os.PathLike):
        self.path = Path(path)
        self._offset = 0
        self._needs_newline = False   # the last line read is whole but lacks its newline
        self._sources = label_sources.Sources()
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
        try:
            self._sources.apply(event, len(self._events))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{self.path}: line {len(self._events) + 1} cannot be read "
                             f"({err}); the log was left untouched") from None
        self._events.append(event)

    def refresh(self) -> None:
        self._catch_up(repair=False)

    def answers(self) -> dict:
        """{id: class name, or None for skipped}: the log replayed."""
        self.refresh()
        return dict(self._sources.answers)

    def labels(self) -> dict:
        """{id: class name} of labeled images (skips left out)."""
        return {k: v for k, v in self.answers().items() if v is not None}

    def events(self) -> list[dict]:
        self.refresh()
        return list(self._events)

    def held(self, image: int) -> dict:
        """{source: label_sources.Held} of one image: every source's value, live or not."""
        self.refresh()
        return self._sources.held(image)

    def live_sources(self, prefix: str = "") -> dict[str, list[int]]:
        """{source: images where it holds a live value}, for sources starting with `prefix`."""
        self.refresh()
        return self._sources.live_sources(prefix)

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

    def record(self, events: list[dict], *, strict: bool = True) -> list[dict]:
        """Append events atomically as a batch after checking them all; returns those written.

        An event: {"op": "label"|"skip"|"retract"|"undo", "id": int, "label": str (label
        only), "source": str, "revision": str (optional)}. A repeat (label_sources.Sources.
        is_news) is dropped: nothing is doubled. `strict` (a person answering in crc-jax):
        a value that differs from the image's current answer raises LabelConflict and
        nothing is written.
        """
        with self.locked():
            scratch = self._sources.copy()
            fresh: list[dict] = []
            conflicts: list[tuple] = []
            for event in events:
                if event["op"] not in OPS:
                    raise ValueError(f"unknown labels-log op {event['op']!r}")
                clash = scratch.conflict(event) if strict else None
                if clash:
                    conflicts.append(clash)
                    continue
                if scratch.is_news(event):
                    scratch.apply(event, len(self._events) + len(fresh))
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
