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
import json
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
        return self.compute(*(load(root / s) for s in self.sources))


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


def backbone(doc: dict, style: str) -> str:
    """The --backbone transfer study from its per-seed JSON: mean ± SD over seeds, in the
    layout of docs/results/transfer_backbone.md ("results") or docs/labeling.md."""
    from experiments import transfer_backbone

    checkpoints = transfer_backbone.CHECKPOINTS
    results = {tuple(k.split("/")): [{int(n): v for n, v in run.items()} for run in runs]
               for k, runs in doc["runs"].items()}
    if style == "results":
        describe = {"backbone": "`--backbone cnn.onnx`, linear head, Mean Teacher",
                    "pixels": "pixels 32×32, MLP 256, FixMatch (defaults)"}
        lines = ["| path | strategy (n seeds) | 30 labels | 60 labels |",
                 "| --- | --- | --- | --- |"]
        for (path, strategy), runs in results.items():
            lines.append(f"| {describe[path]} | {strategy} (n = {len(runs)}) | " + " | ".join(
                transfer_backbone.cell([r[n] for r in runs]) for n in checkpoints) + " |")
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
}
