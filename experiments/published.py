"""The published tables and numbers, each computed from its committed per-trial files.

TABLES maps a name to a Table: the per-trial files it reads (paths from the repository
root, under docs/) and a function from their contents to the exact text that README.md or
a page under docs/ prints between `<!-- table:NAME -->` and `<!-- /table -->`.
experiments/tables.py checks and rewrites those blocks; docs/results/README.md lists the
files, what produced them, and where they hold.

Spreads are sample standard deviations (ddof = 1, experiments.stats.sample_sd); intervals
are 95 % paired t intervals; p values are two-sided paired t tests, uncorrected, with the
number of comparisons stated beside them.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from experiments import stats

R = "docs/results/"
DEMO = R + "digits_fixmatch_steps.csv"
DEMO_FUSION_ON = R + "digits_fixmatch_xla_fusion_on_summary.csv"
STUDY = R + "digits_study/summary.csv"
ABLATION = R + "digits_ablation/group_size_subset/summary.csv"
NEAR_DUPLICATE = R + "digits_ablation/start_near_duplicate/summary.csv"
SPREAD = R + "digits_ablation/start_spread/summary.csv"
FIGURE1 = R + "figure1_moons_steps.csv"
TRANSFER = R + "transfer_digits_summary.csv"
RETRAIN = R + "transfer_digits_retrain_summary.csv"
RETRAIN_CNN = R + "transfer_digits_retrain_cnn_summary.csv"
BACKBONE = R + "transfer_backbone.json"
NTK = "docs/ntk_compare/ntk_compare.csv"
MECHANISM = R + "mechanism/instances.csv"
REPLICATION = R + "replication/summary.csv"
REPLICATION_TRIALS = R + "replication/trials.csv"
REPLICATION_STEPS = R + "replication/steps.csv"

INTS = ("trial", "step", "num_labeled", "dataset_trial", "training_seed", "width", "seed",
        "min_test_loss_epoch")
FLOATS = ("test_accuracy", "crc_chosen_min", "crc_reach", "crc_gap", "crc_resolution",
          "distance", "lambda_min_emp", "lambda_plus_min_emp", "lambda_min_inf",
          "lambda_plus_min_inf", "crc_overlap", "crc_spearman", "train_loss")


@dataclass(frozen=True)
class Table:
    """A published table or number: its per-trial files and the function that prints it."""

    sources: tuple[str, ...]
    compute: Callable[..., str]

    def render(self, root: Path) -> str:
        """The text from the files under `root`; kept per content of the files, so a second
        check of unchanged files (another page, a test's copy) does not compute it again."""
        key = (self.sources, self.compute,
               tuple(hashlib.sha256((root / s).read_bytes()).hexdigest() for s in self.sources))
        if key not in _RENDERED:
            _RENDERED[key] = self.compute(*(load(root / s) for s in self.sources))
        return _RENDERED[key]


_RENDERED: dict = {}


def load(path: Path):
    """A per-trial file: a JSON document, or a CSV as a list of rows (known columns typed;
    "" stays None)."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row: dict = dict(r)
            for k, v in r.items():
                if k in INTS or k in FLOATS:
                    row[k] = None if v == "" else (int(v) if k in INTS else float(v))
                elif k == "crc_tie":
                    row[k] = None if v == "" else v == "True"
            rows.append(row)
    return rows


# --------------------------------------------------------------------------- formatting

def num(x: float, digits: int = 2) -> str:
    """A number as prose prints it: a real minus sign."""
    return f"{x:.{digits}f}".replace("-", "−")


def signed(x: float, digits: int = 2) -> str:
    return ("+" if x >= 0 else "") + num(x, digits)


def delta(row: dict) -> str:
    """'+1.43 [0.15, 2.70], p = 0.032': a paired Δ AULC, its 95 % interval and p."""
    return (f"{signed(row['diff'])} [{num(row['diff_lo'])}, {num(row['diff_hi'])}], "
            f"{stats.p_is(row['p'])}")


def spread(values, digits: int = 2) -> str:
    return f"{np.mean(values):.{digits}f} ± {stats.sample_sd(values):.{digits}f}"


def aulc(rows: list[dict]) -> dict:
    return {r["strategy"]: r for r in stats.aulc_table(rows)}


def with_ssl(rows: list[dict]) -> list[dict]:
    """A study's rows with the strategy of a second SSL algorithm named 'name [ssl]' (as
    experiments.report names the same strategy from a second workdir)."""
    first = rows[0].get("ssl")
    return [dict(r, strategy=f"{r['strategy']} [{r['ssl']}]") if r.get("ssl") != first else r
            for r in rows]


def accuracy(rows: list[dict]) -> str:
    from experiments import report

    return report.accuracy_table(rows)


def report_table(rows: list[dict]) -> str:
    """experiments.report's accuracy table with its note (the median trials)."""
    from experiments import report

    return report.markdown_table(rows)


