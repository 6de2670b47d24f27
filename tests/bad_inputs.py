"""The bad-input cases of docs/reliability.md: each one prepared, run through the command
line, and judged (one `error:` line, exit status 2, earlier results untouched).

`tests/test_bad_inputs.py` runs them and asserts every verdict; tests/reliability_doc.py
(`make docs`) runs them and writes the table, so the test
can check that the committed table is the one the code produces.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# The tiny run every case starts from: the digits config shrunk to seconds.
SETTINGS = {"trials": 1, "strategies": ("random",), "al.steps": 1, "train.max_epochs": 2,
            "train.steps_per_epoch": 2, "train.patience": 0, "train.progress": False,
            "train.checkpoint_every": 1}
JOURNAL = Path("random") / "trial_0" / "journal.jsonl"
# Run a module with every network request failing at once, as on a machine offline.
OFFLINE = ("import requests, runpy, sys\n"
           "def offline(self, url, *a, **k):\n"
           "    raise requests.exceptions.ConnectionError(f'no network (test): {url}')\n"
           "requests.Session.get = offline\n"
           "sys.argv[0] = 'main.py'\n"
           "runpy.run_module('experiments.main', run_name='__main__', alter_sys=True)\n")


def run_module(module: str, args, *, env=None, timeout=600, prelude: str = ""):
    """`python -m MODULE ARGS` (or the prelude, which runs it), captured; a command still
    running after `timeout` seconds is killed (its outcome then says so)."""
    head = ["-c", prelude] if prelude else ["-m", module]
    command = [sys.executable, *head, *map(str, args)]
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              encoding="utf-8", errors="replace", timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        def text(data):
            return (data or b"").decode("utf-8", "replace") if isinstance(data, bytes) else data or ""
        return subprocess.CompletedProcess(command, -9, text(err.stdout),
                                           text(err.stderr) + f"\n(killed after {timeout} s)")


def run_main(args, workdir, *, env=None, timeout=600):
    """`python -m experiments.main ARGS --workdir=WORKDIR`, captured."""
    return run_module("experiments.main", [*args, f"--workdir={workdir}"], env=env,
                      timeout=timeout)


def cli_args(settings: dict, config: str = "digits") -> list[str]:
    """The command-line overrides that give `config` + settings."""
    return [f"--config={config}"] + [f"--config.{k}={v!r}" if isinstance(v, tuple)
                                     else f"--config.{k}={v}" for k, v in settings.items()]


def make_config(settings: dict):
    """The config the CLI builds from `cli_args(settings)`, in process."""
    from experiments.configs.digits import get_config

    from experiments.configs.base import set_fields

    return set_fields(get_config(), settings)


def snapshot(directory: Path) -> dict:
    """relative path -> bytes of every file under `directory` but lock files."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


def write_npz(path: Path, x_train, y_train, x_test, y_test, num_classes=10, **extra) -> Path:
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             num_classes=num_classes, **extra)
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def names_kept(result: dict) -> list[str]:
    """The folder holds the same names as before (lock and marker files included)."""
    after = sorted(p.name for p in result["workdir"].iterdir())
    return [] if after == sorted(result["before"]) else [f"now holds {after}"]


def _journal_with_index(workdir: Path, index: int) -> None:
    """Step 0's line re-written, with a valid checksum, to acquire `index` first."""
    from crc_jax import durable

    lines = (workdir / JOURNAL).read_text().splitlines(keepends=True)
    entry = durable.decode_line(lines[0])
    entry["acquired"][0] = index
    lines[0] = durable.encode_line(entry)
    (workdir / JOURNAL).write_text("".join(lines))


