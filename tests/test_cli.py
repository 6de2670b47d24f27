"""The command line: bad configs are one line and exit 2; a killed run resumes identically."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config=digits", "--config.trials=1", "--config.al.steps=2",
        "--config.train.max_epochs=3", "--config.train.steps_per_epoch=4",
        "--config.train.patience=0", "--config.train.progress=False"]


def run_main(args, workdir, **kwargs):
    return subprocess.run([sys.executable, "-m", "experiments.main", *args, f"--workdir={workdir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, **kwargs)


BAD = {
    "group size does not divide Q": (["--config.al.group_size=3"], "config.al.group_size"),
    "Q0 not divisible by classes": (["--config.al.initial_size=15"], "config.al.initial_size"),
    "budget larger than the pool": (["--config.al.steps=100000"], "config.al.steps"),
    "unknown dataset": (["--config.dataset.name=mnist"], "config.dataset.name"),
    "unknown model": (["--config.model.name=resnet50"], "config.model.name"),
    "unknown ssl": (["--config.ssl.name=mixmatch"], "config.ssl.name"),
    "unknown strategy": (["--config.strategies=('random','no_such_strategy')"], "config.strategies"),
    "negative query size": (["--config.al.query_size=-5"], "config.al.query_size"),
    "negative trials": (["--config.trials=-1"], "config.trials"),
    "bad watched split": (["--config.train.watch=train"], "config.train.watch"),
    "unknown override key": (["--config.al.budget=3"], "budget"),
    "unknown config name": (["--config=no_such_config"], "no_such_config"),
}


def test_bad_configs_give_one_line_and_exit_2(tmp_path):
    def attempt(item):
        name, (args, expected) = item
        base = [a for a in TINY if not (a.startswith("--config=") and args[0].startswith("--config="))]
        return name, expected, run_main(base + args, tmp_path / name.replace(" ", "_"))

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(attempt, BAD.items()))
    assert [name for name, _, _ in results] == list(BAD)   # every case ran, in order
    for name, expected, proc in results:
        err = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr[-2000:])
        assert len(err) >= 1 and err[-1].startswith("error:"), (name, proc.stderr[-2000:])
        assert expected in err[-1], (name, err[-1])
        assert not (tmp_path / name.replace(" ", "_") / "summary.csv").exists()


def test_unwritable_workdir_exit_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    proc = run_main(TINY, blocker / "run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: workdir")


def journal_entries(workdir):
    out = {}
    for path in sorted(Path(workdir).glob("*/trial_*/journal.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        for line in lines:
            line.pop("crc32")
        out[str(path.relative_to(workdir))] = lines
    return out


# out of `make test` (10-minute budget); a kill and resume stays there: tests/test_faults.py
@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_gives_identical_journals(tmp_path):
    args = TINY + ["--config.strategies=('entropy',)"]
    reference = run_main(args, tmp_path / "ref")
    assert reference.returncode == 0, reference.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    journal = killed_dir / "entropy" / "trial_0" / "journal.jsonl"
    ready = tmp_path / "paused"   # paused at the 2nd acquisition (step 1's), then SIGKILL
    env = dict(os.environ, CRC_JAX_FAULT="acquisition:2:pause", CRC_JAX_FAULT_READY=str(ready))
    proc = subprocess.Popen([sys.executable, "-m", "experiments.main", *args,
                             f"--workdir={killed_dir}"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for_file(ready, proc), "the run ended before its step 1 acquisition"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=600)
    finally:
        proc.kill()
    assert journal.read_text().count("\n") == 1

    resumed = run_main(args, killed_dir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after step" in resumed.stderr
    assert journal_entries(killed_dir) == journal_entries(tmp_path / "ref")
    assert ((killed_dir / "summary.csv").read_text()
            == (tmp_path / "ref" / "summary.csv").read_text())
    for name in ("report.md", "report.csv", "learning_curve.png"):
        assert (killed_dir / name).stat().st_size > 0


# out of `make test` (10-minute budget); tests/test_rundir.py refuses another config there
@pytest.mark.slow
def test_other_config_on_existing_workdir_is_refused(tmp_path):
    first = run_main(TINY + ["--config.strategies=('random',)", "--config.al.steps=0"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_main(TINY + ["--config.strategies=('random',)", "--config.al.steps=1"], tmp_path)
    assert second.returncode == 2
    assert "another config" in second.stderr.strip().splitlines()[-1]


def test_help_exits_0_listing_configs_strategies_fields_and_tuple_syntax():
    from crc_jax import acquisition

    proc = subprocess.run([sys.executable, "-m", "experiments.main", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    configs = sorted(p.stem for p in (ROOT / "experiments" / "configs").glob("*.py")
                     if p.stem not in ("base", "__init__"))
    for name in configs:
        first_line = (ROOT / "experiments" / "configs" / f"{name}.py").read_text().split(
            '"""')[1].strip().splitlines()[0]
        assert any(line.split()[:1] == [name] and first_line in line
                   for line in out.splitlines()), name
    for name in acquisition.names():
        assert name in out
    for field in ("al.query_size", "al.group_size", "dataset.data_dir", "train.max_epochs"):
        assert f"  {field} " in out
    assert "--config.strategies=\"('random','crc:group_size=10')\"" in out


