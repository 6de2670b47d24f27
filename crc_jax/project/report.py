"""`status`: labels per class, rounds, an accuracy estimate, a learning-curve PNG, and how
decisive each CRC round's choice was (crc_jax.acquisition.crc.diagnostics).

The accuracy estimate needs no held-out labels: each trained round predicted a class for
every image it queued, before anyone labeled them; once they are labeled, the share of
right predictions estimates that round's accuracy on unlabeled images (a 95% Wilson
interval gives its uncertainty). The queued images were chosen by the strategy, not at
random, so for strategies that favour hard images (entropy, CRC's well-spread groups
less so) the estimate leans pessimistic; with `--strategy random` it is unbiased.
"""

from __future__ import annotations

import collections
import io
import logging
import math
from pathlib import Path

from crc_jax import durable

log = logging.getLogger(__name__)


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sound for small counts and 0 or 1)."""
    if total == 0:
        return 0.0, 1.0
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def round_accuracies(project) -> list[dict]:
    """Per trained round: num_labeled, checked (queued images labeled since), correct, interval."""
    labels = project.labels()
    rows = []
    for entry in project.rounds():
        if entry.get("predicted") is None:
            continue
        classes = entry["classes"]
        checked = correct = 0
        for image, predicted in zip(entry["queue"], entry["predicted"]):
            if image in labels:
                checked += 1
                correct += int(labels[image] == classes[predicted])
        if checked:
            low, high = wilson_interval(correct, checked)
            rows.append({"round": entry["step"], "num_labeled": entry["num_labeled"],
                         "checked": checked, "correct": correct, "accuracy": correct / checked,
                         "low": low, "high": high})
    return rows


def crc_decisions(project) -> list[dict]:
    """Per round that CRC picked: round, num_labeled and the diagnostics summary written
    into the rounds log (crc_jax.acquisition.crc.diagnostics.summary, without its records)."""
    rows = []
    for entry in project.rounds():
        diag = entry.get("crc_diagnostics")
        if diag:
            rows.append({"round": entry["step"], "num_labeled": entry["num_labeled"],
                         **{k: v for k, v in diag.items() if k != "records"}})
    return rows


def crc_lines(rows: list) -> list[str]:
    """One line per CRC round for `crc-jax status`: how far the chosen group beat the
    runner-up, against float32 resolution; a tie is said so."""
    lines = []
    for r in rows:
        if r["gap"] is None:
            margin = "no margin (every group was chosen, or none scored above 0)"
        else:
            margin = (f"chosen group ahead of the runner-up by {100 * r['gap']:.3g}% "
                      f"(float32 resolution {100 * r['resolution']:.3g}%)")
        reach = "" if r["reach"] is None else f", {100 * r['reach']:.3g}% of the ceiling"
        tie = ": a TIE, rounding could have picked another group" if r["tie"] else ""
        lines.append(f"  round {r['round']} ({r['num_labeled']} labeled): {margin}{reach}{tie}")
    return lines


def plot_curve(rows: list, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
    x = [r["num_labeled"] for r in rows]
    y = [r["accuracy"] for r in rows]
    err = [[r["accuracy"] - r["low"] for r in rows], [r["high"] - r["accuracy"] for r in rows]]
    ax.errorbar(x, y, yerr=err, marker="o", capsize=3)
    ax.set_xlabel("labeled images the model trained on")
    ax.set_ylabel("accuracy on the next queue")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    durable.write_atomic(path, buffer.getvalue())


def status(project) -> dict:
    """A summary dict; writes DIR/learning_curve.png when a round can be scored."""
    answers = project.answers()
    per_class = collections.Counter(c for c in answers.values() if c is not None)
    rounds = project.rounds()
    accuracies = round_accuracies(project)
    curve = None
    if accuracies:
        curve = project.dir / "learning_curve.png"
        plot_curve(accuracies, curve)
    return {"images": len(project), "classes": project.classes,
            "labels_per_class": {c: per_class.get(c, 0) for c in project.classes},
            "labeled": sum(per_class.values()),
            "skipped": sum(1 for c in answers.values() if c is None),
            "rounds": len(rounds), "queued": len(project.queue_ids()),
            "pending": len(project.pending()), "accuracy": accuracies[-1] if accuracies else None,
            "crc_by_round": crc_decisions(project),
            "accuracy_by_round": accuracies, "learning_curve": str(curve) if curve else None}