def build_cases(root: Path) -> tuple[list[dict], object]:
    """Prepare every bad input; returns the cases and a lock to hold while they run.

    A case: name, given (how, for the table), module, args, workdir, expect (a regex the
    error line must match), existing (whether it acts on an earlier run's directory) and,
    optionally, env and prelude."""
    import jax

    from crc_jax.data import embedded
    from crc_jax import config as config_lib
    from crc_jax.run import loop, resume
    from crc_jax.run.rundir import RunDir
    from experiments import report

    x_train, y_train, x_test, y_test = embedded.digits()
    order = np.random.default_rng(1).permutation(len(x_train))  # not the 'digits' pool order
    x_train, y_train = x_train[order], y_train[order]
    good = write_npz(root / "good.npz", x_train, y_train, x_test, y_test)
    settings = dict(SETTINGS, **{"dataset.name": "npz", "dataset.data_dir": str(good)})

    # Earlier results: a finished run on the good file, one on another data set, one of CRC;
    # each marked as experiments.main marks the run directories it makes.
    base = root / "base"
    other_data = root / "other_data"
    crc_run = root / "crc_run"
    for workdir, changes in ((base, settings), (other_data, {"dataset.name": "digits"}),
                             (crc_run, {"dataset.name": "digits", "strategies": ("crc",)})):
        config = make_config(dict(SETTINGS, **changes))
        loop.run(config, workdir, config_lib.validate(config))
        (workdir / report.RUN_MARKER).write_text("experiments.main\n")

    cases = []

    def workdir_of(name):
        return root / re.sub(r"[^A-Za-z0-9]+", "_", name)

    def existing(name, given, expect, *, data_file=None, prepare=None, extra=(),
                 module="experiments.main", args=None, copy=base, **more):
        workdir = workdir_of(name)
        if copy:
            shutil.copytree(copy, workdir)
        case_settings = dict(settings)
        if data_file is not None:  # the run's data file was later replaced by a bad one
            case_settings["dataset.data_dir"] = str(data_file)
            config_json = workdir / "config.json"
            bound = json.loads(config_json.read_text())
            bound["dataset"]["data_dir"] = str(data_file)
            config_json.write_text(json.dumps(bound, indent=2, sort_keys=True))
        if prepare is not None:
            prepare(workdir)
        if args is None:
            args = cli_args(case_settings) + list(extra) + [f"--workdir={workdir}"]
        cases.append(dict(name=name, given=given, module=module, args=args(workdir)
                          if callable(args) else args, workdir=workdir, expect=expect,
                          existing=True, **more))

    def fresh(name, given, expect, extra, *, base_args=None, module="experiments.main",
              **more):
        workdir = workdir_of(name)
        args = (cli_args(settings) if base_args is None else base_args) + list(extra)
        if module == "experiments.main":
            args.append(f"--workdir={workdir}")
        cases.append(dict(name=name, given=given, module=module, args=args, workdir=workdir,
                          expect=expect, existing=False, **more))

    def left_nothing(result):
        """The run stopped after claiming its folder, before binding config.json: the
        folder it made (marker, lock file) is gone."""
        return [f"left behind: {result['workdir']}"] if result["workdir"].exists() else []

    def bad_npz(name, given, expect, **arrays):
        files = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                     num_classes=10)
        files.update(arrays)
        path = root / f"{re.sub(r'[^A-Za-z0-9]+', '_', name)}.npz"
        np.savez(path, **files)
        fresh(name, given, expect, [f"--config.dataset.data_dir={path}"])

    # --- configs, data directories, training
    fresh("unknown data set name", "`--config.dataset.name=cifar11` (no such TFDS set)",
          r"config\.dataset\.name: 'cifar11' is not one of", ["--config.dataset.name=cifar11"])
    empty = root / "empty_dir"
    empty.mkdir()
    fresh("data_dir without prepared data",
          "`--config.dataset.name=cifar10 --config.dataset.data_dir=<empty dir>`",
          r"holds no prepared 'cifar10'.*tfds build cifar10",
          ["--config.dataset.name=cifar10", f"--config.dataset.data_dir={empty}"])
    tfds_home = root / "tfds_home"
    tfds_home.mkdir()
    fresh("no network for the TFDS download",
          "`--config=svhn_mt`, TFDS_DATA_DIR an empty folder, every network request failing",
          r"could not download 'svhn_cropped'.*tfds build svhn_cropped --data_dir=DIR.*"
          r"--config\.dataset\.data_dir=DIR", [], base_args=["--config=svhn_mt"],
          env={"TFDS_DATA_DIR": str(tfds_home)}, prelude=OFFLINE, check=left_nothing)
    fresh("mock data too small for a smoke run", "`--config=svhn_mt --config.smoke=True "
          "--mock_data=8`", r"--mock_data=8 is too small.*config\.dataset\.test_size=64.*"
          r"use --mock_data=\d+ or more", [], base_args=["--config=svhn_mt",
                                                         "--config.smoke=True", "--mock_data=8"])
    fresh("diverging training", "`--config.train.optimizer=sgd --config.train.lr=1e30`",
          r"non-finite training loss at step \d+ \(epoch \d+\)",
          ["--config.train.optimizer=sgd", "--config.train.lr=1e30"], may_bind=True)

    # --- strategy options: refused before anything is loaded or written
    for spec, expect in (
            ("crc:group_size=7", r"group_size 7 must divide the budget \(10\) \(al\.query_size\)"),
            ("crc:group_size=0", r"group_size must be a positive integer, got 0"),
            ("crc:group_size=5.0", r"group_size must be a positive integer, got 5\.0"),
            ("crc:subset=bogus", r"subset must be 'last', 'all'"),
            ("crc:max_groups=abc", r"max_groups must be a positive integer, got 'abc'"),
            ("entropy:foo=1", r"entropy has no option 'foo'")):
        fresh(f"strategy option {spec}", f"`--config.strategies=\"('random','{spec}')\"`",
              r"config\.strategies: '" + re.escape(spec) + "': .*" + expect,
              [f"--config.strategies=('random','{spec}')"],
              base_args=cli_args({k: v for k, v in settings.items() if k != "strategies"}))

    # --- your own pool (.npz)
    bad_npz("pixels 0-255 as floats", "x_train scaled 0-255, float32", r"npz train: x_train "
            r"holds pixel values in \[0, 255\]; images must lie in \[0, 1\]",
            x_train=x_train * 255)
    bad_npz("complex pixels", "x_train as complex64", r"npz train: x_train holds complex "
            "values", x_train=x_train.astype(np.complex64))
    bad_npz("test images of another shape", "x_test cropped to 7x7 (x_train 8x8)",
            r"npz test: x_test holds inputs of shape \(7, 7, 1\), but x_train's are "
            r"\(8, 8, 1\)", x_test=x_test[:, :7, :7])
    keep = y_train != 3
    bad_npz("a class without examples", "every class-3 image removed from the train split",
            r"npz train: no examples of class 3 \(of 10\)", x_train=x_train[keep],
            y_train=y_train[keep])
    bad_npz("num_classes 0", "num_classes=0", r"num_classes must be an integer >= 2, got 0",
            num_classes=0)
    bad_npz("num_classes an array", "num_classes=[10, 10]",
            r"num_classes must be a single value, got an array of shape \(2,\)",
            num_classes=np.array([10, 10]))
    bad_npz("num_classes 10.7", "num_classes=10.7",
            r"num_classes must be an integer >= 2, got 10\.7", num_classes=10.7)
    bad_npz("pickled object array", "y_train saved as a Python-object array",
            r"array y_train cannot be read without unpickling", y_train=y_train.astype(object))
    bad_npz("scalar x_train", "x_train=0.5 (a scalar)", r"npz train: x_train must hold N "
            r"inputs.*got shape \(\)", x_train=np.float32(0.5))

    # --- earlier results: bad data files, run directories, journals, checkpoints
    x_nan = x_train.copy()
    x_nan[5, 3, 3, 0] = np.nan
    existing("NaN in the images",
             "the run's .npz replaced by one with `x_train[5]` holding a NaN",
             r"npz train: non-finite input value \(NaN or inf\) in example 5",
             data_file=write_npz(root / "nan.npz", x_nan, y_train, x_test, y_test))
    x_inf = x_test.copy()
    x_inf[7, 0, 0, 0] = np.inf
    existing("inf in the test images",
             "the run's .npz replaced by one with `x_test[7]` holding +inf",
             r"npz test: non-finite input value \(NaN or inf\) in example 7",
             data_file=write_npz(root / "inf.npz", x_train, y_train, x_inf, y_test))
    y_bad = y_train.copy()
    y_bad[11] = 10
    existing("label out of range",
             "the run's .npz replaced by one with `y_train[11] = 10` (10 classes)",
             r"npz train: labels must lie in \[0, 10\), got range \[0, 10\]",
             data_file=write_npz(root / "label.npz", x_train, y_bad, x_test, y_test))
    existing("empty split", "the run's .npz replaced by one with 0 test images",
             r"npz test: empty split",
             data_file=write_npz(root / "empty.npz", x_train, y_train, x_test[:0], y_test[:0]))

    existing("journal from another data set",
             "the trial's journal.jsonl replaced by that of a run on `dataset.name=digits`",
             r"journal\.jsonl: written by another config",
             prepare=lambda w: shutil.copy(other_data / JOURNAL, w / JOURNAL))
    existing("config.json deleted, rerun with another config",
             "config.json deleted, then the command rerun with `--config.train.lr=0.01`",
             r"journal\.jsonl: written by another config",
             prepare=lambda w: (w / "config.json").unlink(), extra=["--config.train.lr=0.01"])
    existing("journal index outside the pool",
             "step 0's journal line rewritten, with a valid checksum, to acquire index 99999",
             r"step 0 records an acquisition this pool cannot replay",
             prepare=lambda w: _journal_with_index(w, 99999))
    existing("journal.jsonl is a folder", "the trial's journal.jsonl replaced by a folder",
             r"journal\.jsonl: cannot be read as a journal",
             prepare=lambda w: ((w / JOURNAL).unlink(), (w / JOURNAL).mkdir()))
    existing("config.json truncated", "config.json cut to its first 40 bytes",
             r"config\.json: unreadable",
             prepare=lambda w: (w / "config.json").write_bytes(
                 (w / "config.json").read_bytes()[:40]))
    existing("config.json empty", "config.json emptied", r"config\.json: unreadable",
             prepare=lambda w: (w / "config.json").write_text(""))
    existing("config.json not an object", "config.json holding `[1, 2]`",
             r"config\.json: holds list", prepare=lambda w: (w / "config.json").write_text(
                 "[1, 2]"))

    def plant_foreign_checkpoint(workdir):
        # The state a kill right after step 0's journal line leaves: one line, no summary.
        lines = (workdir / JOURNAL).read_text().splitlines(keepends=True)
        (workdir / JOURNAL).write_text(lines[0])
        (workdir / "summary.csv").unlink()
        # ... plus, where step 1 will look for its checkpoint, one of another model.
        other = make_config(dict(settings, **{"model.width": 8}))
        setup = loop.build_setup(other)
        state = setup.algorithm.init_state(jax.random.PRNGKey(0), setup.pool_x[:1])
        ckpt = resume.make_checkpointer(other, "random", 0, 1, workdir / "random" / "trial_0")
        ckpt.save(1, state, setup.algorithm.eval_variables(state),
                  {"best_epoch": 1, "best_accuracy": 0.5, "history": [], "global_step": 2})
        ckpt.close()

    existing("checkpoint from another model",
             "journal cut back to step 0 (as a kill leaves it), and a checkpoint of "
             "`model.width=8` put where step 1 resumes from",
             r"checkpoint from another config or model", prepare=plant_foreign_checkpoint)

    def corrupt_journal(workdir):
        text = (workdir / JOURNAL).read_text()
        first, rest = text.split("\n", 1)
        digit = re.search(r'"test_accuracy":0\.(\d)', first)
        flipped = str((int(digit.group(1)) + 1) % 10)
        first = first[:digit.start(1)] + flipped + first[digit.end(1):]
        (workdir / JOURNAL).write_text(first + "\n" + rest)

    existing("corrupt journal line", "one digit of the journal's first line changed on disk",
             r"journal\.jsonl: line 1 is corrupt \(checksum mismatch\)", prepare=corrupt_journal)
    existing("workdir in use", "the run directory locked by another live process",
             r"is in use by another process")

    # --- the other commands
    existing("figures into a finished run", "`python -m experiments.figures moons --workdir "
             "<a finished run>`", r"not empty and not made by experiments\.figures moons",
             module="experiments.figures", args=lambda w: ["moons", f"--workdir={w}"])
    fresh("report on a missing directory", "`python -m experiments.report <no such dir>`",
          r"no such run directory", [], base_args=[str(root / "no_such_run")],
          module="experiments.report")

    def garble_summary(workdir):
        path = workdir / "summary.csv"
        lines = path.read_text().splitlines(keepends=True)
        path.write_text(lines[0] + "random,0,one,20,0.5\n" + "".join(lines[1:]))

    existing("report on a malformed summary.csv",
             "`python -m experiments.report DIR`, summary.csv with a step `one`",
             r"summary\.csv: line 2 is malformed", prepare=garble_summary,
             module="experiments.report", args=lambda w: [str(w)])

    # --- output folders holding files the command did not write: refused, nothing touched
    def users_folder(workdir):
        workdir.mkdir()
        (workdir / "summary.csv").write_text("my,own,numbers\n1,2,3\n")
        (workdir / "report.md").write_text("# My notes\n\nNot made by crc_jax.\n")

    existing("report --out a folder of the user's", "`python -m experiments.report RUN --out "
             "DIR`, DIR holding the user's own report.md and summary.csv",
             r"--out .*: not empty and not made by experiments\.report",
             module="experiments.report", prepare=users_folder, copy=False,
             args=lambda w: [str(base), "--out", str(w)])
    existing("report RUN --out another run", "`python -m experiments.report RUN --out "
             "OTHER_RUN` (another finished run)",
             r"--out .*: not empty and not made by experiments\.report",
             module="experiments.report", copy=other_data,
             args=lambda w: [str(base), "--out", str(w)])
    existing("retrain --out a folder of the user's", "`python -m experiments.retrain RUN --out "
             "DIR`, DIR holding the user's own report.md and summary.csv",
             r"--out .*: not empty and not made by experiments\.retrain",
             module="experiments.retrain", prepare=users_folder, copy=False,
             args=lambda w: [str(base), "--out", str(w), "--seeds", "1"])
    def users_folder_with_config(workdir):
        users_folder(workdir)
        (workdir / "config.json").write_text('{"my": "settings"}\n')

    retrain_args = dict(module="experiments.retrain", prepare=users_folder_with_config,
                        copy=False, args=lambda w: [str(base), "--out", str(w), "--seeds", "1"])
    existing("retrain --out a folder of the user's with config.json", "`python -m "
             "experiments.retrain RUN --out DIR`, DIR holding the user's own config.json, "
             "report.md and summary.csv", r"^error: --out .*: not empty and not made by "
             r"experiments\.retrain \(it holds config\.json, report\.md, summary\.csv\); give a new "
             r"or empty folder$",
             check=names_kept, **retrain_args)

    def rerun_without_config(case):
        run_module(case["module"], case["args"])
        (case["workdir"] / "config.json").unlink()
        return {"proc": run_module(case["module"], case["args"])}

    def users_files_kept(result):
        before, after = result["before"], result["after"]
        names = sorted(p.name for p in result["workdir"].iterdir())
        return ([f"{n} changed" for n in ("report.md", "summary.csv") if after.get(n) != before[n]]
                + ([] if names == ["report.md", "summary.csv"] else [f"now holds {names}"]))

    existing("retrain --out rerun after the user removes config.json", "the command above, "
             "then the user's config.json removed and the command run again",
             r"^error: --out .*: not empty and not made by experiments\.retrain",
             runner=rerun_without_config, check=users_files_kept,
             kept="the user's report.md and summary.csv byte-identical; no marker or lock file",
             **retrain_args)
    existing("workdir holding the user's files", "`--workdir=DIR`, DIR holding the user's own "
             "report.md and summary.csv (no config.json)",
             r"^error: workdir .*: not empty and not made by experiments\.main",
             prepare=users_folder, copy=False)

    def users_file(workdir):
        workdir.mkdir()
        (workdir / "figure.png").write_bytes(b"the user's figure")

    existing("figures eigen --out an existing file", "`python -m experiments.figures eigen "
             "RUN --out FILE`, FILE an existing file", r"--out .*figure\.png: exists and is not a directory",
             module="experiments.figures", prepare=users_file, copy=False,
             args=lambda w: ["eigen", str(crc_run), "--out", str(w / "figure.png")])

    # --- config parsing
    def last_value_used(result):
        if not (result["workdir"] / "config.json").is_file():
            return ["no config.json written (the run did not start)"]
        bound = json.loads((result["workdir"] / "config.json").read_text())
        warned = re.search(r"warning: --config\.strategies is given more than once; the last "
                           r"value \(\('entropy',\)\) is used", result["proc"].stderr)
        return ([] if bound["strategies"] == ["entropy"] else
                [f"strategies {bound['strategies']}, expected ['entropy']"]) + \
            ([] if warned else ["no warning line"])

    fresh("an override given twice", "`--config.strategies=\"('random',)\" "
          "--config.strategies=\"('entropy',)\"`: the last one is used, with a warning line",
          r"^results: ", ["--config.strategies=('random',)", "--config.strategies=('entropy',)"],
          base_args=cli_args({k: v for k, v in settings.items() if k != "strategies"}),
          exit=0, check=last_value_used, kept="a run of entropy alone (config.json: "
          "strategies ['entropy'])")
    fresh("variant of a config without variants", "`--config=digits:bogusvariant`",
          r"--config=digits:bogusvariant: unknown config variant \['bogusvariant'\]; "
          r"this config takes none", [], base_args=["--config=digits:bogusvariant"],
          timeout=300)   # (before the fix: the whole digits config ran)
    fresh("unknown config variant", "`--config=cifar10_fixmatch:77`",
          r"--config=cifar10_fixmatch:77: unknown config variant \['77'\]; allowed: 100, "
          r"50, val", [], base_args=["--config=cifar10_fixmatch:77"])
    fresh("negative --mock_data", "`--config=svhn_mt --config.smoke=True --mock_data=-5`, "
          "every network request failing", r"--mock_data=-5: must be >= 0", [],
          base_args=["--config=svhn_mt", "--config.smoke=True", "--mock_data=-5"],
          env={"TFDS_DATA_DIR": str(tfds_home)}, prelude=OFFLINE)
    truncated = root / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:good.stat().st_size // 2])
    fresh("truncated .npz", "the .npz file cut to half its bytes",
          r"truncated\.npz: not a readable \.npz file",
          [f"--config.dataset.data_dir={truncated}"])

    # --- a whole journal line without its newline: kept, not recomputed
    def strip_last_newline(workdir):
        path = workdir / JOURNAL
        path.write_bytes(path.read_bytes().rstrip(b"\n"))

    def step_kept(result):
        before, after = result["before"][str(JOURNAL)], result["after"][str(JOURNAL)]
        return [] if after == before + b"\n" else ["the journal changed beyond its newline"]

    existing("journal line without its newline", "the journal's last line (a whole, "
             "checksummed step) without its newline, then the same command rerun",
             r"^results: ", prepare=strip_last_newline, exit=0, check=step_kept,
             kept="the journal's steps kept (not recomputed), its newline added")
    lock = RunDir(workdir_of("workdir in use"))
    return cases, lock


