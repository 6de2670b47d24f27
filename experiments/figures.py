"""The paper's figures from real runs.

    python -m experiments.figures moons [--workdir runs/figure1_moons] [--out DIR] [--seed S]
        Figure 1 (config moons_pi): random, CRC and CRC on all parameters from 4 pivots
        off the class boundary, 5 trials; the PNG shows each strategy's accuracy per step
        (mean, band min to max) and trial 0's CRC decision boundary after each step;
        figure1_moons.md has the numbers. The run goes into --workdir, which must be new,
        empty, or one this command made before (only its own files are replaced); the PNG
        and the .md go to --out (default: the workdir).
    python -m experiments.figures eigen RUNDIR [RUNDIR ...] [--out DIR]
        Figure 3 from CRC journals: (a) the smallest chosen-group eigenvalue at an
        acquisition against the epochs until the test loss reached its minimum when
        training on the enlarged set, log-log with the fitted slope; (b) the distribution
        of candidate-group eigenvalues at each acquisition step; (c) per trial, the chosen
        group's relative lead over the runner-up at each step, against its float32
        resolution, ties marked (the journals' CRC diagnostics). --out defaults to the
        first RUNDIR.
    python -m experiments.figures transfer RUNDIR [--out DIR]
        Figure 2 (Appendix B.2) from a run of the `transfer` config (first query by an
        untrained model): (left) test accuracy against labeled count per strategy, mean ±
        SD (sample, ddof = 1) over trials; (right) the accuracy gained by each acquisition, acc(step s) −
        acc(step s−1), mean over trials. --out defaults to RUNDIR.

A bad argument prints one `error:` line and exits with status 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from crc_jax.errors import UsageError  # noqa: E402 (after the environment above)
from crc_jax.runtime import command  # noqa: E402

MARKER = "figure1_moons.json"  # written into a workdir this command made
JOURNAL = Path("crc") / "trial_0" / "journal.jsonl"


class FigureError(ValueError):
    """A bad argument or input of a figure command (one line)."""



def save(fig, path: Path) -> Path:
    """Lay out, write and close a figure; returns where it went."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path

def claim_workdir(workdir: Path, seed: int, journals=(JOURNAL,)) -> None:
    """Make `workdir` ours: create it, or reuse one this command made (removing only the
    journals and summary it wrote there). Refuses any other non-empty directory: never
    delete what this command did not create (crc_jax.durable.claim_dir decides)."""
    from crc_jax import durable
    from crc_jax.errors import StorageError

    try:
        durable.claim_dir(workdir, MARKER, command="experiments.figures moons", flag="--workdir")
    except StorageError as err:
        raise FigureError(str(err)) from None
    for journal in journals:
        (workdir / journal).unlink(missing_ok=True)
    (workdir / "summary.csv").unlink(missing_ok=True)
    (workdir / MARKER).write_text(json.dumps({"made_by": "experiments.figures moons",
                                              "seed": seed}) + "\n")


def out_folder(out: Path) -> Path:
    """--out: the folder the PNG goes to (created if missing); not an existing file."""
    if out.exists() and not out.is_dir():
        raise FigureError(f"--out {out}: exists and is not a directory; give a folder "
                          "(the figure's file name is fixed)")
    return out


def moons_config(seed: int, trials: int | None = None, smoke: bool = False):
    """moons_pi with the figure's seed (and, for tests, fewer trials or smoke scale)."""
    from experiments.configs import moons_pi
    from experiments.configs.base import apply_smoke

    config = moons_pi.get_config()
    config.seed = seed
    config.smoke = smoke
    apply_smoke(config)
    if trials:
        config.trials = trials
    config.train.progress = False
    return config


