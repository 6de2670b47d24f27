"""docs/reliability.md: its fixed text, and the bad-input table written from real runs.

    PYTHONPATH=. python tests/reliability_doc.py        (or: make docs)

runs every case of tests/bad_inputs.py through the command line and rewrites the
bad-input section; the fault-campaign section is kept as it is (the slow fault test
measures it). `tests/test_bad_inputs.py` runs the same cases and checks that the
committed file equals what this module writes from them.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
from pathlib import Path

import bad_inputs

DOC = bad_inputs.ROOT / "docs" / "reliability.md"

DOC_HEAD = """\
# Reliability: crashes, resumes and bad inputs

<!-- Generated: the bad-input table by `make docs` (tests/reliability_doc.py),
     the campaign by `pytest -m slow tests/test_faults.py`; edit the text in
     tests/reliability_doc.py. tests/test_bad_inputs.py checks the table is current. -->

A run directory survives being killed at any moment (SIGKILL, OOM, a lost machine) and
resumes to the same results as a run that was never interrupted; bad inputs stop a run
with one line and exit status 2 before they can change anything already computed.

## Mechanisms

- **Journal** (`crc_jax/durable.py`, `Journal`): `WORKDIR/<strategy>/trial_<k>/journal.jsonl` holds one
  JSON line per completed acquisition step (accuracy, the indices acquired and their labels,
  the initial set at step 0). A line is written whole with one `write`, then `fsync`ed, before
  the next step starts. Rerunning the same command replays the journal into the pool and
  continues after its last line. Randomness is folded from (seed, trial, step) and
  (key, epoch), never carried in process state, so the continuation draws what an
  uninterrupted run draws. The replay checks that the journal belongs to this run: step 0's
  line carries a fingerprint of the config (cosmetic fields aside), strategy and trial, checked
  before `config.json` is (re)written, so a directory whose `config.json` was lost is not
  adopted by another config; the initial set and every recorded label must match the pool's.
- **Checksums**: every journal line carries the CRC-32 of its canonical JSON body. A line
  is whole exactly when its checksum verifies, with or without its newline: a whole last
  line that lacks the newline (an editor, a copy, a crash between the two) is kept and
  given its newline; a torn last line (a crash mid-append) is dropped with a warning and
  truncated away; a bad line anywhere else is corruption and stops the run naming the
  line, leaving the file as it is.
- **Whole appends** (`append_synced`, under the run journals and `crc-jax`'s labels log):
  a short write is continued until every byte is written; an error (a full disk, a
  read-only file system) cuts the file back to its size before the append and is raised,
  so what a command reports saved is what the file holds. Ctrl-C is held back until the
  append has ended (`crc_jax.runtime.interrupt.deferred`), so an interrupt at any instant
  keeps every completed step and label whole. Tested by injected short writes, and by
  Ctrl-C delivered before the first byte, after the last, during the fsync and after it,
  for the journal and the labels log (`tests/test_durable.py`); and on a real 256 KiB
  tmpfs filled to the last byte
  (`tests/test_full_disk.py`, where the machine allows mounting).
- **Output folders** (`claim_dir`): a command writes only into a folder that is new,
  empty, or carries its own mark (`.crc_jax-run` for `experiments.main`'s run
  directories, `.crc_jax-report`, `.crc_jax-retrain`, `figure1_moons.json`); a report may
  also go into a run it reports on. Any other folder (your own `report.md`, another run) is
  refused with one line, untouched.
- **Lock** (`crc_jax/run/rundir.py`): `WORKDIR/config.json` binds the directory to one config
  (only cosmetic fields such as `train.progress` may differ on a rerun); it is written only
  once the config, every strategy with its options and the data have been checked, so a
  refused run leaves no binding behind. An exclusive
  `flock` on `WORKDIR/.lock` keeps a second writer out. The kernel releases it when the
  process dies, so a crash never leaves it stuck.
- **Checkpoints** (`crc_jax/run/checkpoint.py`): with `train.checkpoint_every=E`, training
  saves (state, best variables, early-stopping record) with orbax every E epochs, keeping the
  last two; orbax writes a temporary folder and renames it, so a half-written checkpoint is
  never read. A killed step resumes from its latest checkpoint, bit-identically. Each
  checkpoint carries a fingerprint of (config, strategy, trial, step), checked before its
  arrays are read: one from another config or model is refused. A state whose loss or
  parameters are NaN/inf is never saved: training stops first (`TrainingDiverged`, naming
  the step), so the last checkpoint on disk is the last good one.
- **Fault points** (`crc_jax/runtime/faults.py`): `CRC_JAX_FAULT="point:n"` makes the process
  SIGKILL itself the n-th time it reaches `point`: `train_step` (before a training step),
  `checkpoint` (once orbax's temporary folder exists, i.e. mid-write), `acquisition` (after
  training, before the strategy picks), `journal_append` (after half of the line is written
  and fsynced) and `report` (after report.md, before report.csv); inside every append,
  `journal_append.start`, `.written` and `.synced` (likewise `labels_append.*`).
  `"point:n:sigint"` sends a Ctrl-C there instead, and `"point:n:pause"` stops there and
  says so in the file `CRC_JAX_FAULT_READY` names, so a test sends its signal from outside
  at that instant, with no timing involved (`tests/test_cli.py`).
- **`crc-jax`**: the same storage (checksummed labels log and rounds journal, whole
  appends, atomic replacements); every command checks the project as it opens it
  (`index.csv`, `pool.npy`, the classes the labels and rounds use), and the page shows and
  takes labels only for files still byte-identical to the pool's images. A refused write is
  one line and exit 2; Ctrl-C is one line and exit 130, ending the process without the
  interpreter's teardown (an interrupt inside XLA left JAX's threads able to crash it).