def message_line(result: dict) -> str:
    """The one line a case is judged on: the reply of a page request, the `error:` or
    `interrupted:` line of a failed or interrupted command, or for a command that must
    succeed the first line of its output matching the case's `expect`."""
    if result.get("http"):
        return result["http"][1]
    proc = result["proc"]
    if result.get("exit", 2) == 0:
        hits = [line for line in proc.stdout.splitlines() if re.search(result["expect"], line)]
        return hits[0] if hits else (proc.stdout.strip().splitlines() or [""])[-1]
    lines = [line for line in proc.stderr.splitlines()
             if line.startswith(("error:", "interrupted:"))]
    return lines[-1] if lines else (proc.stderr.strip().splitlines() or [""])[-1]


def attempt(case: dict) -> dict:
    """Run one case; its outcome with the run directory's files before and after."""
    import os

    import time

    started = time.monotonic()
    before = snapshot(case["workdir"]) if case["existing"] else None
    if case.get("skip"):
        return dict(case, proc=None, before=before, after=before)
    if case.get("runner"):  # the crc-jax page and Ctrl-C cases (tests/bad_inputs_crc_jax.py)
        outcome = case["runner"](case)
    else:
        env = dict(os.environ, **case["env"]) if case.get("env") else None
        outcome = {"proc": run_module(case["module"], case["args"], env=env,
                                      prelude=case.get("prelude", ""),
                                      timeout=case.get("timeout", 600))}
    after = snapshot(case["workdir"]) if case["workdir"].exists() else {}
    return dict(case, **outcome, before=before, after=after,
                seconds=round(time.monotonic() - started, 1))


