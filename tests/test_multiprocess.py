"""Two processes through jax.distributed give the one-process result, bit for bit.

Real multi-process runs on this machine: two `python -m experiments.main` processes, one
CPU device each, joined by jax.distributed (coordinator on 127.0.0.1, CPU collectives over
gloo), run a tiny digits config with random, entropy and CRC. They are compared with the
same config run by one process over as many devices (2 forced CPU devices): the same
journals byte for byte (acquisitions, labels, accuracies, losses, CRC's and entropy's
decision records), and one run directory written by process 0 alone (process 1 is
pointed at a directory of its own, which must stay absent). A run on another number of
devices is another computation: the train step's sums over the batch run in another
order, and early stopping can then keep another epoch (measured on the full digits
config: entropy's second pick differs by one image, not a float32 tie; docs/accelerators.md).
The fault tests kill one process mid-run: the other must end within a bounded time with
one line naming the lost process, and rerunning both resumes from the journal and the
in-training checkpoints, to the uninterrupted result.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = ["--config=digits", "--config.trials=1", "--config.al.steps=2",
        "--config.train.max_epochs=2", "--config.train.steps_per_epoch=3",
        "--config.train.patience=0", "--config.train.progress=False",
        "--config.dataset.train_size=300", "--config.dataset.test_size=101",
        "--config.strategies=('random','entropy','crc')"]
HEARTBEAT = 10  # seconds: how long the survivor may wait for a lost peer's heartbeat
TIMEOUT = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, fault: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CRC_JAX_FAULT"}
    flags = env.get("XLA_FLAGS", "")
    if devices > 1:
        flags = f"{flags} --xla_force_host_platform_device_count={devices}"
    env.update(XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
    if fault:
        env["CRC_JAX_FAULT"] = fault
    return env


def run_one(workdir: Path, *extra: str, devices: int = 1):
    """The same config in a single process, on `devices` forced CPU devices."""
    proc = subprocess.run([sys.executable, "-m", "experiments.main", *TINY, *extra,
                           f"--workdir={workdir}"], cwd=ROOT, env=_env(devices),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def start_two(workdirs, *extra: str, faults=("", "")):
    """Start processes 0 and 1 (one device each) of one jax.distributed run."""
    address = f"127.0.0.1:{free_port()}"
    procs = []
    for pid, (workdir, fault) in enumerate(zip(workdirs, faults)):
        cmd = [sys.executable, "-m", "experiments.main", *TINY, *extra, f"--workdir={workdir}",
               "--config.distributed.enabled=True",
               f"--config.distributed.coordinator_address={address}",
               "--config.distributed.num_processes=2", f"--config.distributed.process_id={pid}",
               f"--config.distributed.heartbeat_timeout={HEARTBEAT}"]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(1, fault), text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return procs


def finish(procs) -> list:
    """[returncode, stdout, stderr] of each process."""
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        out.append([proc.returncode, stdout, stderr])
    return out


def journals(workdir: Path) -> dict:
    return {p.relative_to(workdir).as_posix(): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(workdir.glob("*/trial_*/journal.jsonl"))}


def assert_same_run(one: dict, two: dict) -> None:
    """Same strategies, steps, acquisitions and labels; floats to float32 tolerance."""
    assert set(one) == set(two) and len(one) == 3               # random, entropy, crc
    for path in one:
        assert len(one[path]) == len(two[path]) == 3
        for a, b in zip(one[path], two[path]):
            assert set(a) == set(b), path
            for key in a:
                if key in ("seconds", "crc32"):
                    continue
                if key == "record":                             # CRC's candidate scores
                    _close(a[key], b[key], rtol=1e-3, where=f"{path} {key}")
                elif isinstance(a[key], float):
                    _close(a[key], b[key], rtol=1e-5, where=f"{path} {key}")
                else:
                    assert a[key] == b[key], (path, a["step"], key)


def _close(a, b, *, rtol, where):
    if where.endswith(".gap") and a is not None and b is not None:
        # (chosen - runner_up) / chosen: a difference of two scores that each agree to rtol,
        # so it agrees to 2 * rtol absolutely, not relatively (the two may be nearly equal)
        np.testing.assert_allclose(float(a), float(b), rtol=0, atol=2 * rtol, err_msg=where)
        return
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _close(a[k], b[k], rtol=rtol, where=f"{where}.{k}")
    elif isinstance(a, (list, float)):
        np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol,
                                   atol=1e-12, err_msg=where)
    else:
        assert a == b, where


@pytest.fixture(scope="module")
def reference_on_two_devices(tmp_path_factory) -> Path:
    """One process over the two devices the two processes have between them."""
    workdir = tmp_path_factory.mktemp("one_two_devices") / "run"
    run_one(workdir, devices=2)
    return workdir


def raw_journals(workdir: Path) -> dict:
    return {p.relative_to(workdir).as_posix(): p.read_bytes()
            for p in sorted(workdir.glob("*/trial_*/journal.jsonl"))}


@pytest.mark.slow
def test_two_processes_give_the_one_process_run_on_as_many_devices(reference_on_two_devices,
                                                                   tmp_path):
    ours, theirs = tmp_path / "p0", tmp_path / "p1"
    (r0, out0, err0), (r1, out1, err1) = finish(start_two([ours, theirs]))
    assert r0 == 0, err0[-4000:]
    assert r1 == 0, err1[-4000:]
    for k, err in enumerate((err0, err1)):
        assert re.search(r"devices: 2 cpu device\(s\) \[cpu:\d+, cpu:\d+\] \(cpu\) in 2 "
                         rf"processes \(this is process {k}\)", err), err[-2000:]
    one = raw_journals(reference_on_two_devices)
    assert len(one) == 3 and raw_journals(ours) == one          # byte for byte: no pick differs
    assert ((ours / "summary.csv").read_bytes()
            == (reference_on_two_devices / "summary.csv").read_bytes())
    for path, lines in journals(ours).items():     # what the journal says of each pick
        strategy = path.split("/")[0]
        for entry in lines[:-1]:                    # the last step acquires nothing
            flags = pick_flags(entry)
            assert set(flags) == ({"crc"} if strategy == "crc" else
                                  {"entropy"} if strategy == "entropy" else set()), flags
    # process 0 wrote the whole run directory; process 1 nothing at all
    for name in ("config.json", "summary.csv", ".lock", "report.md", "report.csv"):
        assert (ours / name).is_file(), name
    assert not theirs.exists()
    assert "| random" in out0 and "| random" not in out1     # the report table, printed once


def pick_flags(entry: dict) -> dict:
    """{strategy: tie} of a journal step: CRC's diagnostics, entropy's (and confidence's,
    margin's) decision record: whether float32 rounding could have changed the pick."""
    from crc_jax.acquisition.crc import diagnostics

    record = entry.get("record") or {}
    flags = {where: bool(d["tie"]) for where, d in diagnostics.collect(record)}
    flags.update({name: bool(value["decision"]["tie"]) for name, value in record.items()
                  if isinstance(value, dict) and isinstance(value.get("decision"), dict)})
    return flags


def wait_all(procs) -> tuple[list, list]:
    """Wait for every process; returns ([returncode, stdout, stderr] each, end times)."""
    ends = [None] * len(procs)
    deadline = time.monotonic() + TIMEOUT
    while None in ends and time.monotonic() < deadline:
        for i, proc in enumerate(procs):
            if ends[i] is None and proc.poll() is not None:
                ends[i] = time.monotonic()
        time.sleep(0.2)
    return finish(procs), ends


# 3 strategies x 3 AL steps x 2 epochs x 3 train steps: step 28 is entropy's AL step 1,
# epoch 2, after its epoch-1 checkpoint.
KILL_AT = "train_step:28"


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0], ids=["worker_lost", "coordinator_lost"])
def test_a_killed_process_ends_the_other_in_one_line_and_both_resume(reference_on_two_devices,
                                                                        tmp_path, victim):
    workdir = tmp_path / "run"  # one directory: orbax checkpoints need one both processes see
    extra = ["--config.train.checkpoint_every=1"]
    faults = ["", ""]
    faults[victim] = KILL_AT
    results, ends = wait_all(start_two([workdir, workdir], *extra, faults=faults))
    survivor = 1 - victim
    rc, _, err = results[survivor]
    assert results[victim][0] == 128 + 9, results[victim][2][-3000:]     # SIGKILL
    assert rc == 3, err[-4000:]
    # bounded: JAX declares the peer lost after HEARTBEAT s; allow for a loaded machine
    assert ends[survivor] - ends[victim] < HEARTBEAT + 45, ends
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    lost = "0 (the coordinator)" if victim == 0 else "1"
    assert errors == [err.strip().splitlines()[-1]]                       # one line, last
    assert errors[0].startswith(f"error: lost process {lost} of 2 "), errors
    assert f"process {survivor} stopped" in errors[0]
    assert "Traceback" not in err and "Check failure" not in err
    done = journals(workdir)
    assert len(done["random/trial_0/journal.jsonl"]) == 3
    assert len(done.get("entropy/trial_0/journal.jsonl", [])) == 1          # step 0 only

    # Rerun both: resume after the journal's last step, from the epoch-1 checkpoint.
    results, _ = wait_all(start_two([workdir, workdir], *extra))
    for pid, (rc, _, err) in enumerate(results):
        assert rc == 0, (pid, err[-4000:])
        assert "entropy trial 0: resuming after step 0" in err
        assert "resuming training from the checkpoint of epoch 1" in err
    assert_same_run(journals(reference_on_two_devices), journals(workdir))
    assert not list(workdir.glob("*/trial_*/checkpoints/step_*"))          # removed once done