- **Same seed, same results, on the same machine and versions**: two runs of one config give
  byte-identical journals and `summary.csv`, run in one process or in separate processes
  (`tests/test_reproducible.py`, `tests/test_faults.py::test_same_seed_runs_are_identical`).
- **Environment record** (`crc_jax/run/environment.py`): every run directory holds
  `environment.json`, the environment that produced it: Python, crc_jax/jax/jaxlib/flax/optax/
  numpy/orbax versions, the backend and its device kinds, the CPU model and the vector
  features that decide its float rounding (AVX2, FMA, AVX-512, AMX; NEON/SVE), the cores
  usable, `jax_enable_x64`/`jax_default_matmul_precision`, and `XLA_FLAGS` with the other
  `XLA_*`, `JAX_*` and thread-count variables that are set. A run resumed in another
  environment appends it and logs a warning. It is cosmetic (not in `config.json` nor the
  config fingerprint), and a file of that name that is not crc_jax's is left alone.

Run the fault campaign (10 kills on a tiny digits config, each resumed and compared with an
uninterrupted run; a few minutes on 2 CPU cores):

    .venv/bin/python -m pytest -m slow tests/test_faults.py      # or: make test-slow

The always-on suite runs one kill (mid checkpoint write) and the same-seed check
(`tests/test_faults.py`), and every bad input below (`tests/test_bad_inputs.py`, which
also checks that the table below is what `make docs` writes today).

## Where results hold

Results repeat exactly on the same machine with the same versions; that is the scope of
every "identical" above. On another machine the last bits of a float32 operation can
differ, and a run is then another run:

- **CPU float rounding.** XLA compiles each matrix product and reduction for the CPU it runs
  on: the vector width (AVX2, AVX-512, ARM NEON/SVE), fused multiply-add and the blocking of
  a sum decide the order in which partial results are added, and float32 addition is not
  associative. A different jax/jaxlib version compiles other kernels. An accelerator
  (cuBLAS/cuDNN algorithm choice, TPU matrix units) rounds differently again, and so does a
  data-parallel run over another number of devices (`docs/accelerators.md`).
- **XLA flags.** `XLA_FLAGS` changes what XLA fuses and how it vectorizes (the test suite
  itself runs with `--xla_backend_optimization_level=0`, `tests/conftest.py`);
  `JAX_DEFAULT_MATMUL_PRECISION` and `JAX_ENABLE_X64` change the precision outright.
- **Thread counts.** On a CPU, XLA and Eigen split large products and reductions over the
  cores they may use; another split can add in another order. The number of usable cores
  (`taskset`, container limits) and thread variables (`OMP_NUM_THREADS` and the like) are
  part of the environment.

