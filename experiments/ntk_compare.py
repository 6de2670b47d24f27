"""Empirical vs infinite-width NTK: distance, spectra and CRC selections, width by width.

    python -m experiments.ntk_compare --config=ntk_compare --workdir=docs/ntk_compare

For every data set, model and width in the config and every initialization seed, on a
fixed class-stratified sample X of images (crc_jax.infinite: class-trace kernels in NTK
parameterization, K̃_inf = C·K_inf):

  distance      ‖K̃_emp(X, X) − K̃_inf(X, X)‖_F / ‖K̃_inf(X, X)‖_F, at initialization and
                after `train.steps` of full-batch gradient descent on MSE (in the NTK
                coordinates, biases held at 0, lr a fraction of the infinite-width
                stability limit 2n/λmax(K_inf), K_inf per output)
  λmin, λ⁺min   of both kernels (λ⁺min: the r-th largest eigenvalue, r the float32-aware
                numerical rank, ntk.kernel_rank)
  CRC overlap   the first `crc.labeled_size` images of X are L, the rest a random
                partition into groups of G; the fraction of the top query/G groups by
                λ⁺min(K̃(L ∪ g)) that both kernels pick, and the Spearman correlation of
                all group scores

Writes WORKDIR/ntk_compare.csv (one row per data set, model, width, seed and stage),
WORKDIR/ntk_compare.md (mean ± SD over seeds, SD the sample standard deviation, and the
fitted slope of log distance vs log width) and WORKDIR/distance_vs_width.png. With
--from_csv it measures nothing and writes the last two again from WORKDIR/ntk_compare.csv:

    python -m experiments.ntk_compare --config=ntk_compare --workdir=docs/ntk_compare --from_csv
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from crc_jax import infinite
from crc_jax.errors import UsageError
from crc_jax.runtime import command
from experiments import config_cli, ntk_kernels

log = logging.getLogger("ntk_compare")

FIELDS = ("dataset", "model", "width", "seed", "stage", "distance", "lambda_min_emp",
          "lambda_plus_min_emp", "lambda_min_inf", "lambda_plus_min_inf", "rank_emp", "rank_inf",
          "crc_overlap", "crc_spearman", "train_loss", "seconds")
MEAN_FIELDS = ("distance", "log_distance", "lambda_min_emp", "lambda_plus_min_emp", "lambda_min_inf",
               "lambda_plus_min_inf", "crc_overlap", "crc_spearman", "train_loss")
COMMAND = "python -m experiments.ntk_compare --config=ntk_compare --workdir=docs/ntk_compare"
INT_FIELDS = ("width", "seed", "rank_emp", "rank_inf")
TEXT_FIELDS = ("dataset", "model", "stage")

flags.DEFINE_bool("from_csv", False, "Measure nothing: write ntk_compare.md and "
                  "distance_vs_width.png again from WORKDIR/ntk_compare.csv.")


# --------------------------------------------------------------------------- data and models

def dataset_available(name: str, data_dir: str) -> bool:
    """A data set without a TFDS builder always; a TFDS one only when prepared (this
    comparison never downloads)."""
    from crc_jax import data
    builder = data.tfds_name(name)
    if builder is None:
        return True
    import tensorflow_datasets as tfds
    return tfds.builder(builder, data_dir=data_dir or None).is_prepared()


def load_sample(name: str, *, data_dir: str, size: int, seed: int):
    """(x, y, num_classes): a class-stratified sample of `size` training images, shuffled."""
    from crc_jax import data
    ds = data.load(name, data_dir=data_dir)
    rng = np.random.default_rng([seed, 2024])
    idx = data.stratified_subset(ds.y_train, size, rng)
    idx = idx[rng.permutation(len(idx))]      # L (the first images) mixes classes
    return ds.x_train[idx], ds.y_train[idx], ds.num_classes


def build_model(arch: str, width: int, num_classes: int, config):
    from crc_jax import models
    if arch == "mlp":
        return models.get("mlp", num_classes=num_classes, width=width, depth=config.mlp.depth)
    if arch == "cnn":
        return models.get("cnn", num_classes=num_classes, width=width,
                          dense_width=config.cnn.dense_ratio * width, batch_norm=False)
    raise ValueError(f"config.models: unknown model {arch!r}; known: mlp, cnn")


# --------------------------------------------------------------------------- training

@partial(jax.jit, static_argnums=(0,))
def _gd_step(model, q, x, y, lr):
    """One step of gradient descent on ½·mean‖f(x) − y‖² in NTK coordinates, biases fixed."""
    def loss(q):
        f = model.apply({"params": ntk_kernels.standard_coordinates(q)}, x)
        return 0.5 * jnp.mean(jnp.sum(jnp.square(f - y), axis=-1))

    value, grad = jax.value_and_grad(loss)(q)
    grad = ntk_kernels.kernels_only(grad)
    return jax.tree_util.tree_map(lambda a, g: a - lr * g, q, grad), value


def train(model, params, x, y_onehot, *, steps: int, lr: float):
    """(trained params, initial loss, final loss) after `steps` of full-batch GD."""
    q = ntk_kernels.ntk_coordinates(params)
    x, y = jnp.asarray(x), jnp.asarray(y_onehot)
    losses = []
    for step in range(steps + 1):          # the last call only measures the final loss
        q_next, value = _gd_step(model, q, x, y, lr)
        losses.append(float(value))
        if step < steps:
            q = q_next
    if not np.isfinite(losses[-1]):
        raise FloatingPointError(f"gradient descent diverged (lr {lr:.3g}): lower train.lr_fraction")
    return ntk_kernels.standard_coordinates(q), losses[0], losses[-1]


# --------------------------------------------------------------------------- CRC on a fixed sample

def crc_scores(k: np.ndarray, labeled: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """λ⁺min(K̃(L ∪ g)) for each group, r = min(|L ∪ g|, rank of K̃ over the sample)."""
    from crc_jax import ntk
    from crc_jax.acquisition.crc import spectra
    rank = ntk.kernel_rank(k)
    sets = np.concatenate([np.broadcast_to(labeled, (len(groups), len(labeled))), groups], axis=1)
    mats = k[sets[:, :, None], sets[:, None, :]]
    return spectra.rth_largest(mats, rank)


def compare_selections(scores_emp, scores_inf, k: int) -> tuple[float, float]:
    """(fraction of the top-k groups both pick, Spearman correlation of the scores)."""
    from scipy.stats import spearmanr
    from crc_jax.acquisition.crc.crc import top_groups
    a, b = set(top_groups(scores_emp, k).tolist()), set(top_groups(scores_inf, k).tolist())
    return len(a & b) / k, float(spearmanr(scores_emp, scores_inf).statistic)


# --------------------------------------------------------------------------- the sweep

def compare_seed(model, seed: int, x, y_onehot, reference: dict, *, labeled, groups, top_k: int,
                 steps: int, lr: float) -> list[dict]:
    """The "init" row (and the "trained" row when steps > 0) of one model and seed."""
    start = time.perf_counter()
    inf = reference["spectrum"]

    def measure(stage, params, loss):
        k_emp = ntk_kernels.empirical_trace_ntk(model, params, x)
        emp = ntk_kernels.spectrum_summary(k_emp)
        overlap, rho = compare_selections(crc_scores(k_emp, labeled, groups), reference["scores"], top_k)
        return {"seed": seed, "stage": stage,
                "distance": ntk_kernels.relative_distance(k_emp, reference["k"]),
                "lambda_min_emp": emp["lambda_min"], "lambda_plus_min_emp": emp["lambda_plus_min"],
                "lambda_min_inf": inf["lambda_min"], "lambda_plus_min_inf": inf["lambda_plus_min"],
                "rank_emp": emp["rank"], "rank_inf": inf["rank"], "crc_overlap": overlap,
                "crc_spearman": rho, "train_loss": loss,
                "seconds": round(time.perf_counter() - start, 2)}

    params = model.init(jax.random.PRNGKey(seed), x[:1])["params"]
    rows = [measure("init", params, float("nan"))]
    if steps:
        trained, _, final = train(model, params, x, y_onehot, steps=steps, lr=lr)
        rows.append(measure("trained", trained, final))
    return rows


def run(config, workdir) -> list[dict]:
    """Run every (data set, model, width, seed) comparison; write CSV, Markdown and plot."""
    from tqdm.auto import tqdm

    from crc_jax.acquisition.crc.crc import random_groups

    check(config)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    datasets = [d for d in config.datasets if dataset_available(d, config.data_dir)]
    for name in set(config.datasets) - set(datasets):
        log.warning("%s is not prepared in TFDS (data_dir %r): skipped", name, config.data_dir)
    jobs = [(d, m, w) for d in datasets for m in config.models for w in config[m].widths]
    bar = tqdm(total=len(jobs) * config.seeds, desc="NTK comparisons")
    for name in datasets:
        x, y, num_classes = load_sample(name, data_dir=config.data_dir, size=config.sample_size,
                                        seed=config.seed)
        y_onehot = np.eye(num_classes, dtype=np.float32)[y]
        n_lab = config.crc.labeled_size
        labeled = np.arange(n_lab)
        groups = random_groups(jax.random.PRNGKey(config.seed), np.arange(n_lab, len(x)),
                               config.crc.group_size)
        top_k = config.crc.query_size // config.crc.group_size
        for arch in config.models:
            twin = build_model(arch, 1, num_classes, config)   # the limit ignores widths
            k_inf = infinite.infinite_trace_ntk(
                infinite.infinite_kernel_fn(twin), x, num_classes=num_classes,
                batch_size=infinite.kernel_batch_size(twin, x.shape[1:]))
            inf = ntk_kernels.spectrum_summary(k_inf)
            reference = {"k": k_inf, "spectrum": inf, "scores": crc_scores(k_inf, labeled, groups)}
            # GD on ½·mean‖f − y‖² is stable for lr < 2n / λmax(K_inf), K_inf per output, in
            # the infinite-width limit: one lr for every width and seed.
            lr = config.train.lr_fraction * 2 * len(x) * num_classes / inf["lambda_max"]
            for width in config[arch].widths:
                model = build_model(arch, width, num_classes, config)
                for seed in range(config.seeds):
                    for row in compare_seed(model, seed, x, y_onehot, reference, labeled=labeled,
                                            groups=groups, top_k=top_k, steps=config.train.steps,
                                            lr=lr):
                        rows.append({"dataset": name, "model": arch, "width": width, **row})
                        log.info("%s %s width %d seed %d %s: distance %.4f, overlap %.2f", name,
                                 arch, width, seed, row["stage"], row["distance"], row["crc_overlap"])
                    bar.update()
    bar.close()
    write_csv(workdir / "ntk_compare.csv", rows)
    write_outputs(rows, config, workdir)
    return rows


def write_outputs(rows: list[dict], config, workdir) -> None:
    """WORKDIR/ntk_compare.md and distance_vs_width.png from the per-seed rows."""
    workdir = Path(workdir)
    summary = summarize(rows)
    (workdir / "ntk_compare.md").write_text(markdown(summary, config))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    plot(summary, workdir / "distance_vs_width.png",
         title=f"Empirical vs infinite-width NTK: {', '.join(datasets)}, {config.sample_size} images, "
               f"{config.seeds} seeds")


def check(config) -> None:
    """Reject values the sweep cannot use before any heavy work."""
    from crc_jax.errors import ConfigError
    if config.seeds < 1:
        raise ConfigError("seeds", f"must be >= 1, got {config.seeds}")
    from crc_jax import data
    from crc_jax.acquisition.crc.infinite import ARCHS
    for name in config.datasets:
        if name not in data.names():
            raise ConfigError("datasets", f"unknown data set {name!r}; known: "
                              f"{', '.join(data.names())}")
    for arch in config.models:
        if arch not in ARCHS:   # the architectures with an infinite-width counterpart
            raise ConfigError("models", f"unknown model {arch!r}; known: {', '.join(ARCHS)}")
        if not config[arch].widths or min(config[arch].widths) < 1:
            raise ConfigError(f"{arch}.widths", f"must be positive widths, got {config[arch].widths}")
    c = config.crc
    if c.group_size < 1 or c.query_size % c.group_size:
        raise ConfigError("crc.query_size", f"must be a multiple of crc.group_size={c.group_size}")
    groups = (config.sample_size - c.labeled_size) // max(c.group_size, 1)
    if groups < c.query_size // c.group_size:
        raise ConfigError("crc.labeled_size", f"leaves {groups} groups in a sample of "
                          f"{config.sample_size}; {c.query_size // c.group_size} are picked")


# --------------------------------------------------------------------------- outputs

def write_csv(path: Path, rows: list[dict]) -> None:
    from crc_jax import durable
    durable.write_csv(path, FIELDS, rows)


def read_csv(path: Path) -> list[dict]:
    """The rows of an ntk_compare.csv, numbers parsed as `run` measured them."""
    import csv

    with open(path, newline="") as f:
        return [{k: v if k in TEXT_FIELDS else int(v) if k in INT_FIELDS else float(v)
                 for k, v in r.items()} for r in csv.DictReader(f)]


def summarize(rows: list[dict]) -> dict:
    """{(dataset, model, stage): {width: {field: (mean, SD)}}} over seeds (SD: sample
    standard deviation, ddof = 1)."""
    from experiments import stats

    cells = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        for f in MEAN_FIELDS:
            value = np.log(r["distance"]) if f == "log_distance" else r[f]
            cells[(r["dataset"], r["model"], r["stage"])][r["width"]][f].append(value)
    return {key: {w: {f: (float(np.mean(v)), stats.sample_sd(v)) for f, v in fields.items()}
                  for w, fields in sorted(widths.items())}
            for key, widths in cells.items()}


def fit_slope(widths, log_distances) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line of log(distance) against log(width)."""
    slope, intercept = np.polyfit(np.log(widths), log_distances, 1)
    return float(slope), float(intercept)