# ------------------------------------- the helpers in two real processes (fast, make test)

HELPERS = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
pid, address, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(address, num_processes=2, process_id=pid)
from crc_jax.runtime import distributed, sharding
from crc_jax.run.checkpoint import TrainCheckpointer
from crc_jax.run.rundir import run_dir
from crc_jax.errors import RunDirError

out = {"writer": distributed.is_writer()}
out["broadcast"] = distributed.broadcast_json({"from": pid, "text": "\u00e9" * 300})
mesh = sharding.make_mesh()
x = np.arange(24, dtype=np.float32).reshape(12, 2) + 100 * pid   # differs: 0's must not leak
xs = sharding.shard_batch(mesh, x)                  # each process gives its device its rows
out["local_rows"] = [np.asarray(s.data).tolist() for s in xs.addressable_shards]
out["gathered"] = sharding.to_host(jax.jit(lambda a: a * 2)(xs)).tolist()
out["mapped"] = sharding.map_batches(lambda v, a: a.sum(-1) * v, np.float32(3), x,
                                     batch_size=5, mesh=mesh).tolist()
out["agree"] = distributed.agree(np.array([pid, 7])).tolist()


def fail_on_writer():
    raise RunDirError("raised on process 0 only")


try:
    distributed.from_writer(fail_on_writer, errors=(RunDirError,))
