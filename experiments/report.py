"""Paper-style reports from one or more run directories.

    python -m experiments.report runs/digits [runs/other ...] [--out DIR]

Writes report.md (a table: rows strategies, columns labeled counts, cells mean ± SD of
test accuracy over the n trials, SD the sample standard deviation (ddof = 1), like the
paper's Tables 4-6), report.csv (the same numbers) and learning_curve.png (accuracy vs
labeled count, one line per strategy, ± SD shaded).
The trial with the median final accuracy of each strategy is named (a pointer to a
typical trial; the paper's §4.1 median rule is another thing, the median initial model
of al.initial_model = "median").
With at least 3 trials it adds the statistics of experiments/stats.py: the area under
each learning curve and the paired difference of every strategy to random with a 95%
paired-t interval (in report.md and stats.csv), learning_curve_ci.png (95% bands) and
paired_difference.png. A strategy name that an earlier workdir already holds is shown as
"name [workdir]". Runs with CRC get a "CRC decisions" section from the journals' diagnostics:
how close each step's chosen group came to the score ceiling, how far it beat the runner-up,
and which steps' choices were ties at float32 resolution. A run whose batch size was moved
to split over its devices says so under the table (config.json's train.requested_batch_size).
The report goes into the first run directory, or into --out: a folder that is new, empty,
or one this command wrote before (it holds its mark, .crc_jax-report); a folder holding
other files (another run, your own report.md) is refused, never overwritten.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from crc_jax import durable
from crc_jax.errors import StorageError, UsageError
from crc_jax.runtime import command, faults
from experiments import stats

SUMMARY_COLUMNS = ("strategy", "trial", "step", "num_labeled", "test_accuracy")
OUTPUTS = ("report.md", "report.csv", "learning_curve.png")
# The marks of folders these commands made (crc_jax.durable.claim_dir): a run directory of
# experiments.main, and a folder experiments.report wrote a report into.
RUN_MARKER = ".crc_jax-run"
REPORT_MARKER = ".crc_jax-report"


class ReportError(ValueError):
    """A run directory or summary.csv that cannot be reported on, and why (one line)."""


def load_rows(workdirs) -> list[dict]:
    """The rows of every workdir's summary.csv; ReportError names the file and the problem."""
    rows = []
    for workdir in workdirs:
        if not Path(workdir).is_dir():
            raise ReportError(f"{workdir}: no such run directory")
        path = Path(workdir) / "summary.csv"
        if not path.is_file():
            raise ReportError(f"{path} not found: run experiments.main on {workdir} first "
                              "(or let it finish)")
        earlier = {r["strategy"] for r in rows}
        for r in _read_summary(path):
            if r["strategy"] in earlier:   # the same name from another workdir
                r["strategy"] = f"{r['strategy']} [{Path(workdir).name}]"
            rows.append(r)
    return rows


