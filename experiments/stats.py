"""Paired statistics for active-learning runs: area under the learning curve, and each
strategy's paired difference to random with a 95% confidence interval.

Trial k of every strategy starts from the same labeled set (crc_jax.run.loop draws it from
(seed, k)), so strategies are compared trial by trial:

  AULC(s, k)  the normalized area under trial k's learning curve of strategy s,
              trapezoid rule over the labeled counts, divided by their range: the mean
              test accuracy (%) over the curve (a single count: that accuracy).
  Δ(s, k)     AULC(s, k) − AULC(random, k), over the trials both have.
  95% CI      paired t interval: mean Δ ± t_{0.975, n−1} · SD(Δ) / √n.
              A difference "excludes zero" when 0 lies outside its interval.
  p           two-sided paired t test of mean Δ = 0, uncorrected: a table of m comparisons
              to random needs p < 0.05 / m for a Bonferroni-corrected claim.

SD, everywhere in crc_jax's reports and tables, is the sample standard deviation (n − 1 in
the denominator, numpy's ddof = 1; sample_sd), undefined for a single value.
Learning-curve bands use the same t interval on the accuracies at each labeled count.
Intervals need at least MIN_TRIALS trials (3); with fewer only means are given.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np

MIN_TRIALS = 3
BASELINE = "random"


def curves(rows: list[dict]) -> dict:
    """{strategy: {trial: (counts ascending, accuracies in %)}}."""
    points = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        points[r["strategy"]][r["trial"]][r["num_labeled"]] = 100.0 * r["test_accuracy"]
    out = {}
    for s, trials in points.items():
        out[s] = {}
        for t, by_count in trials.items():
            counts = np.array(sorted(by_count), float)
            out[s][t] = (counts, np.array([by_count[int(n)] for n in counts]))
    return out


def aulc(counts: np.ndarray, accuracies: np.ndarray) -> float:
    """Trapezoid area under accuracy(count) divided by the count range (mean accuracy)."""
    if len(counts) == 1:
        return float(accuracies[0])
    area = np.sum((counts[1:] - counts[:-1]) * (accuracies[1:] + accuracies[:-1]) / 2.0)
    return float(area / (counts[-1] - counts[0]))


def sample_sd(values, axis=None):
    """The sample standard deviation (ddof = 1) of `values` (along `axis`); nan where
    fewer than two values."""
    v = np.asarray(values, float)
    n = v.size if axis is None else v.shape[axis]
    if n < 2:
        return np.full(np.delete(v.shape, axis), np.nan) if axis is not None else float("nan")
    sd = v.std(axis=axis, ddof=1)
    return float(sd) if axis is None else sd


def t_interval(values) -> tuple[float, float, float]:
    """(mean, lower, upper) of the 95% t interval; lower = upper = nan below MIN_TRIALS."""
    v = np.asarray(values, float)
    mean = float(v.mean())
    if len(v) < MIN_TRIALS:
        return mean, float("nan"), float("nan")
    from scipy import stats as scipy_stats   # here: 0.7 s of every command's start-up

    half = scipy_stats.t.ppf(0.975, len(v) - 1) * sample_sd(v) / np.sqrt(len(v))
    return mean, mean - half, mean + half


def paired_p(differences) -> float:
    """Two-sided p value of the paired t test of mean difference 0 (nan below MIN_TRIALS;
    0 when every difference is the same nonzero value, 1 when all are 0)."""
    d = np.asarray(differences, float)
    if len(d) < MIN_TRIALS:
        return float("nan")
    sd = sample_sd(d)
    if sd == 0:
        return 1.0 if d.mean() == 0 else 0.0
    t = d.mean() / (sd / np.sqrt(len(d)))
    from scipy import stats as scipy_stats

    return float(2 * scipy_stats.t.sf(abs(t), len(d) - 1))


def aulc_table(rows: list[dict], baseline: str = BASELINE) -> list[dict]:
    """Per strategy: trials, AULC mean and CI, and the paired Δ to the baseline with its CI.

    Trials whose curve is missing a labeled count that others of the strategy have (an
    unfinished trial) are left out, so every AULC spans the same counts.
    """
    by_strategy = curves(rows)
    table_aulc = {}
    for s, trials in by_strategy.items():
        full = max(len(c) for c, _ in trials.values())
        table_aulc[s] = {t: aulc(c, a) for t, (c, a) in trials.items() if len(c) == full}
    out = []
    for s, per_trial in table_aulc.items():
        mean, lo, hi = t_interval(list(per_trial.values()))
        row = {"strategy": s, "trials": len(per_trial), "aulc": mean, "aulc_lo": lo,
               "aulc_hi": hi, "paired_trials": 0, "diff": float("nan"),
               "diff_lo": float("nan"), "diff_hi": float("nan"), "p": float("nan"),
               "excludes_zero": False}
        base = table_aulc.get(baseline)
        if base is not None and s != baseline:
            common = sorted(set(per_trial) & set(base))
            if common:
                diffs = [per_trial[t] - base[t] for t in common]
                d, dlo, dhi = t_interval(diffs)
                row.update(paired_trials=len(common), diff=d, diff_lo=dlo, diff_hi=dhi,
                           p=paired_p(diffs), excludes_zero=bool(dlo > 0 or dhi < 0))
        out.append(row)
    return out


def p_text(p: float) -> str:
    """A p value as the tables print it: two significant digits, "< 0.001" below that."""
    if np.isnan(p):
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:#.2g}"


def p_is(p: float) -> str:
    """'p = 0.032' or 'p < 0.001', for prose."""
    text = p_text(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def markdown_table(table: list[dict], baseline: str = BASELINE) -> str:
    """The AULC table's rows as markdown; an asterisk marks Δ intervals that exclude zero."""
    def num(x):
        return "–" if np.isnan(x) else f"{x:.2f}"

    lines = [f"| Strategy | trials | AULC (%) [95% CI] | Δ AULC vs {baseline} [95% CI] | p |",
             "|---|---|---|---|---|"]
    for r in table:
        diff, p = "–", "–"
        if r["paired_trials"]:
            diff = (f"{r['diff']:+.2f} [{num(r['diff_lo'])}, {num(r['diff_hi'])}]"
                    + (" *" if r["excludes_zero"] else ""))
            p = p_text(r["p"])
        lines.append(f"| {r['strategy']} | {r['trials']} | {num(r['aulc'])} "
                     f"[{num(r['aulc_lo'])}, {num(r['aulc_hi'])}] | {diff} | {p} |")
    return "\n".join(lines) + "\n"