except RunDirError as err:
    out["error"] = str(err)
with run_dir(f"{workdir}/run_{pid}") as bind:
    bind(lambda rundir: rundir.bind_config({"a": 1}))
state = sharding.replicate(mesh, {"w": jnp.arange(4.0), "step": jnp.int32(5)})
ck = TrainCheckpointer(f"{workdir}/ckpt", every=1, fingerprint="f")
ck.save(1, state, {"v": state["w"] * 2}, {"best_epoch": 1})
distributed.barrier("saved")
restored, best, progress = ck.restore({"w": jnp.zeros(4), "step": jnp.int32(0)}, {"v": jnp.zeros(4)})
out["restored"] = [np.asarray(restored["w"]).tolist(), int(restored["step"]),
                   np.asarray(best["v"]).tolist(), progress["best_epoch"]]
ck.close(remove=True)
print("RESULT " + json.dumps(out), flush=True)
"""


def test_helpers_across_two_real_processes(tmp_path):
    """Broadcast, each process's part of a global batch, gathered outputs, agreement, an
    error on process 0 raised everywhere, the run directory and a checkpoint written once
    (by process 0) and restored by both."""
    address = f"127.0.0.1:{free_port()}"
    procs = [subprocess.Popen([sys.executable, "-c", HELPERS, str(pid), address, str(tmp_path)],
                              cwd=ROOT, env=_env(1), text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for pid in (0, 1)]
    outs = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.split("RESULT ", 1)[1]))
    x0 = np.arange(24, dtype=np.float32).reshape(12, 2)
    for pid, out in enumerate(outs):
        assert out["writer"] == (pid == 0)
        assert out["broadcast"] == {"from": 0, "text": "\u00e9" * 300}
        # rows 0-5 live on process 0's device, 6-11 on process 1's, each from its own copy
        mine = x0[6 * pid:6 * pid + 6] + 100 * pid
        np.testing.assert_array_equal(out["local_rows"], [mine])
        expect = np.concatenate([x0[:6], x0[6:] + 100])
        np.testing.assert_array_equal(out["gathered"], 2 * expect)
        # map_batches: chunks of 5, 5, 2 rows, each padded to an even count and split in
        # halves; a half's rows come from the copy of the process that owns that device
        mapped = []
        for start, n in ((0, 5), (5, 5), (10, 2)):
            half = (n + n % 2) // 2
            mapped += [3 * (x0[start + j].sum() + (200 if j >= half else 0)) for j in range(n)]
        np.testing.assert_allclose(out["mapped"], mapped)
        assert out["agree"] == [0, 7]
        assert out["error"] == "raised on process 0 only"
        np.testing.assert_array_equal(out["restored"][0], [0, 1, 2, 3])
        assert out["restored"][1:] == [5, [0, 2, 4, 6], 1]
    assert (tmp_path / "run_0" / "config.json").is_file() and not (tmp_path / "run_1").exists()
    assert not (tmp_path / "ckpt").exists()              # removed once, by process 0


# ------------------------------------------- fast checks of the pieces, in this process

# JAX's fatal messages as printed by jaxlib 0.10.2 (abridged): a worker missed its
# heartbeats (seen by process 0), and the coordinator vanished (seen by process 1).
WORKER_LOST = (
    "F1130 16:09:01.082300   14428 client.h:80] Terminating process because the JAX "
    "distributed service detected fatal errors. This most likely indicates that another task "
    "died; see the other task logs for more details. absl::Status: UNAVAILABLE: The following "
    "tasks are unhealthy (stopped sending heartbeats):\n1\nThe tasks have crashed.\n"
    "*** Check failure stack trace: ***\n    @     0x7feb2d540634  absl::LogMessage::SendToLog()\n")
COORDINATOR_LOST = (
    "F1130 16:06:29.905262   10006 client.h:80] Terminating process because the JAX "
    "distributed service detected fatal errors. absl::Status: UNAVAILABLE: Failed to send RPC "
    "to coordination service. Either the leader task was preempted/died/restarted unexpectedly "
    "or this task is experiencing network issues.\n*** Check failure stack trace: ***\n")


def test_the_lost_process_is_read_from_jax_fatal_messages():
    from experiments import supervisor

    assert supervisor.lost_process(WORKER_LOST) == "1"
    assert supervisor.lost_process(WORKER_LOST.replace(":\n1\n", ":\n3, 2\n")) == "2, 3"
    assert supervisor.lost_process("... UNAVAILABLE: Task 5 heartbeat timeout. This indicates"
                                   " ... coordination service") == "5"
    assert supervisor.lost_process(COORDINATOR_LOST) == "0 (the coordinator)"
    assert supervisor.lost_process("F1130 12:00:00.0 1 x.cc:1] Check failed: a < b") is None
    line = supervisor.peer_lost_line(COORDINATOR_LOST, process_id=1, num_processes=2)
    assert line.startswith("error: lost process 0 (the coordinator) of 2 ")
    assert "process 1 stopped" in line and "\n" not in line


def test_the_relay_copies_output_and_keeps_the_fatal_message():
    import io

    from experiments import supervisor

    out = io.BytesIO()
    relay = supervisor._Relay(out)
    text = b"I1130 log line\nprogress 1/3\rprogress 2/3\r" + WORKER_LOST.encode()
    for i in range(0, len(text), 7):                       # arbitrary chunk boundaries
        relay.feed(text[i:i + 7])
    relay.feed(b"more after the fatal line\n")
    relay.close()
    assert out.getvalue() == b"I1130 log line\nprogress 1/3\rprogress 2/3\r"
    assert relay.fatal.decode().startswith("F1130 16:09:01")
    assert relay.fatal.endswith(b"more after the fatal line\n")


def test_single_process_helpers_are_plain_calls(tmp_path):
    from crc_jax.runtime import distributed
    from crc_jax.errors import RunDirError
    from crc_jax.run.rundir import run_dir

    assert not distributed.is_multiprocess() and distributed.is_writer()
    assert distributed.broadcast_json({"a": [1, 2]}) == {"a": [1, 2]}
    assert distributed.from_writer(lambda: 7) == 7
    np.testing.assert_array_equal(distributed.agree(np.array([3, 1, 2])), [3, 1, 2])
    with run_dir(tmp_path / "r") as bind:
        bind(lambda rundir: rundir.bind_config({"x": 1}))
        assert json.loads((tmp_path / "r" / "config.json").read_text()) == {"x": 1}
        with pytest.raises(RunDirError, match="in use"):    # the lock is held in the block
            with run_dir(tmp_path / "r"):
                pass
    with pytest.raises(RunDirError, match="another config"):
        with run_dir(tmp_path / "r") as bind:
            bind(lambda rundir: rundir.bind_config({"x": 2}))
    with run_dir(tmp_path / "r") as bind:     # released after an error
        bind(lambda rundir: rundir.bind_config({"x": 1}))


def test_a_bad_value_in_a_two_process_run_is_one_line_and_exit_2(tmp_path):
    """Through the supervising parent, a config error stays one line, status 2, no files."""
    procs = start_two([tmp_path / "p0", tmp_path / "p1"], "--config.train.lr=-1")
    for rc, _out, err in finish(procs):
        assert rc == 2, err[-3000:]
        lines = [line for line in err.splitlines() if not line.startswith("I1")]  # absl info
        assert lines == ["error: config.train.lr: must be > 0, got -1.0"], err[-3000:]
    assert not (tmp_path / "p0").exists() and not (tmp_path / "p1").exists()


def test_a_jax_that_cannot_start_is_one_line_in_each_process_of_a_two_process_run(tmp_path):
    """JAX_PLATFORMS naming a platform this machine lacks: each process (and its
    supervising parent) ends in JAX's reason, one line, status 2, nothing written;
    jax.distributed.initialize must not start the backend before that check."""
    address = f"127.0.0.1:{free_port()}"
    env = dict(_env(1), JAX_PLATFORMS="cuda")
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.main", *TINY,
                               f"--workdir={tmp_path / f'p{pid}'}",
                               "--config.distributed.enabled=True",
                               f"--config.distributed.coordinator_address={address}",
                               "--config.distributed.num_processes=2",
                               f"--config.distributed.process_id={pid}"],
                              cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for pid in (0, 1)]
    for rc, _out, err in finish(procs):
        assert rc == 2, err[-3000:]
        lines = [line for line in err.splitlines() if not line.startswith("I1")]  # absl info
        assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
        assert lines[0].startswith("error: JAX could not start its backend: ") and \
            "JAX_PLATFORMS=cuda is set" in lines[0], lines[0]
    assert not (tmp_path / "p0").exists() and not (tmp_path / "p1").exists()