def _read_summary(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in SUMMARY_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ReportError(f"{path}: not a summary.csv (missing columns "
                                  f"{', '.join(missing)})")
            rows = []
            for line, r in enumerate(reader, start=2):
                try:
                    row = {"strategy": r["strategy"], "trial": int(r["trial"]),
                           "step": int(r["step"]), "num_labeled": int(r["num_labeled"]),
                           "test_accuracy": float(r["test_accuracy"])}
                except (TypeError, ValueError):
                    raise ReportError(f"{path}: line {line} is malformed") from None
                if not (row["strategy"] and 0.0 <= row["test_accuracy"] <= 1.0):
                    raise ReportError(f"{path}: line {line} is malformed")
                rows.append(row)
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text file") from None
    if not rows:
        raise ReportError(f"{path}: holds no results")
    return rows


def aggregate(rows: list[dict]) -> tuple[list[str], list[int], dict]:
    """strategies (in first-seen order), labeled counts, {(strategy, n): accuracies}."""
    strategies, counts, cells = [], set(), defaultdict(list)
    for r in rows:
        if r["strategy"] not in strategies:
            strategies.append(r["strategy"])
        counts.add(r["num_labeled"])
        cells[(r["strategy"], r["num_labeled"])].append(100.0 * r["test_accuracy"])
    return strategies, sorted(counts), cells


def median_trials(rows: list[dict]) -> dict:
    """strategy -> trial whose accuracy at the largest labeled count is the median."""
    final = defaultdict(dict)
    for r in rows:
        s, t = r["strategy"], r["trial"]
        if r["num_labeled"] >= final[s].get(t, (-1, 0))[0]:
            final[s][t] = (r["num_labeled"], r["test_accuracy"])
    out = {}
    for s, trials in final.items():
        ordered = sorted(trials, key=lambda t: (trials[t][1], t))
        out[s] = ordered[(len(ordered) - 1) // 2]
    return out


def _cell(values) -> str:
    if not values:
        return "–"
    if len(values) < 2:
        return f"{np.mean(values):.2f}"
    return f"{np.mean(values):.2f} ± {stats.sample_sd(values):.2f}"


def accuracy_table(rows: list[dict]) -> str:
    """The accuracy table's rows as markdown: mean ± SD (n = trials) per labeled count."""
    strategies, counts, cells = aggregate(rows)
    trials = {s: len({r["trial"] for r in rows if r["strategy"] == s}) for s in strategies}
    head = ("| Accuracy (%), mean ± SD / # labeled | " + " | ".join(str(n) for n in counts)
            + " |")
    lines = [head, "|---|" + "---|" * len(counts)]
    for s in strategies:
        lines.append(f"| {s} (n = {trials[s]}) | "
                     + " | ".join(_cell(cells[(s, n)]) for n in counts) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict]) -> str:
    medians = median_trials(rows)
    note = ("Cells: mean ± SD of test accuracy over the n trials (SD: sample standard "
            "deviation, n − 1 in the denominator); columns: number of labeled images. Trial "
            "with the median final accuracy: "
            + ", ".join(f"{s}: trial {t}" for s, t in medians.items()) + ".")
    return accuracy_table(rows) + "\n" + note + "\n"


def crc_decisions(workdirs) -> list[dict]:
    """Per CRC journal step (strategy folder, trial, step, num_labeled): the diagnostics
    summary of crc_jax.acquisition.crc.diagnostics (gap, resolution, tie, reach)."""
    from crc_jax.acquisition.crc import diagnostics

    out = []
    for workdir in workdirs:
        for path in sorted(Path(workdir).glob("*/trial_*/journal.jsonl")):
            try:
                entries = durable.Journal(path).entries()
            except StorageError as err:
                raise ReportError(str(err)) from None
            for e in entries:
                found = diagnostics.summary({**(e.get("initial_record") or {}),
                                             **(e.get("record") or {})})
                if found:
                    out.append({"strategy": path.parent.parent.name, "trial": path.parent.name,
                                "step": e["step"], "num_labeled": e["num_labeled"], **found})
    return out


def _percent(values) -> str:
    return f"{100 * np.median(values):.3g}%" if len(values) else "–"


def crc_markdown(decisions: list[dict]) -> str:
    """The "CRC decisions" section: per strategy and step, how close the chosen group came
    to the ceiling and how far it beat the runner-up; the steps whose choice was a tie."""
    if not decisions:
        return ""
    cells = defaultdict(list)
    for d in decisions:
        cells[(d["strategy"], d["step"])].append(d)
    lines = ["| strategy | step | trials | chosen / ceiling (median) | gap (median) | "
             "gap (smallest) | ties |", "|---|---|---|---|---|---|---|"]
    for (strategy, step), ds in cells.items():
        gaps = [d["gap"] for d in ds if d["gap"] is not None]
        reach = [d["reach"] for d in ds if d["reach"] is not None]
        lines.append(f"| {strategy} | {step} | {len(ds)} | {_percent(reach)} | {_percent(gaps)} "
                     f"| {_percent(gaps and [min(gaps)])} | {sum(d['tie'] for d in ds)} of {len(ds)} |")
    ties = [f"{d['strategy']} {d['trial']} step {d['step']}" for d in decisions if d["tie"]]
    note = ("Gap: (chosen − runner-up) / chosen, the chosen group's score against the best group "
            "not chosen (a step's smallest over its decisions). Ceiling: the bound no group can "
            "score above (docs/design.md, \"CRC, exactly\"). A tie: the gap is within float32 "
            "resolution (ε₃₂ · trace of the two groups' kernels), so float32 rounding, e.g. on "
            "another machine, could have picked the other group. ")
    note += ("Ties: " + ", ".join(ties) + "." if ties
             else "No step's choice was a tie at float32 resolution.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    strategies, counts, cells = aggregate(rows)
    durable.write_csv(path, ["strategy", "num_labeled", "mean_accuracy", "sd_accuracy", "trials"],
                      [[s, n, f"{np.mean(cells[(s, n)]):.4f}",
                        f"{stats.sample_sd(cells[(s, n)]):.4f}", len(cells[(s, n)])]
                       for s in strategies for n in counts if cells[(s, n)]])


def plot_learning_curves(rows: list[dict], path: Path, title: str = "") -> None:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    strategies, counts, cells = aggregate(rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for s in strategies:
        ns = [n for n in counts if cells[(s, n)]]
        mean = np.array([np.mean(cells[(s, n)]) for n in ns])
        sd = np.array([stats.sample_sd(cells[(s, n)]) for n in ns])
        ax.plot(ns, mean, marker="o", label=s)
        ax.fill_between(ns, mean - sd, mean + sd, alpha=0.2)
    ax.set_xlabel("number of labeled images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Learning curves (mean ± SD over trials)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def batch_notes(workdirs) -> str:
    """One line per run whose train.batch_size was moved to a multiple of its device count
    (crc_jax.run.config_check), from its config.json; "" when none was."""
    notes = []
    for workdir in workdirs:
        try:
            train = json.loads((Path(workdir) / "config.json").read_text()).get("train", {})
        except (OSError, ValueError):
            continue
        if train.get("requested_batch_size"):
            notes.append(f"{Path(workdir).name}: train.batch_size {train['batch_size']}, not the "
                         f"config's {train['requested_batch_size']}, which did not split over "
                         "the devices (the nearest multiple of the device count).")
    return "\n".join(notes)


def write_report(workdirs, *, out_dir) -> str:
    """Write report.md, report.csv and learning_curve.png into out_dir; return the table."""
    rows = load_rows(workdirs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows)
    notes = batch_notes(workdirs)
    if notes:
        table += "\n" + notes + "\n"
    title = " + ".join(Path(w).name for w in workdirs)
    body = f"# {title}\n\n{table}\n![learning curves](learning_curve.png)\n"
    trials = max(len({r["trial"] for r in rows if r["strategy"] == s})
                 for s in {r["strategy"] for r in rows})
    if trials >= stats.MIN_TRIALS:
        aulc = stats.aulc_table(rows)
        table += "\n" + stats.markdown(aulc)
        body += ("\n## Area under the learning curve, paired to random\n\n" + stats.markdown(aulc)
                 + "\n![learning curves, 95% CI](learning_curve_ci.png)\n"
                 + "\n![paired differences](paired_difference.png)\n")
    decisions = crc_markdown(crc_decisions(workdirs))
    if decisions:
        body += "\n## CRC decisions\n\n" + decisions
    (out / "report.md").write_text(body)
    faults.maybe_kill("report")
    write_csv(rows, out / "report.csv")
    plot_learning_curves(rows, out / "learning_curve.png", title=f"{title}: learning curves")
    if trials >= stats.MIN_TRIALS:
        short = title if len(title) <= 40 else out.name   # many workdirs: the output folder
        stats.write_csv(aulc, out / "stats.csv")
        stats.plot_curves_with_ci(rows, out / "learning_curve_ci.png",
                                  title=f"{short}: mean, 95% t interval")
        stats.plot_paired_differences(aulc, out / "paired_difference.png",
                                      title=f"{short}: Δ AULC vs random")
    return table


def where(workdirs, out_dir) -> str:
    """The closing lines of a run or a report: where the results and the report went."""
    workdirs = [workdirs] if isinstance(workdirs, (str, os.PathLike)) else list(workdirs)
    out = Path(out_dir)
    lines = [f"results: {', '.join(str(Path(w)) for w in workdirs)} (summary.csv, journals)",
             "report:  " + ", ".join(str(out / name) for name in OUTPUTS)]
    return "\n".join(lines)


def claim_out(out_dir, workdirs) -> None:
    """Make `out_dir` a folder the report may write into: one of the reported run
    directories (a run's report belongs to it), or a folder that is new, empty or holds an
    earlier report (crc_jax.durable.claim_dir); StorageError otherwise."""
    from crc_jax import durable

    own_run = any(Path(out_dir).resolve() == Path(w).resolve() for w in workdirs)
    durable.claim_dir(out_dir, REPORT_MARKER, command="experiments.report", flag="--out",
                      accept=(RUN_MARKER, "config.json") if own_run else ())


def main(argv=None) -> int:
    """The command (`python -m experiments.report`): the exit status."""
    parser = command.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--out", default=None, help="output folder (default: the first "
                        "workdir); new, empty, or one experiments.report wrote before")

    def work() -> None:
        args = parser.parse_args(argv)
        out_dir = args.out or args.workdirs[0]
        try:
            load_rows(args.workdirs)   # the inputs first: nothing is created for a bad one
            claim_out(out_dir, args.workdirs)
            table = write_report(args.workdirs, out_dir=out_dir)
        except OSError as err:
            raise UsageError(f"--out {out_dir}: cannot be written ({err.strerror})") from None
        print(table)
        print(where(args.workdirs, out_dir))

    return command.run(work, errors=(ReportError,), own_process=argv is None)


if __name__ == "__main__":
    sys.exit(main())
