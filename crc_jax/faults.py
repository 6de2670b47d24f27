"""Fault injection for the crash-safety tests: SIGKILL this process at a named point.

Set CRC_JAX_FAULT="point:n" and the n-th time the process reaches `maybe_kill(point)`
it kills itself with SIGKILL, exactly as a crash or an OOM kill would. Points:
train_step, checkpoint, acquisition, journal_append, report; and for `crc-jax` projects
labels_append (halfway through a labels-log write) and project_save (after a round's
training, before its model and queue are saved). Unset (always, outside the tests) this
is one environment lookup.
"""

from __future__ import annotations

import collections
import os
import signal

ENV = "CRC_JAX_FAULT"
_reached: collections.Counter = collections.Counter()


def armed(point: str) -> bool:
    """Whether reaching `point` now should kill the process (counts the visit)."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    name, _, count = spec.partition(":")
    if name != point:
        return False
    _reached[point] += 1
    return _reached[point] == int(count or 1)


def kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def maybe_kill(point: str) -> None:
    if armed(point):
        kill_now()


def hook(point: str):
    """A callable that runs `maybe_kill(point)`, or None when no fault is set for `point`
    (so code that takes an optional per-step callback pays nothing outside the tests)."""
    spec = os.environ.get(ENV, "")
    if spec.partition(":")[0] != point:
        return None
    return lambda: maybe_kill(point)