def aulc_table(rows: list[dict]) -> str:
    table = stats.aulc_table(rows)
    return stats.markdown_table(table) + "\n" + stats.note(table)


def multiplicity(*tables: list[dict], labels: tuple[str, ...] = ()) -> str:
    """How many Δ AULC intervals exclude zero among every comparison to random in `tables`
    (a strategy named with its table's label, when given), each one's uncorrected p, and
    which stay below 0.05 after Bonferroni correction over all of them."""
    rows = [dict(r, strategy=f"{label}{r['strategy']}")
            for t, label in zip(tables, labels or [""] * len(tables))
            for r in stats.aulc_table(t) if r["paired_trials"]]
    m = len(rows)
    hits = [r for r in rows if r["excludes_zero"]]
    kept = [r for r in hits if r["p"] * m < 0.05]
    text = f"{len(hits)} of {m} intervals exclude zero"
    if hits:
        text += " (" + "; ".join(f"{r['strategy']} {signed(r['diff'])}, {stats.p_is(r['p'])}"
                                 for r in hits) + ")"
    text += f"; after Bonferroni correction (p × {m}) "
    if not kept:
        return text + "none stays below 0.05"
    return text + (f"{len(kept)} stay{'s' if len(kept) == 1 else ''} below 0.05 ("
                   + "; ".join(f"{r['strategy']}, adjusted {stats.p_is(r['p'] * m)}"
                               for r in kept) + ")")


# --------------------------------------------------------------------------- the demo

def demo_aulc(rows: list[dict]) -> str:
    return ", ".join(f"{s} {delta(r)}" for s, r in aulc(rows).items() if r["paired_trials"])


def demo_fusion_on(rows: list[dict]) -> str:
    counts = sorted({r["num_labeled"] for r in rows})
    first = [100 * r["test_accuracy"] for r in rows if r["num_labeled"] == counts[0]
             and r["strategy"] == "crc"]
    last = [100 * r["test_accuracy"] for r in rows if r["num_labeled"] == counts[-1]
            and r["strategy"] == "crc"]
    return (f"{spread(first)} at {counts[0]} labels for every strategy and, e.g., crc "
            f"{spread(last)} at {counts[-1]} labels")


def figure3_slope(rows: list[dict]) -> str:
    """Figure 3 (a): the log-log slope of epochs to minimal test loss at step s + 1 against
    the smallest chosen score at step s (experiments.figures.crc_points), CRC rows."""
    by_trial: dict = {}
    for r in rows:
        if r["strategy"] == "crc":
            by_trial.setdefault(r["trial"], {})[r["step"]] = r
    pairs = []
    for steps in by_trial.values():
        for s, r in steps.items():
            following = steps.get(s + 1)
            if following and (r["crc_chosen_min"] or 0) > 0 and following["min_test_loss_epoch"]:
                pairs.append((r["crc_chosen_min"], following["min_test_loss_epoch"]))
    lam, epochs = np.array(pairs).T
    slope = np.polyfit(np.log(lam), np.log(epochs), 1)[0]
    return f"{num(slope)} over {len(pairs)} points"


def figure3_decisions(rows: list[dict]) -> str:
    """The demo's CRC decisions: median reach (range), median and smallest gap, ties."""
    parts = []
    for s in dict.fromkeys(r["strategy"] for r in rows):
        ds = [r for r in rows if r["strategy"] == s and r["crc_gap"] is not None]
        if not ds:
            continue
        reach = 100 * np.array([r["crc_reach"] for r in ds])
        gap = 100 * np.array([r["crc_gap"] for r in ds])
        ties = sum(r["crc_tie"] for r in ds)
        parts.append(f"`{s}` reached a median {np.median(reach):.0f} % of the score ceiling "
                     f"({reach.min():.0f}–{reach.max():.0f} %) and led the runner-up by a "
                     f"median {np.median(gap):.2g} % (smallest {gap.min():.2g} %), "
                     f"{ties} of {len(ds)} steps ties at float32 resolution")
    return "; ".join(parts)


# --------------------------------------------------------------------------- the ablation

