"""The pre-registered replication's tests (docs/results/replication/PREREGISTRATION.md):
per-trial AULC of every strategy, and each strategy's paired t test against random.

    python -m experiments.replication RUN_DIR... --out docs/results/replication

Writes OUT/summary.csv (every run's test accuracy per strategy, trial and step: the
learning curves), OUT/trials.csv (one row per trial: that trial's AULC of every strategy,
computed from them by experiments.stats) and OUT/table.md (per strategy: trials, mean AULC,
mean paired Δ to random with its 95% paired t interval (sample SD, ddof = 1), t, two-sided
p); `table_from_csv` recomputes the table from a committed trials.csv, and
`trials_from_summary` the trials from the committed summary.csv. The run's learning
curves and full report come from `python -m experiments.report` (README of the results).
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np

BASELINE = "random"


def per_trial_aulc(rows: list[dict]) -> dict:
    """{trial: {strategy: AULC}} over the trials with every strategy's full curve."""
    from experiments import stats

    out: dict = {}
    for strategy, trials in stats.curves(rows).items():
        full = max(len(c) for c, _ in trials.values())
        for trial, (counts, acc) in trials.items():
            if len(counts) == full:
                out.setdefault(trial, {})[strategy] = stats.aulc(counts, acc)
    strategies = {s for v in out.values() for s in v}
    return {str(t): v for t, v in sorted(out.items(), key=lambda kv: int(kv[0]))
            if set(v) == strategies}


def trials_from_summary(folder) -> dict:
    """per_trial_aulc of the summary.csv in `folder`, rounded as trials.csv holds it."""
    from experiments import report

    rows = report.load_rows([folder])
    return {t: {s: round(a, 6) for s, a in v.items()} for t, v in per_trial_aulc(rows).items()}


def write_trials(path: Path, per_trial: dict) -> None:
    strategies = sorted({s for v in per_trial.values() for s in v},
                        key=lambda s: (s != BASELINE, s))
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["trial", *strategies])
        for trial, v in per_trial.items():
            w.writerow([trial, *(f"{v[s]:.6f}" for s in strategies)])


def read_trials(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {r.pop("trial"): {s: float(x) for s, x in r.items()} for r in rows}


def paired_test(diffs) -> dict:
    """Mean paired difference, its 95% t interval (sd with ddof = 1), t and two-sided p."""
    from scipy import stats as scipy_stats

    d = np.asarray(diffs, np.float64)
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = float(scipy_stats.t.ppf(0.975, n - 1)) * se
    t = mean / se if se > 0 else math.copysign(math.inf, mean)
    p = float(2 * scipy_stats.t.sf(abs(t), n - 1))
    return {"n": n, "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half, "t": t, "p": p}


def table(per_trial: dict) -> str:
    """Per strategy: mean AULC (sample SD), and the paired test of its Δ to random."""
    strategies = sorted({s for v in per_trial.values() for s in v}, key=lambda s: (s != BASELINE, s))
    lines = ["| strategy | trials | AULC (%) mean ± SD | Δ AULC vs random [95% CI] | t | p (two-sided) |",
             "|---|---|---|---|---|---|"]
    for s in strategies:
        a = np.array([v[s] for v in per_trial.values()])
        cells = [s, str(len(a)), f"{a.mean():.2f} ± {a.std(ddof=1):.2f}"]
        if s == BASELINE:
            cells += ["–", "–", "–"]
        else:
            r = paired_test([v[s] - v[BASELINE] for v in per_trial.values()])
            cells += [f"{r['mean']:+.2f} [{r['lo']:+.2f}, {r['hi']:+.2f}]", f"{r['t']:.2f}",
                      f"{r['p']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("AULC: mean test accuracy over the learning curve (trapezoid rule over the labeled "
            "counts, experiments/stats.py). Δ: paired by trial; 95% CI: mean ± t(0.975, n−1)·SD/√n, "
            "SD the sample standard deviation (ddof = 1) of the paired differences; p: two-sided "
            "paired t test.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def table_from_csv(path) -> str:
    """The replication table recomputed from a committed trials.csv."""
    return table(read_trials(Path(path)))


def main(argv=None) -> int:
    """The command (`python -m experiments.replication`): the exit status."""
    from crc_jax.runtime import command

    from experiments import report

    parser = command.ArgumentParser(prog="python -m experiments.replication",
                                    description=(__doc__ or "").split("\n")[0])
    parser.add_argument("workdirs", nargs="+", help="the replication's run directories")
    parser.add_argument("--out", required=True, help="folder for trials.csv and table.md")

    def work() -> None:
        args = parser.parse_args(argv)
        rows = report.load_rows(args.workdirs)
        per_trial = per_trial_aulc(rows)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        from crc_jax import durable
        from crc_jax.run.loop import SUMMARY_FIELDS

        durable.write_csv(out / "summary.csv", SUMMARY_FIELDS,
                          [[r[f] for f in SUMMARY_FIELDS] for r in rows])
        write_trials(out / "trials.csv", per_trial)
        md = table(per_trial)
        (out / "table.md").write_text(md)
        sys.stdout.write(md)

    return command.run(work, errors=(report.ReportError,), own_process=argv is None)


if __name__ == "__main__":
    sys.exit(main())