How a few bits become another figure: training is many steps of a chaotic map, so a
last-bit difference in one step grows into another model after a few hundred steps; early
stopping may then pick another epoch, and CRC's choice, which on two-moons separated the
best group from the runner-up by a median 0.11-0.26 % (an independent reimplementation,
issue 27), may flip, after which the next model trains on other labels. A single trial can
therefore change qualitatively from one machine to another: the earlier random-pivot
Figure 1 went from 98.8 % at 4 labels to 66-72 % in the README's earlier run, and 98.1 → 99.7 → 77.5 →
100 → 100 % with the same command and seed on another machine of the same kind (issue 27),
the two already different at 4 labels, before CRC had acted. Compare machines on means over many paired
trials with their intervals (`experiments/report.py`), not on one trial, and read
`environment.json` to see which environment gave which numbers.
"""

SECTIONS = {
    "campaign": ("Fault-injection campaign",
                 "Not run in this checkout yet: run the slow target above."),
    "bad-inputs": ("Bad inputs", "Not generated yet: run `make docs`."),
}


TABLE_INTRO = (
    "Each bad input below was tried through the command line (`python -m experiments.main "
    "--config=digits` shrunk to a 2-step run, unless the row names another command; `<tmp>` "
    "is the temporary folder of the run). \"Earlier results\": for inputs that act on an "
    "existing run directory or `crc-jax` project (a finished run; for the data rows, its "
    "config then pointed at a bad copy of its .npz file; a project with 12 labels and a "
    "trained round), every file in it (lock files aside) was compared byte for byte before "
    "and after. Exit 2 is a refused input (one `error:` line), 130 Ctrl-C (one "
    "`interrupted:` line), 0 a case that must work; for a page request the column shows the "
    "HTTP status (the server then stopped with Ctrl-C, exit 130, no traceback). Rows that "
    "mount a file system (a full tmpfs, a read-only bind mount) keep their last measured row "
    "on a machine that does not allow mounting.")
TABLE_TAIL = (
    "A diverging run keeps its last good checkpoint: `fit` raises before a NaN/inf state "
    "is evaluated or saved (`test_nan_loss_names_step_and_keeps_last_good_checkpoint`, "
    "`test_nan_parameters_are_never_checkpointed`).")


def table_row(result: dict, root: Path, old: str = "") -> str:
    """One markdown row: the case, its one line (paths under `root` as <tmp>), the exit
    status (or the page's HTTP status), and what happened to earlier results. A case not
    run on this machine (it needs to mount a file system) keeps its row from `old`."""
    if result.get("skip"):
        kept = re.search(rf"^\| {re.escape(result['name'])} \|.*$", old, re.M)
        return kept.group(0) if kept else (f"| {result['name']} | {result['given']} | "
                                           f"(not run: {result['skip']}) | - | - |")
    message = bad_inputs.message_line(result)
    message = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", message)
    message = message.replace(str(root), "<tmp>").replace("|", "\\|")
    if result.get("kept"):
        kept = result["kept"]
    elif result["existing"]:
        files = sorted({re.sub(r"(checkpoints/step_\d+|models)/.*", r"\1/*", k)
                        for k in result["before"]})
        kept = (f"byte-identical: {', '.join(files)}" if result["after"] == result["before"]
                else "**changed**")
    elif result.get("may_bind"):
        kept = "none before; no journal, summary or report written"
    else:
        kept = "none before; nothing written (no config.json, journal, summary or report)"
    problems = bad_inputs.verdict(result)
    flag = "; **" + "; ".join(problems) + "**" if problems else ""
    code = (f"HTTP {result['http'][0]}" if result.get("http")
            else str(result["proc"].returncode))
    return (f"| {result['name']} | {result['given']} | `` {message} `` | "
            f"{code} | {kept}{flag} |")


def bad_inputs_section(results: list, root: Path, old: str = "") -> str:
    return "\n".join([TABLE_INTRO, "",
                      "| Bad input | Given as | Message (the one line) | Exit | "
                      "Earlier results |", "|---|---|---|---|---|",
                      *(table_row(r, root, old) for r in results), "", TABLE_TAIL])


def render(sections: dict, old: str = "") -> str:
    """The whole document: DOC_HEAD, then each section from `sections`, else from `old`."""
    parts = [DOC_HEAD]
    for key, (title, placeholder) in SECTIONS.items():
        if key in sections:
            text = sections[key]
        else:
            found = re.search(rf"<!-- begin:{key} -->\n(.*?)<!-- end:{key} -->", old, re.S)
            text = found.group(1) if found else placeholder
        parts.append(f"## {title}\n\n<!-- begin:{key} -->\n{text.strip()}\n<!-- end:{key} -->\n")
    return "\n".join(parts)


def update_doc(name: str, body: str, doc: Path = DOC) -> None:
    """Rewrite `doc` with section `name` set to `body`, the others kept."""
    old = doc.read_text() if doc.exists() else ""
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(render({name: body}, old))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DOC), help="the document to (re)write")
    args = parser.parse_args(argv)
    from crc_jax.runtime import command

    command.setup_logging(logging.WARNING)
    logging.getLogger(__name__).setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        logging.getLogger(__name__).info("running the bad-input cases (a few minutes)")
        results = bad_inputs.run_cases(root)
        old = Path(args.out).read_text() if Path(args.out).exists() else ""
        update_doc("bad-inputs", bad_inputs_section(results, root, old), Path(args.out))
        failing = [r["name"] for r in results if bad_inputs.verdict(r)]  # checks read files
    print(f"wrote {args.out}: {len(results)} bad inputs, {len(failing)} failing"
          + (f" ({', '.join(failing)})" if failing else ""))
    sys.exit(1 if failing else 0)


if __name__ == "__main__":
    main()