def ablation_starts(near: list[dict], part1: list[dict], far: list[dict]) -> str:
    """The three initial sets side by side: step-0 accuracy, both AULCs, Δ CRC − random."""
    lines = ["| start (n trials) | step-0 accuracy (20 labels), mean ± SD | random AULC [95% CI] "
             "| CRC (G = 5, last) AULC [95% CI] | Δ CRC − random [95% CI], p |",
             "|---|---|---|---|---|"]
    for name, rows, crc in (("near_duplicate", near, "crc"),
                            ("random (part 1)", part1, "crc:group_size=5"),
                            ("spread", far, "crc")):
        table = aulc(rows)
        step0 = [100 * r["test_accuracy"] for r in rows
                 if r["strategy"] == "random" and r["step"] == 0]
        a, b = table["random"], table[crc]
        lines.append(f"| {name} (n = {b['paired_trials']}) | {spread(step0)} "
                     f"| {a['aulc']:.2f} [{a['aulc_lo']:.2f}, {a['aulc_hi']:.2f}] "
                     f"| {b['aulc']:.2f} [{b['aulc_lo']:.2f}, {b['aulc_hi']:.2f}] "
                     f"| {b['diff']:+.2f} [{b['diff_lo']:.2f}, {b['diff_hi']:.2f}], "
                     f"{stats.p_is(b['p'])} |")
    return "\n".join(lines) + "\n"


def last_layer_range(rows: list[dict]) -> str:
    diffs = [r["diff"] for s, r in aulc(rows).items()
             if r["paired_trials"] and "subset=all" not in s]
    return f"{signed(min(diffs))} to {signed(max(diffs))}"


def final_accuracy(rows: list[dict], strategies: tuple[str, ...]) -> str:
    n = max(r["num_labeled"] for r in rows)
    means = [np.mean([100 * r["test_accuracy"] for r in rows
                      if r["strategy"] == s and r["num_labeled"] == n]) for s in strategies]
    return " vs ".join(f"{m:.1f}" for m in means) + f" % at {n} labels"


def one(strategy: str) -> Callable[[list[dict]], str]:
    return lambda rows: delta(aulc(rows)[strategy])


# --------------------------------------------------------------------------- Figure 1

def curves(rows: list[dict]) -> dict:
    """{strategy: (labeled counts, accuracies in % (trials, steps))}, trials in order."""
    out = {}
    for s in dict.fromkeys(r["strategy"] for r in rows):
        trials: dict = {}
        for r in rows:
            if r["strategy"] == s:
                trials.setdefault(r["trial"], {})[r["num_labeled"]] = 100 * r["test_accuracy"]
        counts = np.array(sorted(next(iter(trials.values()))))
        out[s] = (counts, np.array([[trials[t][n] for n in counts] for t in sorted(trials)]))
    return out


