"""Fault injection for the crash- and interrupt-safety tests: act at a named point.

Set CRC_JAX_FAULT="point:n[:action]" and the n-th time the process reaches `point` it

  kill    SIGKILLs itself, exactly as a crash or an OOM kill would (the default);
  sigint  sends itself SIGINT, as a Ctrl-C landing at that instant would;
  pause   writes its pid into the file CRC_JAX_FAULT_READY names, then waits for a
          signal: a test sends its own SIGINT (or SIGKILL) at that instant, from outside,
          with no timing involved.

Points: train_step, checkpoint, acquisition, journal_append, report; for `crc-jax`
projects labels_append (halfway through a labels-log write) and project_save (after a
round's training, before its model and queue are saved). Inside every append of the
storage layer (crc_jax.durable.append_synced, FAULT = journal_append or labels_append):
FAULT.start (nothing written yet), FAULT.written (every byte written, not yet fsynced) and
FAULT.synced (fsynced, not yet returned); FAULT itself, with kill, writes half the line
first (the torn line a crash leaves). Unset (always, outside the tests) this is one
environment lookup.
"""

from __future__ import annotations

import collections
import os
import signal
from pathlib import Path

ENV = "CRC_JAX_FAULT"
READY_ENV = "CRC_JAX_FAULT_READY"
ACTIONS = ("kill", "sigint", "pause")
_reached: collections.Counter = collections.Counter()


def due(point: str) -> str | None:
    """The action set for this visit of `point` (the visit is counted), or None."""
    spec = os.environ.get(ENV)
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    if name != point:
        return None
    count, _, action = rest.partition(":")
    action = action or "kill"
    if action not in ACTIONS:
        raise ValueError(f"{ENV}={spec}: the action must be one of {', '.join(ACTIONS)}")
    _reached[point] += 1
    return action if _reached[point] == int(count or 1) else None


def armed(point: str) -> bool:
    """Whether reaching `point` now should kill the process (counts the visit); another
    action set for this visit (sigint, pause) is carried out here instead."""
    action = due(point)
    if action is None or action == "kill":
        return action == "kill"
    act(action)
    return False


def act(action: str) -> None:
    if action == "kill":
        kill_now()
    elif action == "sigint":
        os.kill(os.getpid(), signal.SIGINT)   # handled at the next bytecode, as a Ctrl-C
    elif action == "pause":
        pause()


def kill_now() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def pause() -> None:
    """Say this process is here (its pid, written whole into $CRC_JAX_FAULT_READY) and wait
    until a signal is handled (in the main thread, where Python handles signals)."""
    ready = Path(os.environ[READY_ENV])
    partial = ready.with_name(ready.name + ".partial")
    partial.write_text(f"{os.getpid()}\n")
    partial.replace(ready)     # the test sees the file whole or not at all
    signal.pause()


def maybe_kill(point: str) -> None:
    """Carry out the action set for this visit of `point`, if any (kill: SIGKILL)."""
    action = due(point)
    if action is not None:
        act(action)


def hook(point: str):
    """A callable that runs `maybe_kill(point)`, or None when no fault is set for `point`
    (so code that takes an optional per-step callback pays nothing outside the tests)."""
    spec = os.environ.get(ENV, "")
    if spec.partition(":")[0] != point:
        return None
    return lambda: maybe_kill(point)