def pm(cell, fmt) -> str:
    mean, sd = cell
    return "–" if np.isnan(mean) else f"{mean:{fmt}} ± {sd:{fmt}}"


def slopes_table(summary: dict) -> str:
    """Markdown: the fitted log-log slope of distance against width per (data, model, stage)."""
    lines = ["| data | model | stage | fitted slope | widths |", "|---|---|---|---|---|"]
    for (name, arch, stage), widths in summary.items():
        ws = list(widths)
        slope = (fit_slope(ws, [widths[w]["log_distance"][0] for w in ws])[0] if len(ws) > 1
                 else float("nan"))
        lines.append(f"| {name} | {arch} | {stage} | {slope:.3f} | {ws[0]}–{ws[-1]} |")
    return "\n".join(lines) + "\n"


def cells_table(summary: dict) -> str:
    """Markdown: per (data, model, width, stage) the mean ± SD over seeds of each measure."""
    lines = ["| data | model | width | stage | ‖K̃emp−K̃inf‖/‖K̃inf‖ | λmin emp | λ⁺min emp "
             "| λmin inf | λ⁺min inf | CRC overlap | score Spearman | train loss |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (name, arch, stage), widths in summary.items():
        for w, c in widths.items():
            lines.append(
                f"| {name} | {arch} | {w} | {stage} | {pm(c['distance'], '.4f')} "
                f"| {pm(c['lambda_min_emp'], '.4g')} | {pm(c['lambda_plus_min_emp'], '.4g')} "
                f"| {c['lambda_min_inf'][0]:.4g} | {c['lambda_plus_min_inf'][0]:.4g} "
                f"| {pm(c['crc_overlap'], '.2f')} | {pm(c['crc_spearman'], '.2f')} "
                f"| {pm(c['train_loss'], '.4f')} |")
    return "\n".join(lines) + "\n"


def markdown(summary: dict, config) -> str:
    """The study as markdown, its tables between experiments/tables.py's markers."""
    from experiments import markers

    lines = [f"Command: `{COMMAND}`", "",
             f"Sample: {config.sample_size} training images per data set; seeds 0–{config.seeds - 1} "
             f"(mean ± SD over the {config.seeds} seeds, SD the sample standard deviation); "
             f"{config.train.steps} full-batch GD steps on MSE for "
             f"\"trained\"; CRC: |L| = {config.crc.labeled_size}, G = {config.crc.group_size}, "
             f"top {config.crc.query_size // config.crc.group_size} groups. Kernels: class-trace "
             "sums in NTK parameterization (K̃_inf = C·K_inf).", "",
             "Fitted slope: least squares of the mean over seeds of log distance against log "
             "width (theory at initialization: −0.5).", "",
             markers.marked("ntk_slopes", slopes_table(summary)), "",
             markers.marked("ntk_cells", cells_table(summary))]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path, title: str = "") -> None:
    """Log-log distance vs width: geometric mean over seeds with ×/÷ exp(SD of log) bars,
    the fitted line of each series (slope in the legend) and a width^-1/2 guide."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = list(dict.fromkeys(key[:2] for key in summary))
    for (name, arch, stage), widths in summary.items():
        ws = np.asarray(list(widths), float)
        log_mean = np.asarray([widths[w]["log_distance"][0] for w in widths])
        log_std = np.asarray([widths[w]["log_distance"][1] for w in widths])
        center = np.exp(log_mean)
        color = colors[series.index((name, arch)) % len(colors)]
        label = f"{name} {arch.upper()} {stage}"
        if len(ws) > 1:
            slope, intercept = fit_slope(ws, log_mean)
            label += f" (slope {slope:.2f})"
            ax.plot(ws, np.exp(intercept) * ws ** slope, ":", color=color, alpha=0.7)
        spread = [center - np.exp(log_mean - log_std), np.exp(log_mean + log_std) - center]
        ax.errorbar(ws, center, yerr=spread,
                    fmt="o" if stage == "init" else "s", ls="-" if stage == "init" else "--",
                    color=color, capsize=3, label=label)
    all_widths = [w for widths in summary.values() for w in widths]
    if all_widths:
        first = next(iter(summary.values()))
        lo, hi = min(all_widths), max(all_widths)
        anchor = np.exp(first[min(first)]["log_distance"][0]) * (lo / min(first)) ** -0.5
        ax.plot([lo, hi], [anchor, anchor * (hi / lo) ** -0.5], color="gray", lw=1,
                label=r"width$^{-1/2}$ guide")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width (MLP hidden units; CNN channels of the first convs)")
    ax.set_ylabel(r"$\|\tilde K_{emp} - \tilde K_{inf}\|_F \,/\, \|\tilde K_{inf}\|_F$")
    ax.set_title(title or "Empirical vs infinite-width NTK (NTK parameterization)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- CLI

def main(argv: list[str]) -> None:
    del argv
    command.setup_logging()   # after app.run, which installs absl's handler
    config = flags.FLAGS.config
    if config is None:
        raise UsageError("--config is required (e.g. --config=ntk_compare)")
    workdir = flags.FLAGS.workdir or "runs/ntk_compare"
    if flags.FLAGS.from_csv:
        path = Path(workdir) / "ntk_compare.csv"
        if not path.is_file():
            raise UsageError(f"--from_csv needs {path}: run without --from_csv first")
        write_outputs(read_csv(path), config, workdir)
        print((Path(workdir) / "ntk_compare.md").read_text())
        return
    run(config, workdir)
    print((Path(workdir) / "ntk_compare.md").read_text())


def run_main() -> int:
    """The command: absl parses the flags, `main` runs, crc_jax.runtime.command ends it."""
    return command.run(lambda: app.run(main, flags_parser=config_cli.parse_flags),
                       log_format=None)


if __name__ == "__main__":
    sys.exit(run_main())