def figure1_moons(out: Path, workdir: Path, *, seed: int = 0, trials: int | None = None,
                  smoke: bool = False) -> Path:
    """Run moons_pi (every strategy, every trial) into `workdir` and draw Figure 1: each
    strategy's accuracy per step over the trials (mean, band: min to max), and trial 0's
    CRC decision boundary after every step. Writes figure1_moons.png and .md into `out`."""
    from crc_jax import config as config_lib
    from crc_jax import durable
    from crc_jax.run import environment, loop

    config = moons_config(seed, trials, smoke)
    strategies = config_lib.validate(config)
    trial_dirs = {(spec, t): Path(loop.strategy_dirname(spec)) / f"trial_{t}"
                  for spec in config.strategies for t in range(config.trials)}
    claim_workdir(workdir, seed, [d / "journal.jsonl" for d in trial_dirs.values()])
    setup = loop.build_setup(config)
    environment.record(workdir)
    snapshots, entries = [], {}

    def keep(entry, labeled, result):
        snapshots.append((entry, np.array(labeled), result.variables))

    rows = []
    for (spec, trial), trial_dir in trial_dirs.items():
        hook = keep if (spec == "crc" and trial == 0) else None
        entries[spec, trial] = loop.run_trial(setup, strategies[spec], trial, workdir / trial_dir,
                                              on_step=hook)
        rows += loop.summary_rows(spec, trial, entries[spec, trial])
    durable.write_csv(workdir / "summary.csv", loop.SUMMARY_FIELDS, rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figure1_moons.md").write_text(moons_table(config, entries))
    return _draw_moons(config, setup, snapshots, entries, out / "figure1_moons.png")


def moons_curves(entries: dict) -> dict:
    """{strategy: (labeled counts, accuracies in % (trials, steps))} from the journals."""
    out = {}
    for spec in dict.fromkeys(s for s, _ in entries):
        trials = [entries[k] for k in sorted(k for k in entries if k[0] == spec)]
        counts = np.array([e["num_labeled"] for e in trials[0]])
        out[spec] = (counts, np.array([[100 * e["test_accuracy"] for e in t] for t in trials]))
    return out


def moons_table(config, entries: dict) -> str:
    """Figure 1's numbers as markdown: accuracy per step (mean, SD, range, every trial), the
    class mix of each strategy's queries, and the paired AULC differences to random; each
    table between the markers of experiments/markers.py, computed as experiments/published.py
    computes it from the run's per-step CSV (`python -m experiments.tables export`)."""
    from experiments import markers, published

    steps = [{"strategy": spec, "trial": trial, "step": e["step"],
              "num_labeled": e["num_labeled"], "test_accuracy": e["test_accuracy"],
              "acquired_labels": " ".join(str(x) for x in e.get("labels") or [])}
             for (spec, trial), es in entries.items() for e in es]
    lines = [f"# Figure 1 run: moons_pi, seed {config.seed}, {config.trials} trials", "",
             "Test accuracy (%) per labeled count: mean ± SD [min, max] over the n trials "
             "(SD: sample standard deviation, n − 1 in the denominator).", "",
             markers.marked("figure1", published.figure1_spread(steps)), "",
             "Every trial (accuracy % per labeled count; the initial set is shared by the "
             "strategies of a trial):", "",
             markers.marked("figure1_trials", published.figure1_trials(steps)), "",
             markers.marked("figure1_queries", published.figure1_queries(steps)), "",
             "Area under the learning curve, paired to random by trial (experiments/stats.py):",
             "", markers.marked("figure1_aulc", published.aulc_table(steps))]
    return "\n".join(lines) + "\n"


def _draw_moons(config, setup, snapshots, entries, path: Path) -> Path:
    import jax
    import matplotlib.pyplot as plt

    x, y = setup.pool_x, setup.pool_y
    lo, hi = x.min(0) - 0.4, x.max(0) + 0.4
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    predict = jax.jit(lambda v, g: jax.nn.softmax(setup.eval_apply(v, g))[:, 1])

    cols = max(len(snapshots), 1)
    fig = plt.figure(figsize=(3.2 * cols, 7.0), dpi=110)
    grid_spec = fig.add_gridspec(2, cols, height_ratios=[1.0, 1.1])
    initial = set(np.asarray(snapshots[0][0].get("initial", []), int).tolist()) if snapshots else set()
    for col, (entry, labeled, variables) in enumerate(snapshots):
        ax = fig.add_subplot(grid_spec[0, col])
        p = np.asarray(predict(variables, grid)).reshape(gx.shape)
        ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.35)
        ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
        ax.scatter(x[:, 0], x[:, 1], s=3, c="0.6", alpha=0.4, label="unlabeled")
        pivots = np.array([i in initial for i in labeled])
        colors = np.where(y[labeled] == 1, "tab:red", "tab:blue")
        ax.scatter(x[labeled[~pivots], 0], x[labeled[~pivots], 1], c=colors[~pivots], s=60,
                   edgecolors="k", label="acquired")
        ax.scatter(x[labeled[pivots], 0], x[labeled[pivots], 1], c=colors[pivots], s=90,
                   marker="s", edgecolors="k", label="pivot (step 0)")
        acquired = np.asarray(entry.get("acquired", []), dtype=int)
        if len(acquired):
            ax.scatter(x[acquired, 0], x[acquired, 1], marker="*", s=220, facecolors="none",
                       edgecolors="gold", linewidths=1.8, label="next CRC query")
        ax.set_title(f"{len(labeled)} labels: test acc {100 * entry['test_accuracy']:.1f}%",
                     fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if col == 0:
            ax.legend(loc="lower left", fontsize=7)

    ax = fig.add_subplot(grid_spec[1, :])
    for spec, (counts, acc) in moons_curves(entries).items():
        style = dict(color="k", linestyle="--") if spec == "random" else {}
        line, = ax.plot(counts, acc.mean(0), marker="o", label=f"{spec} (mean)", **style)
        ax.fill_between(counts, acc.min(0), acc.max(0), alpha=0.15, color=line.get_color())
    ax.set_xlabel("number of labeled points")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(counts)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title(f"accuracy per step over {config.trials} trials (seed {config.seed}, trials "
                 f"0–{config.trials - 1}): mean, band = min to max", fontsize=10)
    fig.suptitle("Figure 1: Π-model on two-moons from 4 pivots off the class boundary (squares)\n"
                 "top: trial 0's decision boundary (black) as CRC (last layer) adds 2 labels "
                 "per step; bottom: every strategy over all trials", fontsize=11)
    return save(fig, path)


def crc_points(workdirs) -> tuple[list, dict]:
    """From CRC journals: (min chosen score at step s, epochs to min test loss at step s+1)
    pairs, and {step: candidate scores}."""
    pairs, candidates = [], {}
    for workdir in workdirs:
        for journal in sorted(Path(workdir).glob("*/trial_*/journal.jsonl")):
            entries = [json.loads(line) for line in journal.read_text().splitlines()]
            for entry, following in zip(entries, entries[1:]):
                record = (entry.get("record") or {}).get("crc")
                if not record or not record.get("chosen_scores"):
                    continue
                epoch = following.get("min_test_loss_epoch")
                score = min(record["chosen_scores"])
                if epoch and score > 0:
                    pairs.append((score, epoch))
                scores = record.get("all_scores") or record.get("score_quantiles") or []
                candidates.setdefault(entry["step"], []).extend(scores)
    return pairs, candidates


def gap_panel(ax, workdirs) -> None:
    """(c) per CRC trial, the chosen group's relative lead over the runner-up at each step
    (the smallest over the step's decisions), its float32 resolution, ties marked."""
    from experiments import report

    try:
        decisions = report.crc_decisions(workdirs)
    except report.ReportError as err:
        raise FigureError(str(err)) from None
    lines: dict = {}
    for d in decisions:
        lines.setdefault((d["strategy"], d["trial"]), []).append(d)
    floor = 1e-12          # a gap of 0 (or none: no positive score) drawn at the floor
    for (strategy, trial), ds in lines.items():
        steps = [d["step"] for d in ds]
        gaps = [max(d["gap"] or 0.0, floor) for d in ds]
        line, = ax.plot(steps, gaps, marker="o", ms=4, alpha=0.8, label=f"{strategy} {trial}")
        res = [(d["step"], d["resolution"]) for d in ds if d["resolution"]]
        if res:
            ax.plot(*zip(*res), linestyle="none", marker="_", ms=12, color=line.get_color())
        ties = [(s, g) for s, g, d in zip(steps, gaps, ds) if d["tie"]]
        if ties:
            ax.plot(*zip(*ties), linestyle="none", marker="x", ms=9, color="red")
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("acquisition step")
    ax.set_ylabel("(chosen − runner-up) / chosen")
    ax.set_title("(c) lead of the chosen group; – float32 resolution, × tie", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if lines and len(lines) <= 10:
        ax.legend(fontsize=6, loc="lower left")
    if not lines:
        ax.text(0.5, 0.5, "no CRC diagnostics in these journals", ha="center", va="center",
                transform=ax.transAxes)


def figure3_eigen(workdirs, out: Path) -> Path:
    import matplotlib.pyplot as plt

    missing = [str(w) for w in workdirs if not Path(w).is_dir()]
    if missing:
        raise FigureError(f"no such run directory: {', '.join(missing)}")
    try:
        pairs, candidates = crc_points(workdirs)
    except (ValueError, KeyError, TypeError, OSError) as err:
        raise FigureError(f"unreadable journal under {', '.join(map(str, workdirs))} "
                          f"({type(err).__name__}: {err})") from None
    if not pairs:
        raise FigureError("no CRC journal entries with chosen scores found in "
                          + ", ".join(map(str, workdirs)))
    lam, epochs = np.array(pairs, dtype=float).T
    fig, (ax_a, ax_b, ax_c) = plt.subplots(1, 3, figsize=(16, 4.2), dpi=110)
    ax_a.scatter(lam, epochs, s=30)
    if len(pairs) >= 2 and np.ptp(np.log(lam)) > 0:
        slope, intercept = np.polyfit(np.log(lam), np.log(epochs), 1)
        xs = np.geomspace(lam.min(), lam.max(), 50)
        ax_a.plot(xs, np.exp(intercept) * xs ** slope, "r--", label=f"fit: slope {slope:.2f}")
        ax_a.legend()
    ax_a.set_xscale("log")
    ax_a.set_yscale("log")
    ax_a.set_xlabel("λ⁺min of the chosen group (smallest over the step's groups)")
    ax_a.set_ylabel("epochs until the test loss is minimal")
    ax_a.set_title("(a) convergence time vs chosen eigenvalue")
    ax_a.grid(alpha=0.3, which="both")

    steps = sorted(candidates)
    data = [np.asarray(candidates[s], dtype=float) for s in steps]
    data = [d[d > 0] if np.any(d > 0) else d for d in data]
    ax_b.boxplot(data, tick_labels=[str(s) for s in steps], showfliers=True)
    ax_b.set_yscale("log")
    ax_b.set_xlabel("acquisition step")
    ax_b.set_ylabel("candidate-group λ⁺min")
    ax_b.set_title("(b) candidate-group eigenvalues per step")
    ax_b.grid(alpha=0.3)
    gap_panel(ax_c, workdirs)
    fig.suptitle("Figure 3 from " + ", ".join(Path(w).name for w in workdirs), fontsize=11)
    return save(fig, out / "figure3_eigen.png")


def transfer_curves(workdir) -> dict:
    """{strategy: (labeled counts, accuracies (trials, steps))} from a run's summary.csv."""
    from experiments import report

    by_strategy = {}
    for r in report.load_rows([workdir]):
        by_strategy.setdefault(r["strategy"], {}).setdefault(r["trial"], {})[r["step"]] = r
    curves = {}
    for spec, trials in by_strategy.items():
        steps = sorted(set.intersection(*(set(t) for t in trials.values())))
        counts = [next(iter(trials.values()))[s]["num_labeled"] for s in steps]
        acc = np.array([[100.0 * t[s]["test_accuracy"] for s in steps] for t in trials.values()])
        curves[spec] = (np.asarray(counts), acc)
    return curves


def figure2_transfer(workdir: Path, out: Path) -> Path:
    import matplotlib.pyplot as plt

    from experiments import stats

    path = Path(workdir) / "config.json"
    if not path.exists() or not (Path(workdir) / "summary.csv").exists():
        raise FigureError(f"{workdir}: no config.json and summary.csv (not a finished run "
                          "of experiments.main)")
    config = json.loads(path.read_text())
    if config.get("al", {}).get("first_query") != "random_init":
        raise FigureError(f"{workdir} is not a transfer run (al.first_query is not "
                          "'random_init'): run --config=transfer or transfer:digits")
    curves = transfer_curves(workdir)
    fig, (ax_a, ax_b) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for spec, (counts, acc) in curves.items():
        style = dict(color="k", linestyle="--") if spec == "random" else {}
        mean, sd = acc.mean(0), stats.sample_sd(acc, axis=0)
        line, = ax_a.plot(counts, mean, marker="o", label=spec, **style)
        ax_a.fill_between(counts, mean - sd, mean + sd, alpha=0.12, color=line.get_color())
        gains = np.diff(acc, axis=1).mean(0)
        ax_b.plot(counts[1:], gains, marker="o", label=spec, color=line.get_color(),
                  linestyle=style.get("linestyle", "-"))
    ax_a.set_xlabel("number of labeled images")
    ax_a.set_ylabel("test accuracy (%)")
    ax_a.set_title("accuracy (mean ± SD); first query by an untrained model")
    ax_b.axhline(0, color="0.5", linewidth=0.8)
    ax_b.set_xlabel("number of labeled images after the acquisition")
    ax_b.set_ylabel("accuracy gained by the acquisition (points)")
    ax_b.set_title("gain of each consecutive acquisition")
    for ax in (ax_a, ax_b):
        ax.grid(alpha=0.3)
    ax_a.legend(fontsize=8)
    trials = max(acc.shape[0] for _, acc in curves.values())
    fig.suptitle(f"Figure 2 (Appendix B.2) from {Path(workdir).name}: {config['dataset']['name']}, "
                 f"{config['ssl']['name']}, {trials} trials", fontsize=11)
    return save(fig, out / "figure2_transfer.png")


def main(argv=None) -> int:
    """The command (`python -m experiments.figures`): the exit status."""
    parser = command.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="figure", required=True,
                                parser_class=command.ArgumentParser)
    moons = sub.add_parser("moons", help="Figure 1")
    moons.add_argument("--out", default=None, help="folder of the PNG (default: the workdir)")
    moons.add_argument("--workdir", default="runs/figure1_moons")
    moons.add_argument("--seed", type=int, default=0)
    moons.add_argument("--trials", type=int, default=None, help="default: moons_pi's (5)")
    eigen = sub.add_parser("eigen", help="Figure 3")
    eigen.add_argument("workdirs", nargs="+")
    eigen.add_argument("--out", default=None, help="folder of the PNG (default: the first RUNDIR)")
    transfer = sub.add_parser("transfer", help="Figure 2")
    transfer.add_argument("workdir")
    transfer.add_argument("--out", default=None, help="folder of the PNG (default: RUNDIR)")

    def work() -> None:
        args = parser.parse_args(argv)
        try:
            if args.figure == "moons":
                workdir = Path(args.workdir)
                path = figure1_moons(out_folder(Path(args.out or workdir)), workdir,
                                     seed=args.seed, trials=args.trials)
            elif args.figure == "transfer":
                path = figure2_transfer(Path(args.workdir),
                                        out_folder(Path(args.out or args.workdir)))
            else:
                path = figure3_eigen(args.workdirs, out_folder(Path(args.out or args.workdirs[0])))
        except OSError as err:   # an --out that cannot be written (read-only, full)
            raise UsageError(f"{err.filename or args.out}: cannot be written "
                             f"({err.strerror})") from None
        print(f"figure: {path}")

    return command.run(work, errors=(FigureError,), own_process=argv is None)


if __name__ == "__main__":
    sys.exit(main())