def figure1_spread(rows: list[dict]) -> str:
    """Per strategy and labeled count: mean ± SD [min, max] over the trials."""
    got = curves(rows)
    counts = next(iter(got.values()))[0]
    lines = ["| strategy, mean ± SD [min, max] | " + " | ".join(str(n) for n in counts) + " |",
             "|---|" + "---|" * len(counts)]
    for s, (_, acc) in got.items():
        cells = [f"{m:.1f} ± {sd:.1f} [{lo:.1f}, {hi:.1f}]" for m, sd, lo, hi in
                 zip(acc.mean(0), stats.sample_sd(acc, axis=0), acc.min(0), acc.max(0))]
        lines.append(f"| {s} (n = {len(acc)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def figure1_trials(rows: list[dict]) -> str:
    got = curves(rows)
    counts = next(iter(got.values()))[0]
    lines = ["| strategy | trial | " + " | ".join(str(n) for n in counts) + " |",
             "|---|---|" + "---|" * len(counts)]
    for s, (_, acc) in got.items():
        for t, row in enumerate(acc):
            lines.append(f"| {s} | {t} | " + " | ".join(f"{a:.1f}" for a in row) + " |")
    return "\n".join(lines) + "\n"


def figure1_queries(rows: list[dict]) -> str:
    lines = ["| strategy | queries in class 1 (red) | steps after step 0 below 90% |",
             "|---|---|---|"]
    for s, (_, acc) in curves(rows).items():
        labels = [int(x) for r in rows if r["strategy"] == s
                  for x in (r["acquired_labels"] or "").split()]
        lines.append(f"| {s} | {sum(labels)}/{len(labels)} | "
                     f"{int((acc[:, 1:] < 90).sum())}/{acc[:, 1:].size} |")
    return "\n".join(lines) + "\n"


def figure1_aulc(rows: list[dict]) -> str:
    table = aulc(rows)
    base = table["random"]["aulc"]
    crc, full = table["crc"], table["crc:subset=all"]
    return (f"{delta(crc)} (last layer) and {delta(full)} (all parameters) over random's "
            f"{base:.2f}")


def figure1_trial_deltas(rows: list[dict]) -> str:
    """Last-layer CRC's per-trial AULC difference to random: the largest, and the range of
    the other trials."""
    got = stats.curves(rows)
    deltas = {t: stats.aulc(*got["crc"][t]) - stats.aulc(*got["random"][t])
              for t in sorted(got["crc"])}
    top = max(deltas, key=lambda t: deltas[t])
    rest = [d for t, d in deltas.items() if t != top]
    return (f"{signed(deltas[top])} points in trial {top}, {signed(min(rest))} to "
            f"{signed(max(rest))} in the other {len(rest)}")


# --------------------------------------------------------------------------- transfer

def retrain_variance(rows: list[dict]) -> str:
    from experiments import retrain

    return retrain.variance_table(rows)


def retrain_excerpt(rows: list[dict]) -> str:
    """The README's five rows of the variance table."""
    keep = {("random", 20), ("random", 70), ("entropy", 50), ("crc", 20), ("crc", 70)}
    lines = retrain_variance(rows).splitlines()
    picked = [line for line in lines[2:]
              if tuple(c.strip() for c in line.split("|")[1:3]) in
              {(s, str(n)) for s, n in keep}]
    return "\n".join(lines[:2] + picked) + "\n"


def retrain_ranges(rows: list[dict]) -> str:
    """In how many cells of the variance table the training SD is below the data-set SD,
    and the range of each over the cells."""
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["strategy"], r["num_labeled"]), {}).setdefault(
            r["dataset_trial"], []).append(100 * r["test_accuracy"])
    training = [np.sqrt(np.mean([np.var(v, ddof=1) for v in c.values()])) for c in cells.values()]
    datasets = [stats.sample_sd([np.mean(v) for v in c.values()]) for c in cells.values()]
    below = sum(t < d for t, d in zip(training, datasets))
    return (f"below it in {below} of {len(cells)} cells; {min(training):.1f}–"
            f"{max(training):.1f} points on a fixed labeled set against {min(datasets):.1f}–"
            f"{max(datasets):.1f} points between the acquired sets")


BACKBONE_CHECKPOINTS = (30, 60)   # labels at which the --backbone study reads accuracy


def backbone_cell(values: list) -> str:
    """Mean ± SD (sample standard deviation, n − 1) in %, then each seed's value."""
    mean = 100 * statistics.mean(values)
    sd = f" ± {100 * statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{mean:.1f}{sd} ({', '.join(f'{100 * v:.1f}' for v in values)})"