def test_override_before_config_works_and_the_run_says_where_results_went(tmp_path):
    # --config.x=v written before --config=NAME: absl alone refuses this order.
    args = ["--config.trials=1", "--config.al.steps=0", "--config=digits",
            "--config.train.max_epochs=1", "--config.train.steps_per_epoch=1",
            "--config.train.progress=False", "--config.strategies=('random',)"]
    proc = run_main(args, tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-2] == f"results: {tmp_path / 'run'} (summary.csv, journals)"
    assert lines[-1] == "report:  " + ", ".join(
        str(tmp_path / "run" / n) for n in ("report.md", "report.csv", "learning_curve.png"))
    for name in ("summary.csv", "report.md", "report.csv", "learning_curve.png"):
        assert (tmp_path / "run" / name).is_file()
    report = subprocess.run([sys.executable, "-m", "experiments.report", str(tmp_path / "run"),
                             "--out", str(tmp_path / "rep")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    assert report.stdout.strip().splitlines()[-1].startswith(f"report:  {tmp_path / 'rep'}/")


@contextlib.contextmanager
def sigint_handled_in_children():
    """Children started in the block handle SIGINT as Python does by default, even when
    this process runs with SIGINT ignored (a background job of a non-interactive shell,
    which its children would inherit, so that Ctrl-C never reached them)."""
    previous = signal.getsignal(signal.SIGINT)
    if previous == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_for_file(path: Path, proc: subprocess.Popen, *, limit: float = 600) -> bool:
    """Wait until `path` exists (True) or `proc` ended (False); `limit` seconds only guard
    against a hang, they are no measure of speed."""
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            return path.exists()
        time.sleep(0.05)
    return True


def test_ctrl_c_prints_one_line_exits_130_and_the_rerun_resumes(tmp_path):
    """Ctrl-C sent from outside at a fixed instant, with no timing involved: the run
    pauses inside the journal append of step 0, after writing its line and before the
    fsync (CRC_JAX_FAULT=journal_append.written:1:pause) and says so in a file; then
    SIGINT. That step is kept whole, and the rerun resumes after it (an interrupt there
    used to cut the written line back). tests/test_durable.py covers every other instant
    of an append."""
    args = TINY + ["--config.strategies=('random',)"]
    workdir = tmp_path / "run"
    journal = workdir / "random" / "trial_0" / "journal.jsonl"
    ready = tmp_path / "paused"
    env = dict(os.environ, CRC_JAX_FAULT="journal_append.written:1:pause",
               CRC_JAX_FAULT_READY=str(ready))
    with sigint_handled_in_children():
        proc = subprocess.Popen([sys.executable, "-m", "experiments.main", *args,
                                 f"--workdir={workdir}"], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert wait_for_file(ready, proc), proc.communicate()[1][-3000:]
        assert ready.read_text() == f"{proc.pid}\n"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last == (f"interrupted: completed steps are kept; rerun the same command on "
                    f"{workdir} to resume")
    kept = journal.read_text()
    assert kept.count("\n") == 1 and json.loads(kept)["step"] == 0      # whole, and synced
    resumed = run_main(args, workdir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "random trial 0: resuming after step 0" in resumed.stderr
    lines = journal.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 1, 2]
    assert lines[0] + "\n" == kept                                        # not redone
