"""Run a multi-process worker under a thin parent that turns a lost peer into one line.

When one process of a jax.distributed run dies, JAX ends the others from C++: the
coordination service misses the dead process's heartbeats (or, when process 0 died, the
client loses the coordinator) and the client aborts its process with a fatal log message
and a stack trace, which Python cannot intercept. So with `distributed.enabled` the CLI
runs itself again as a child (the worker) and stays as a small parent: it relays the
worker's stderr and, when the worker is ended that way, prints one line naming the lost
process and exits with EXIT_PEER_LOST. The worker runs with C++ logging at FATAL only
(TF_CPP_MIN_LOG_LEVEL=3 unless set), so that fatal message is the only C++ output, and it
dies with its parent (PR_SET_PDEATHSIG on Linux): killing either kills the process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

from crc_jax.errors import EXIT_PEER_LOST

WORKER_ENV = "CRC_JAX_WORKER"
# A glog/absl FATAL line: "F1130 16:09:01.082300   14428 client.h:80] ..."
_FATAL = re.compile(rb"^F\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+:\d+\] ")
_TERMINATOR = re.compile(rb"[\r\n]")


def is_worker() -> bool:
    return os.environ.get(WORKER_ENV) == "1"


def lost_process(fatal: str) -> str | None:
    """Which process JAX's fatal message says was lost ("1", "0 (the coordinator)"), or
    None when the message is not about a lost peer."""
    if "distributed service" not in fatal and "coordination service" not in fatal:
        return None
    ids = re.findall(r"Task (\d+) heartbeat timeout", fatal)
    listed = re.search(r"stopped sending heartbeats\):\s*([\d,\s]+)", fatal)
    if listed:
        ids += re.findall(r"\d+", listed.group(1))
    if ids:
        return ", ".join(sorted(set(ids), key=int))
    if "leader task" in fatal or "Failed to send RPC to coordination service" in fatal:
        return "0 (the coordinator)"
    return "unknown"


def peer_lost_line(fatal: str, *, process_id: int, num_processes: int) -> str | None:
    """The one line printed when JAX ended this process because a peer was lost."""
    lost = lost_process(fatal)
    if lost is None:
        return None
    of = f" of {num_processes}" if num_processes > 0 else ""
    me = f"process {process_id}" if process_id >= 0 else "this process"
    return (f"error: lost process {lost}{of} (it stopped answering the jax.distributed "
            f"coordination service); {me} stopped. Rerun every process with the same "
            "command to resume from the journal")


class _Relay:
    """Copies the worker's stderr to ours until a FATAL line, which it keeps instead."""

    def __init__(self, out):
        self.out, self.pending, self.fatal = out, b"", b""

    def feed(self, chunk: bytes) -> None:
        if self.fatal:
            self.fatal += chunk
            return
        self.pending += chunk
        while (m := _TERMINATOR.search(self.pending)) is not None:
            piece, self.pending = self.pending[:m.end()], self.pending[m.end():]
            if _FATAL.match(piece):
                self.fatal, self.pending = piece + self.pending, b""
                return
            self.out.write(piece)
        self.out.flush()

    def close(self) -> None:
        if self.pending and not self.fatal:
            self.out.write(self.pending)
            self.out.flush()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def supervise(argv: list[str], *, process_id: int, num_processes: int) -> int:
    """Run `python -m experiments.main argv[1:]` as the worker; returns the exit status."""
    env = dict(os.environ, **{WORKER_ENV: "1"})
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    child = subprocess.Popen([sys.executable, "-m", "experiments.main", *argv[1:]], env=env,
                             stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal sends it to the worker too
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    relay = _Relay(sys.stderr.buffer)
    while chunk := os.read(child.stderr.fileno(), 1 << 16):
        relay.feed(chunk)
    relay.close()
    rc = child.wait()
    fatal = relay.fatal.decode(errors="replace")
    line = peer_lost_line(fatal, process_id=process_id, num_processes=num_processes)
    if line is not None:
        sys.stderr.write(line + "\n")
        return EXIT_PEER_LOST
    if fatal:
        sys.stderr.write(fatal)
    if rc < 0:
        sys.stderr.write(f"error: process {process_id} was killed by "
                         f"{signal.Signals(-rc).name}\n")
        return 128 - rc
    return rc


def await_peer_verdict(err: BaseException, *, timeout: float) -> None:
    """In the worker, after a collective failed: give JAX `timeout` seconds to report a
    lost peer (it ends this process, and the parent prints the line); otherwise print
    the failure as one line and exit. Never returns."""
    time.sleep(timeout)
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    sys.stderr.write(f"error: a collective between the processes failed and no process "
                     f"was reported lost within {timeout:.0f} s: {first}\n")
    sys.stderr.flush()
    os._exit(EXIT_PEER_LOST)