def backbone(doc: dict, style: str) -> str:
    """The --backbone transfer study from its per-seed JSON: mean ± SD over seeds, in the
    layout of docs/results/transfer_backbone.md ("results") or docs/labeling.md."""
    checkpoints = BACKBONE_CHECKPOINTS
    results = {tuple(k.split("/")): [{int(n): v for n, v in run.items()} for run in runs]
               for k, runs in doc["runs"].items()}
    if style == "results":
        describe = {"backbone": "`--backbone cnn.onnx`, linear head, Mean Teacher",
                    "pixels": "pixels 32×32, MLP 256, FixMatch (defaults)"}
        lines = ["| path | strategy (n seeds) | 30 labels | 60 labels |",
                 "| --- | --- | --- | --- |"]
        for (path, strategy), runs in results.items():
            lines.append(f"| {describe[path]} | {strategy} (n = {len(runs)}) | " + " | ".join(
                backbone_cell([r[n] for r in runs]) for n in checkpoints) + " |")
        return "\n".join(lines) + "\n"
    describe = {"backbone": "`--backbone cnn.onnx`, linear head",
                "pixels": "pixels, MLP-256, FixMatch"}
    lines = ["| path | strategy (n seeds) | 30 labels | 60 labels |", "| --- | --- | ---: | ---: |"]
    for (path, strategy), runs in results.items():
        lines.append(f"| {describe[path]} | {strategy} (n = {len(runs)}) | " + " | ".join(
            spread([100 * r[n] for r in runs], 1) + " %" for n in checkpoints) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- ntk_compare

def ntk_summary(rows: list[dict]) -> dict:
    from experiments import ntk_compare

    return ntk_compare.summarize(rows)


def ntk_slopes(rows: list[dict]) -> str:
    from experiments import ntk_compare

    return ntk_compare.slopes_table(ntk_summary(rows))


def ntk_cells(rows: list[dict]) -> str:
    from experiments import ntk_compare

    return ntk_compare.cells_table(ntk_summary(rows))


def ntk_widest(rows: list[dict]) -> str:
    """The MLP at its widest: the distance at initialization and the CRC overlap range."""
    cells = ntk_summary(rows)
    init = cells[("digits", "mlp", "init")]
    width = max(init)
    overlap = [cells[("digits", "mlp", stage)][width]["crc_overlap"][0]
               for stage in ("init", "trained")]
    mean, sd = init[width]["distance"]
    return (f"{mean:.3f} ± {sd:.3f} at width {width}, and CRC picks "
            f"{100 * min(overlap):.0f}–{100 * max(overlap):.0f} % of the same groups from "
            f"both kernels at width {width}")


def slope_of(rows: list[dict], model: str, stage: str) -> str:
    from experiments import ntk_compare

    widths = ntk_summary(rows)[("digits", model, stage)]
    ws = list(widths)
    return num(ntk_compare.fit_slope(ws, [widths[w]["log_distance"][0] for w in ws])[0])


# --------------------------------------------------------------------------- the replication

def replication_trials(summary: list[dict], trials: list[dict]) -> dict:
    """{trial: {strategy: AULC}} of trials.csv, which must equal the AULCs of summary.csv
    (experiments.replication.trials_from_summary) to its six decimals."""
    from experiments import replication

    held = {str(r["trial"]): {s: float(v) for s, v in r.items() if s != "trial"} for r in trials}
    computed = {t: {s: round(a, 6) for s, a in v.items()}
                for t, v in replication.per_trial_aulc(summary).items()}
    if held != computed:
        raise ValueError(f"{REPLICATION_TRIALS} differs from the AULCs of {REPLICATION}")
    return held


def replication_table(summary: list[dict], trials: list[dict]) -> str:
    """The pre-registered table (experiments.replication.table): its rows, without the note."""
    from experiments import replication

    return replication.table(replication_trials(summary, trials)).split("\n\n")[0] + "\n"


def replication_test(strategy: str, style: str) -> Callable[[list[dict], list[dict]], str]:
    """One strategy's paired t test against random, as the replication's pages quote it:
    "+0.58 [−0.24, +1.41] points, t = 1.48, p = 0.156" ("test"), or its p multiplied by
    the number of tests against random ("bonferroni")."""
    def text(summary: list[dict], trials: list[dict]) -> str:
        from experiments import replication

        per_trial = replication_trials(summary, trials)
        r = replication.paired_test([v[strategy] - v[replication.BASELINE]
                                     for v in per_trial.values()])
        if style == "bonferroni":
            tests = len(next(iter(per_trial.values()))) - 1
            return f"p = {min(1.0, r['p'] * tests):.3g}"
        return (f"{signed(r['mean'])} [{signed(r['lo'])}, {signed(r['hi'])}] points, "
                f"t = {r['t']:.2f}, p = {r['p']:.3g}")
    return text


def interval(strategy: str) -> Callable[[list[dict]], str]:
    """A strategy's paired Δ AULC to random with its 95 % interval, without p."""
    def text(rows: list[dict]) -> str:
        r = aulc(rows)[strategy]
        return f"{signed(r['diff'])} [{num(r['diff_lo'])}, {num(r['diff_hi'])}]"
    return text


def crc_decisions(steps: list[dict]) -> list[dict]:
    """The CRC decisions of a per-step file (`python -m experiments.tables export`), in the
    order and shape experiments.report.crc_decisions reads them from the run's journals
    (the runs in the file's order, each one's trial folders in name order)."""
    from crc_jax.run.rundir import strategy_dirname

    order = list(dict.fromkeys(r["strategy"] for r in steps))
    found = [{"strategy": strategy_dirname(r["strategy"]), "trial": f"trial_{r['trial']}",
              "step": r["step"], "num_labeled": r["num_labeled"], "gap": r["crc_gap"],
              "resolution": r["crc_resolution"], "tie": r["crc_tie"], "reach": r["crc_reach"],
              "order": order.index(r["strategy"])}
             for r in steps if r["crc_tie"] is not None]
    return sorted(found, key=lambda d: (d["order"], d["trial"]))


def decisions_table(steps: list[dict]) -> str:
    from experiments import report

    return report.crc_markdown(crc_decisions(steps))


def replication_ties(steps: list[dict]) -> str:
    """How many decisions of each CRC variant were ties at float32 resolution."""
    parts = []
    for s, name in (("crc:group_size=5", "last-layer"),
                    ("crc:subset=all,group_size=5", "all-parameter")):
        ds = [r for r in steps if r["strategy"] == s and r["crc_tie"] is not None]
        parts.append(f"{sum(r['crc_tie'] for r in ds)} of the {len(ds)} {name}")
    return " and ".join(parts)


# --------------------------------------------------------------------------- the mechanism

def mechanism_reps() -> int:
    """The bootstrap resamples of the run (experiments/configs/mechanism.py)."""
    from experiments.configs import mechanism as config

    return int(config.get_config().bootstrap)


def mechanism_rows(rows: list[dict]) -> list[dict]:
    """instances.csv's rows as experiments.mechanism.read_rows parses them."""
    return [{k: v if k in ("domain", "pick", "group") else float(v) for k, v in r.items()}
            for r in rows]


def mechanism_table(rows: list[dict]) -> str:
    from experiments import mechanism

    return mechanism.markdown(mechanism_rows(rows), mechanism_reps())


@functools.lru_cache(maxsize=4)
def _mechanism_summary(frozen: tuple) -> tuple:
    from experiments import mechanism

    return tuple(mechanism.summarize([dict(r) for r in frozen], mechanism_reps()))


def mechanism_summary(rows: list[dict]) -> tuple:
    """experiments.mechanism.summarize over all instances (computed once per file)."""
    return _mechanism_summary(tuple(tuple(r.items()) for r in mechanism_rows(rows)))


def ci(row: dict, digits: int = 2) -> str:
    """'+0.30 [+0.05, +0.53]': a mean and its interval as prose prints them."""
    return (f"{signed(row['mean'], digits)} [{signed(row['lo'], digits)}, "
            f"{signed(row['hi'], digits)}]")


def mech_rho(predictor: str, outcome: str) -> Callable[[list[dict]], str]:
    """The mean within-instance Spearman ρ of a score with an outcome, and its interval."""
    def text(rows: list[dict]) -> str:
        return ci(next(r for r in mechanism_summary(rows) if r["kind"] == "spearman"
                       and (r["predictor"], r["outcome"]) == (predictor, outcome)))
    return text


def top_vs_bottom(rows: list[dict], outcome: str) -> dict:
    return next(r for r in mechanism_summary(rows)
                if r["kind"] == "top_vs_bottom" and r["outcome"] == outcome)


def mech_pair(outcome: str, style: str) -> Callable[[list[dict]], str]:
    """The paired top-vs-bottom comparison of an outcome, in one of the README's phrasings."""
    def text(rows: list[dict]) -> str:
        r = top_vs_bottom(rows, outcome)
        if style == "ci":
            return ci(r)
        if style == "wins":            # "16 of 24 instances, mean +0.83 [+0.23, +1.59]"
            return f"{r['wins']} of {r['n']} instances, mean {ci(r)}"
        if style == "split":           # "top faster in 10, bottom in 14"
            return f"top faster in {r['wins']}, bottom in {r['losses']}"
        if style == "steps":           # bottom − top in steps, the sign turned
            turned = {"mean": -r["mean"], "lo": -r["hi"], "hi": -r["lo"]}
            return f"{num(turned['mean'], 1)} [{num(turned['lo'], 1)}, {num(turned['hi'], 1)}]"
        if style == "losses":          # "15 of 24 instances and above it in 6 (3 ties), ..."
            return (f"{r['losses']} of {r['n']} instances and above it in {r['wins']} "
                    f"({r['ties']} ties), mean {ci(r)} points, sign test p = {r['sign_p']:.2g}")
        return (f"{r['losses']} of {r['n']}, {ci(r)}, p = {r['sign_p']:.2g}")   # "short"
    return text


def mechanism_counts(rows: list[dict]) -> str:
    summary = mechanism_summary(rows)
    return (f"{sum(r['kind'] == 'spearman' for r in summary)} correlations and "
            f"{sum(r['kind'] == 'top_vs_bottom' for r in summary)} paired comparisons")


def mechanism_score_vs_lambda(rows: list[dict]) -> str:
    """The within-instance Spearman ρ of CRC's trained-model score (last layer) with the
    realised λ⁺min (the score under θ_0 on all parameters), mean and bootstrap interval."""
    from experiments import mechanism

    inst = mechanism.by_instance(mechanism_rows(rows))
    rho = [mechanism.spearman4([v[p]["score_trained_last"] for p in mechanism.PICKS],
                               [v[p]["score_init_all"] for p in mechanism.PICKS])
           for v in inst.values()]
    mean, lo, hi = mechanism.bootstrap_mean(rho, mechanism_reps())
    return ci({"mean": mean, "lo": lo, "hi": hi})


def mechanism_trained_vs_init(rows: list[dict]) -> str:
    """Per domain, the mean over instances of the Spearman correlation of the trained and
    the initial last-layer scores over all candidate groups."""
    from experiments import mechanism

    inst = mechanism.by_instance(mechanism_rows(rows))
    means = {d: np.mean([v["top"]["trained_init_spearman"] for k, v in inst.items() if k[0] == d])
             for d in sorted({k[0] for k in inst})}
    return ", ".join(f"{m:.2f} on {d}" for d, m in means.items())


def mechanism_project(rows: list[dict]) -> str:
    """Of the correlations with the project's training outcomes, those whose interval
    excludes 0."""
    cells = [r for r in mechanism_summary(rows)
             if r["kind"] == "spearman" and r["outcome"].startswith("proj_")]
    hits = [r for r in cells if r["lo"] > 0 or r["hi"] < 0]
    return (f"of the {len(cells)} intervals over all instances, {len(hits)} "
            f"exclude{'s' if len(hits) == 1 else ''} 0"
            + "".join(f": {ci(r)} ({r['predictor']} with {r['outcome']})" for r in hits))


def mechanism_full_rank(rows: list[dict]) -> str:
    """How many instances scored every pick at r = |L| + G (the rank rule's r and each
    pick's rank, docs/design.md "CRC, exactly")."""
    from experiments import mechanism

    inst = mechanism.by_instance(mechanism_rows(rows))
    full = sum(all(v[p]["rank_used"] == v[p]["group_rank"] == v[p]["new_size"]
                   for p in mechanism.PICKS) for v in inst.values())
    return f"All {full} instances" if full == len(inst) else f"{full} of {len(inst)} instances"


def mechanism_zero_scores(rows: list[dict]) -> str:
    """The picks that scored 0 on all parameters at θ_0, counted per domain and pick."""
    zero: dict = {}
    for r in mechanism_rows(rows):
        if r["score_init_all"] == 0:
            zero[(r["domain"], r["pick"])] = zero.get((r["domain"], r["pick"]), 0) + 1
    return ", ".join(f"{n} {d} {p} groups" for (d, p), n in sorted(zero.items())) or "no group"


# --------------------------------------------------------------------------- the registry

TABLES: dict[str, Table] = {
    # the demo (make demo): today's XLA:CPU default
    "demo": Table((DEMO,), accuracy),
    "demo_aulc": Table((DEMO,), aulc_table),
    "demo_aulc_line": Table((DEMO,), demo_aulc),
    "demo_fusion_on": Table((DEMO_FUSION_ON,), demo_fusion_on),
    "demo_fusion_on_table": Table((DEMO_FUSION_ON,), accuracy),
    "demo_fusion_on_aulc": Table((DEMO_FUSION_ON,), aulc_table),
    "figure3_slope": Table((DEMO,), figure3_slope),
    "figure3_decisions": Table((DEMO,), figure3_decisions),
    # the comparison study
    "study": Table((STUDY,), lambda rows: accuracy(with_ssl(rows))),
    "study_aulc": Table((STUDY,), lambda rows: aulc_table(with_ssl(rows))),
    "study_multiplicity": Table((STUDY,), lambda rows: multiplicity(with_ssl(rows))),
    # the CRC ablation
    "ablation": Table((ABLATION,), accuracy),
    "ablation_aulc": Table((ABLATION,), aulc_table),
    "ablation_last_layer_range": Table((ABLATION,), last_layer_range),
    "ablation_all_g5": Table((ABLATION,), one("crc:subset=all,group_size=5")),
    "ablation_all_g5_final": Table((ABLATION,), lambda rows: final_accuracy(
        rows, ("crc:subset=all,group_size=5", "random"))),
    "near_duplicate": Table((NEAR_DUPLICATE,), accuracy),
    "near_duplicate_aulc": Table((NEAR_DUPLICATE,), aulc_table),
    "near_duplicate_delta": Table((NEAR_DUPLICATE,), one("crc")),
    "spread": Table((SPREAD,), accuracy),
    "spread_aulc": Table((SPREAD,), aulc_table),
    "spread_delta": Table((SPREAD,), one("crc")),
    "ablation_starts": Table((NEAR_DUPLICATE, ABLATION, SPREAD), ablation_starts),
    "ablation_multiplicity": Table((ABLATION, NEAR_DUPLICATE, SPREAD), lambda *t: multiplicity(
        *t, labels=("", "near-duplicate start: ", "spread start: "))),
    # Figure 1
    "figure1": Table((FIGURE1,), figure1_spread),
    "figure1_trials": Table((FIGURE1,), figure1_trials),
    "figure1_queries": Table((FIGURE1,), figure1_queries),
    "figure1_aulc": Table((FIGURE1,), aulc_table),
    "figure1_aulc_line": Table((FIGURE1,), figure1_aulc),
    "figure1_trial_deltas": Table((FIGURE1,), figure1_trial_deltas),
    # Figure 2 and the retraining of its labeled sets (Appendix B)
    "transfer": Table((TRANSFER,), accuracy),
    "retrain_variance": Table((RETRAIN,), retrain_variance),
    "retrain_variance_excerpt": Table((RETRAIN,), retrain_excerpt),
    "retrain_ranges": Table((RETRAIN,), retrain_ranges),
    "retrain_cnn": Table((RETRAIN_CNN,), accuracy),
    # transfer through --backbone
    "backbone": Table((BACKBONE,), lambda doc: backbone(doc, "results")),
    "backbone_labeling": Table((BACKBONE,), lambda doc: backbone(doc, "labeling")),
    # empirical vs infinite-width NTK
    "ntk_slopes": Table((NTK,), ntk_slopes),
    "ntk_cells": Table((NTK,), ntk_cells),
    "ntk_mlp_init_slope": Table((NTK,), lambda rows: slope_of(rows, "mlp", "init")),
    "ntk_widest": Table((NTK,), ntk_widest),
    # the pre-registered replication
    "replication": Table((REPLICATION, REPLICATION_TRIALS), replication_table),
    "replication_primary": Table((REPLICATION, REPLICATION_TRIALS), replication_test(
        "crc:subset=all,group_size=5", "test")),
    "replication_secondary": Table((REPLICATION, REPLICATION_TRIALS), replication_test(
        "crc:group_size=5", "test")),
    "replication_secondary_bonferroni": Table((REPLICATION, REPLICATION_TRIALS),
                                              replication_test("crc:group_size=5", "bonferroni")),
    "replication_report": Table((REPLICATION,), lambda rows: report_table(rows)),
    "replication_report_aulc": Table((REPLICATION,), aulc_table),
    "replication_decisions": Table((REPLICATION_STEPS,), decisions_table),
    "replication_ties": Table((REPLICATION_STEPS,), replication_ties),
    "ablation_all_g5_interval": Table((ABLATION,), interval("crc:subset=all,group_size=5")),
    "ablation_g5_interval": Table((ABLATION,), interval("crc:group_size=5")),
    # the mechanism experiment
    "mechanism": Table((MECHANISM,), mechanism_table),
    "mechanism_primary": Table((MECHANISM,), mech_rho("score_trained_last", "gd_speed_1000")),
    "mechanism_counts": Table((MECHANISM,), mechanism_counts),
    "mechanism_score_vs_lambda": Table((MECHANISM,), mechanism_score_vs_lambda),
    "mechanism_trained_vs_init": Table((MECHANISM,), mechanism_trained_vs_init),
    "mechanism_gd_1000": Table((MECHANISM,), mech_pair("gd_speed_1000", "wins")),
    "mechanism_gd_2000": Table((MECHANISM,), mech_pair("gd_speed_2000", "ci")),
    "mechanism_gd_0p1pct": Table((MECHANISM,), mech_rho("score_trained_last", "gd_pace_0p1pct")),
    "mechanism_gd_100": Table((MECHANISM,), mech_rho("score_trained_last", "gd_speed_100")),
    "mechanism_gd_10pct": Table((MECHANISM,), mech_rho("score_trained_last", "gd_pace_10pct")),
    "mechanism_gd_10pct_steps": Table((MECHANISM,), mech_pair("gd_pace_10pct", "steps")),
    "mechanism_project": Table((MECHANISM,), mechanism_project),
    "mechanism_project_end": Table((MECHANISM,), mech_pair("proj_speed_f1", "split")),
    "mechanism_accuracy": Table((MECHANISM,), mech_rho("score_trained_last", "test_acc")),
    "mechanism_accuracy_pairs": Table((MECHANISM,), mech_pair("test_acc", "losses")),
    "mechanism_accuracy_final": Table((MECHANISM,), mech_pair("test_acc_final", "short")),
    "mechanism_full_rank": Table((MECHANISM,), mechanism_full_rank),
    "mechanism_zero_scores": Table((MECHANISM,), mechanism_zero_scores),
}