def run_cases(root: Path, workers: int = 3) -> list[dict]:
    """Prepare every case under `root` and run them, `workers` at a time (only those whose
    name matches $BAD_INPUTS_ONLY, a regex, when it is set: for working on a few)."""
    import os

    import bad_inputs_crc_jax

    cases, lock = build_cases(root)
    with bad_inputs_crc_jax.cases(root) as app_cases:
        cases += app_cases
        only = os.environ.get("BAD_INPUTS_ONLY")
        cases = [c for c in cases if not only or re.search(only, c["name"])]
        with lock, ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(attempt, cases))


RESULT_FILES = ("journal.jsonl", "summary.csv", "project.json", "pool.npy", "index.csv",
                "labels.jsonl", "rounds.jsonl", "queue.csv")


def verdict(result: dict) -> list[str]:
    """What is wrong with one case's outcome (empty: all good, or not run here)."""
    if result.get("skip"):
        return []
    proc, problems = result["proc"], []
    exit_expected = result.get("exit", 2)
    message = message_line(result)
    if result.get("http"):
        status = result["http"][0]
        if status != result["status"]:
            problems.append(f"HTTP {status}, expected {result['status']}")
    if proc.returncode != exit_expected:
        problems.append(f"exit status {proc.returncode}, expected {exit_expected}")
    if exit_expected in (2, 130) and not result.get("http"):
        prefix = "error:" if exit_expected == 2 else "interrupted:"
        lines = [line for line in proc.stderr.splitlines() if line.startswith(prefix)]
        if len(lines) != 1 or proc.stderr.strip().splitlines()[-1] != lines[0]:
            problems.append(f"{len(lines)} {prefix} lines, or not last")
    for crash in ("Traceback", "Fatal Python error", "Segmentation fault"):
        if crash in proc.stderr:
            problems.append(f"stderr holds {crash!r}")
    if not re.search(result["expect"], message):
        problems.append(f"message does not match {result['expect']!r}")
    if result.get("check"):
        problems += result["check"](result)
    if result.get("kept"):   # a case that changes files on purpose: its check judges them
        pass
    elif result["existing"]:
        if result["after"] != result["before"]:
            changed = sorted(set(result["before"]) ^ set(result["after"])
                             | {k for k in result["before"] if result["before"][k]
                                != result["after"].get(k)})
            problems.append(f"earlier results changed: {changed[:5]}")
    else:
        kinds = RESULT_FILES + (() if result.get("may_bind") else ("config.json",))
        written = [k for k in result["after"] if k.endswith(kinds) or k.startswith("report")]
        if written:
            problems.append(f"results written: {written}")
    return problems