def note(table: list[dict], baseline: str = BASELINE) -> str:
    """What the AULC table's columns mean, with the number m of comparisons it holds."""
    m = sum(1 for r in table if r["paired_trials"])
    return (f"AULC: area under each trial's learning curve (trapezoid rule, divided by the "
            f"labeled-count range, i.e. mean accuracy over the curve). Δ: paired difference "
            f"to {baseline} over the trials both have (same initial labeled set per trial). "
            f"95% CI: paired t interval, mean ± t(0.975, n−1)·SD/√n, SD the sample standard "
            f"deviation of the differences; * = excludes zero. p: two-sided paired t test, "
            f"uncorrected for the {m} comparison{'s' if m != 1 else ''} to {baseline} in this "
            f"table (Bonferroni: p < 0.05/{m}). Intervals need ≥ {MIN_TRIALS} trials.")


def markdown(table: list[dict], baseline: str = BASELINE) -> str:
    """The AULC table as markdown, with its note."""
    return markdown_table(table, baseline) + "\n" + note(table, baseline) + "\n"


def write_csv(table: list[dict], path: Path) -> None:
    from crc_jax import durable

    fields = ["strategy", "trials", "aulc", "aulc_lo", "aulc_hi", "paired_trials", "diff",
              "diff_lo", "diff_hi", "p", "excludes_zero"]
    durable.write_csv(path, fields, [{k: (f"{v:.4f}" if isinstance(v, float) else v)
                                      for k, v in r.items()} for r in table])


def plot_curves_with_ci(rows: list[dict], path: Path, title: str = "") -> None:
    """Mean learning curve per strategy with its 95% t band over trials."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.6), dpi=120)
    for s, trials in curves(rows).items():
        cells = defaultdict(list)
        for counts, acc in trials.values():
            for n, a in zip(counts, acc):
                cells[n].append(a)
        ns = sorted(cells)
        mean, lo, hi = np.array([t_interval(cells[n]) for n in ns]).T
        ax.plot(ns, mean, marker="o", ms=3, label=s)
        if not np.all(np.isnan(lo)):
            ax.fill_between(ns, lo, hi, alpha=0.12)
    ax.set_xlabel("number of labeled images")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "Learning curves (mean, 95% t interval over trials)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_paired_differences(table: list[dict], path: Path, baseline: str = BASELINE,
                            title: str = "") -> None:
    """Δ AULC to the baseline per strategy with its 95% CI; filled markers exclude zero."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table if r["paired_trials"]]
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(rows) + 1.4), dpi=120)
    for y, r in enumerate(rows):
        err = None
        if not np.isnan(r["diff_lo"]):
            err = [[r["diff"] - r["diff_lo"]], [r["diff_hi"] - r["diff"]]]
        ax.errorbar(r["diff"], y, xerr=err, fmt="o", capsize=3, color="C0",
                    mfc="C0" if r["excludes_zero"] else "white")
    ax.axvline(0.0, color="gray", lw=1)
    ax.set_yticks(range(len(rows)), [r["strategy"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ AULC vs {baseline} (accuracy points), 95% paired t CI")
    ax.set_title(title or "Paired difference to random (filled: CI excludes 0)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
