"""CRC's mechanism measured directly: the group CRC scores highest, a median, a random and
the lowest-scored group, each added to the labeled set and trained on from one fresh
initialisation. Does the higher score make that training converge faster (Theorem 1)?

    nice -n 10 python -m experiments.mechanism --out docs/results/mechanism

An instance is (domain, trial, labeled-set size n). Per instance (experiments/configs/
mechanism.py sets the domains, trials, sizes and depths):

  1. L: the domain's Q0 initial set (its al.initial_rule) plus random labels up to n,
     nested across sizes; a model trained on L by the project's SSL training (train.fit,
     the domain config's loss, optimiser and early stopping): the trained model θ_T.
  2. CRC's scores of a random partition of the unlabeled pool into groups of G under θ_T
     (last layer, what `crc` ranks by); picks: the top group, the median one, a random one
     (uniform among the rest) and the bottom one.
  3. θ_0: the fresh initialisation every retraining starts from (the init key of one
     retraining key, the same for the four groups). Each group is also scored under θ_0
     and under θ_T on all parameters; the score under θ_0 on all parameters is the
     realised λ⁺min of K̃(L ∪ g) at the start of training, Theorem 1's quantity.
  4. Retraining on L ∪ g from θ_0, for each group:
     gd_*    full-batch gradient descent on ½·mean‖f(x) − onehot(y)‖² (Theorem 1's setting),
             one step size for the four groups: lr_fraction of 2nC / max_g λmax(K̃(L ∪ g))
             at θ_0 (halved until no group's loss grows); the loss ratio L_k / L_0 after
             k steps and the steps to reach each depth (0.1, 0.01, 0.001 of L_0)
     proj_*  the project's own loss and optimiser (the domain's SSL train step, batches and
             keys exactly as train.fit draws them, every epoch run): the labeled-set
             cross-entropy every `eval_every` steps, its ratio to the start after k steps
             and the steps to each depth; test_acc the test accuracy fit would report (its
             early stopping on the watched split, here the test split), test_acc_final
             that of the last step

Analysis (`summarize`, one row per (predictor, outcome)): within each instance, the
Spearman correlation of a predictor (a score) with an outcome across the four groups, sign
set so that ρ > 0 means "higher score, faster or better"; the mean over instances with a
95% bootstrap interval (instances resampled). Paired top vs bottom: wins of the top group
(faster / more accurate), a two-sided sign test, and the mean paired difference with its
bootstrap interval (log10 ratios for losses, points for accuracy).

Writes OUT/instances.csv (one row per instance and group; rerunning keeps the instances
already there), OUT/table.md and OUT/mechanism.png; `--report-only` rebuilds the last two
from the CSV (`table_from_csv`).
"""

from __future__ import annotations

import csv
import importlib
import logging
import math
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger("mechanism")

PICKS = ("top", "median", "random", "bottom")
PREDICTORS = ("score_trained_last", "score_trained_all", "score_init_last", "score_init_all")
PRIMARY = ("score_trained_last", "gd_speed_1000")   # fixed before the run
KEY_FIELDS = ("domain", "trial", "size")


# --------------------------------------------------------------------------- training setups

def domain_setup(domain_config, config):
    """The loop's Setup (data, model, SSL algorithm) of a domain's experiments config."""
    from crc_jax.run import loop

    c = importlib.import_module(f"experiments.configs.{domain_config.config}").get_config()
    c.train.progress = False
    if config.get("train_epochs"):
        c.train.max_epochs = config.train_epochs
    if config.get("steps_per_epoch"):
        c.train.steps_per_epoch = config.steps_per_epoch
    return loop.build_setup(c)


def labeled_sets(setup, sizes, rng: np.random.Generator) -> dict:
    """{n: L}: the Q0 initial set by the domain's rule, then random labels, nested."""
    from crc_jax.run import initial_set

    x, y = setup.pool_x, setup.pool_y
    initial = initial_set.choose(setup.config, x, y, setup.dataset.num_classes, rng)
    if min(sizes) < len(initial):
        raise ValueError(f"labeled-set sizes must be at least Q0 = {len(initial)}, got {sizes}")
    rest = rng.permutation(np.setdiff1d(np.arange(len(x)), initial))
    return {n: np.concatenate([initial, rest[:n - len(initial)]]).astype(np.int64) for n in sizes}


def instance_keys(seed: int, domain_index: int, trial: int, size: int):
    """(train, retrain, groups, pick) keys of one instance, folded from its coordinates."""
    key = jax.random.PRNGKey(seed)
    for part in (domain_index, trial, size):
        key = jax.random.fold_in(key, part)
    return jax.random.split(key, 4)


def fit_on(setup, labeled: np.ndarray, key):
    """The project's training on `labeled` (train.fit with the domain's settings)."""
    from crc_jax.train import fit

    unlabeled = np.setdiff1d(np.arange(len(setup.pool_x)), labeled)
    return fit(setup.algorithm, x_labeled=setup.pool_x[labeled],
               y_labeled=setup.pool_y[labeled].astype(np.int32),
               x_unlabeled=setup.pool_x[unlabeled], watch=setup.watch, test=setup.test,
               train_config=setup.config.train, key=key, eval_apply=setup.eval_apply,
               desc=f"train n={len(labeled)}")


def init_variables(setup, key):
    """θ_0 of a retraining with `key`: train.fit's init (the first of its three keys)."""
    init_key = jax.random.split(key, 3)[0]
    state = setup.algorithm.init_state(init_key, setup.pool_x[:1])
    return jax.device_get(setup.algorithm.eval_variables(state))


def context(setup, variables, labeled):
    from crc_jax import acquisition

    unlabeled = np.setdiff1d(np.arange(len(setup.pool_x)), labeled)
    return acquisition.model_context(
        setup.model, variables, x=setup.pool_x, labeled=labeled, unlabeled=unlabeled,
        num_classes=setup.dataset.num_classes, batch_size=setup.config.train.eval_batch_size)


def pick_groups(scores: np.ndarray, key) -> dict:
    """{pick: row}: the top and bottom scores (ties to the earlier row), the median of the
    order, and a random row among the others."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    top, median, bottom = int(order[0]), int(order[len(order) // 2]), int(order[-1])
    others = [int(r) for r in order if int(r) not in (top, median, bottom)]
    rand = others[int(jax.random.randint(key, (), 0, len(others)))]
    return {"top": top, "median": median, "random": rand, "bottom": bottom}


# --------------------------------------------------------------------------- retraining

@partial(jax.jit, static_argnames=("apply_fn", "steps"))
def gd_curve(apply_fn, variables, x, y_onehot, lr, *, steps: int):
    """Losses ½·mean‖f − y‖² at steps 0..steps of full-batch GD on the params from `variables`."""

    def loss(p):
        out = apply_fn({**variables, "params": p}, x)
        return 0.5 * jnp.mean(jnp.sum((out - y_onehot) ** 2, axis=-1))

    def step(p, _):
        value, grad = jax.value_and_grad(loss)(p)
        return jax.tree_util.tree_map(lambda a, g: a - lr * g, p, grad), value

    params, losses = jax.lax.scan(step, variables["params"], None, length=steps)
    return jnp.append(losses, loss(params))


def gd_runs(setup, variables, sets: list, lam_max: float, config) -> tuple[list, float]:
    """GD curves of every labeled set from θ_0 at one step size; halved until no curve ends
    above its start or non-finite. Returns (curves, lr)."""
    c = setup.dataset.num_classes
    n = len(sets[0])
    lr = config.gd.lr_fraction * 2 * n * c / lam_max
    for _ in range(8):
        curves = [np.asarray(gd_curve(setup.eval_apply, variables, jnp.asarray(setup.pool_x[s]),
                                      jax.nn.one_hot(setup.pool_y[s], c), lr,
                                      steps=int(config.gd.steps)), np.float64) for s in sets]
        if all(np.all(np.isfinite(cv)) and cv[-1] < cv[0] for cv in curves):
            return curves, lr
        lr /= 2
    raise FloatingPointError(f"gradient descent diverged down to lr {lr:.3g}")


def project_run(setup, labeled: np.ndarray, key, eval_every: int) -> dict:
    """The domain's SSL training on `labeled` from the retraining key, exactly as train.fit
    draws batches and keys, every epoch run, with the labeled-set cross-entropy measured
    every `eval_every` steps. Returns {"steps", "ce", "test_acc" (fit's early-stopping
    pick), "test_acc_final", "best_epoch"}."""
    from crc_jax import feeding
    from crc_jax.runtime import sharding
    from crc_jax import train as train_lib

    alg, tc = setup.algorithm, setup.config.train
    x_l, y_l = setup.pool_x[labeled], setup.pool_y[labeled].astype(np.int32)
    x_u = setup.pool_x[np.setdiff1d(np.arange(len(setup.pool_x)), labeled)]
    init_key, data_key, step_key = jax.random.split(key, 3)
    mesh = sharding.make_mesh()
    state = sharding.replicate(mesh, alg.init_state(init_key, x_l[:1]))
    feeder = feeding.BatchFeeder(alg.train_step, mesh, x_labeled=x_l, y_labeled=y_l,
                                 x_unlabeled=x_u if alg.unlabeled_batch else None)
    eval_step = train_lib.make_eval_step(setup.eval_apply)

    def measure(split):
        return train_lib.evaluate(eval_step, alg.eval_variables(state), *split,
                                  batch_size=tc.eval_batch_size, mesh=mesh)

    steps, ce, watch, test = [0], [measure((x_l, y_l))["loss"]], [], []
    per_epoch = int(tc.steps_per_epoch)
    n_unlabeled = len(x_u) if alg.unlabeled_batch else 0
    for epoch in range(1, int(tc.max_epochs) + 1):
        lab, unl, keys = train_lib._epoch_batches(alg, data_key, step_key, epoch, len(x_l),
                                                  n_unlabeled, per_epoch)
        for s in range(0, per_epoch, eval_every):
            part = slice(s, min(s + eval_every, per_epoch))
            state, _ = train_lib._train_epoch(feeder, state, (lab[part], None if unl is None
                                                              else unl[part], keys[part]), None)
            steps.append((epoch - 1) * per_epoch + part.stop)
            ce.append(measure((x_l, y_l))["loss"])
        watch.append(measure(setup.watch)["accuracy"])
        test.append(watch[-1] if setup.watch is setup.test else measure(setup.test)["accuracy"])
    best = early_stopping_epoch(watch, int(tc.patience))
    return {"steps": np.array(steps), "ce": np.array(ce, np.float64), "test_acc": test[best - 1],
            "test_acc_final": test[-1], "best_epoch": best}


def early_stopping_epoch(watch: list, patience: int) -> int:
    """The 1-based epoch train.fit keeps: the first best watched accuracy among the epochs
    it runs before `patience` epochs pass without improvement (0: never stop)."""
    best, best_acc = 0, -1.0
    for epoch, acc in enumerate(watch, start=1):
        if acc > best_acc:
            best, best_acc = epoch, acc
        if patience and epoch - best >= patience:
            break
    return best


def steps_to(steps: np.ndarray, curve: np.ndarray, fraction: float) -> float:
    """The first step at which curve ≤ fraction·curve[0]; inf when never (censored)."""
    hit = np.flatnonzero(curve <= fraction * curve[0])
    return float(steps[hit[0]]) if len(hit) else math.inf


def depth_name(fraction: float) -> str:
    return f"{100 * fraction:g}pct".replace(".", "p")


# --------------------------------------------------------------------------- one instance

def run_instance(setup, config, domain: str, domain_index: int, trial: int, size: int,
                 labeled: np.ndarray, group_size: int) -> list[dict]:
    """The four rows (one per pick) of one instance."""
    from crc_jax.acquisition.crc import crc as crc_lib
    from crc_jax.acquisition.crc import gram as gram_lib
    from scipy import stats

    train_key, retrain_key, group_key, pick_key = instance_keys(config.seed, domain_index,
                                                                 trial, size)
    trained = fit_on(setup, labeled, train_key)
    ctx_t = context(setup, trained.variables, labeled)
    groups = crc_lib.random_groups(group_key, ctx_t.unlabeled, group_size)
    gram = gram_lib.build(ctx_t, groups)
    scores = gram.score()
    ranks, r = np.asarray(gram.group_ranks), int(gram.rank_used)
    rows = pick_groups(scores, pick_key)
    v0 = init_variables(setup, retrain_key)
    ctx_0 = context(setup, v0, labeled)
    init_last = crc_lib.score_groups(ctx_0, groups)
    chosen = np.array([rows[p] for p in PICKS])
    trained_all = crc_lib.score_groups(ctx_t, groups[chosen], subset="all")
    init_all = crc_lib.score_groups(ctx_0, groups[chosen], subset="all")
    sets = [np.concatenate([labeled, groups[row]]) for row in chosen]
    lam_max = max(float(np.linalg.eigvalsh(np.asarray(kernel_all(setup, v0, s), np.float64))[-1])
                  for s in sets)
    curves, lr = gd_runs(setup, v0, sets, lam_max, config)
    agreement = float(stats.spearmanr(scores, init_last)[0])
    percentile = stats.rankdata(scores) / len(scores)
    out = []
    for i, (pick, row) in enumerate(zip(PICKS, chosen)):
        proj = project_run(setup, sets[i], retrain_key, int(config.project.eval_every))
        curve = curves[i]
        rec = {"domain": domain, "trial": trial, "size": size, "new_size": len(sets[i]),
               "pick": pick, "group": ";".join(str(int(j)) for j in groups[row]),
               "n_groups": len(groups), "score_percentile": float(percentile[row]),
               "group_rank": int(ranks[row]), "rank_used": r,
               "score_trained_last": float(scores[row]), "score_trained_all": float(trained_all[i]),
               "score_init_last": float(init_last[row]), "score_init_all": float(init_all[i]),
               "lam_max_init_all": lam_max, "trained_init_spearman": agreement,
               "step0_test_acc": float(trained.test_accuracy), "gd_lr": lr,
               "gd_loss0": float(curve[0])}
        gd_steps = np.arange(len(curve))
        for k in (*config.gd.at, int(config.gd.steps)):
            rec[f"gd_ratio_{k}"] = float(curve[k] / curve[0])
        for d in config.depths:
            rec[f"gd_steps_{depth_name(d)}"] = steps_to(gd_steps, curve, d)
        total = int(proj["steps"][-1])
        rec["proj_ce0"] = float(proj["ce"][0])
        for frac in config.project.at:          # fractions of the training budget
            j = int(np.searchsorted(proj["steps"], frac * total))
            rec[f"proj_ratio_f{frac:g}"] = float(proj["ce"][j] / proj["ce"][0])
        for d in config.depths:
            rec[f"proj_steps_{depth_name(d)}"] = steps_to(proj["steps"], proj["ce"], d)
        rec.update(test_acc=float(proj["test_acc"]), test_acc_final=float(proj["test_acc_final"]),
                   best_epoch=int(proj["best_epoch"]))
        out.append(rec)
    return out


def kernel_all(setup, variables, labeled):
    """K̃(L, L) over all parameters at `variables`, float32 as crc computes it."""
    from crc_jax import ntk

    def f(params, x):
        return setup.eval_apply({**variables, "params": params}, x)

    return ntk.empirical_ntk(f, variables["params"], jnp.asarray(setup.pool_x[labeled]), subset="all")


# --------------------------------------------------------------------------- the CSV

def read_rows(path: Path) -> list[dict]:
    """instances.csv with numbers parsed (inf kept as inf)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k not in ("domain", "pick", "group"):
                r[k] = float(v)
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    fields = list(rows[0])
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def instance_id(row: dict) -> tuple:
    return (row["domain"], int(row["trial"]), int(row["size"]))


# --------------------------------------------------------------------------- the analysis

def outcomes(rows: list[dict]) -> list[tuple[str, str]]:
    """(name, how it reads): every measured outcome, as a speed or quality (higher = better).
    gd/proj speed_k = −log10 of the loss ratio after k steps; pace_d = −steps to depth d."""
    keys = rows[0].keys()
    out = [(f"gd_speed_{k[len('gd_ratio_'):]}", k) for k in keys if k.startswith("gd_ratio_")]
    out += [(f"gd_pace_{k[len('gd_steps_'):]}", k) for k in keys if k.startswith("gd_steps_")]
    out += [(f"proj_speed_{k[len('proj_ratio_'):]}", k) for k in keys if k.startswith("proj_ratio_")]
    out += [(f"proj_pace_{k[len('proj_steps_'):]}", k) for k in keys if k.startswith("proj_steps_")]
    out += [("test_acc", "test_acc"), ("test_acc_final", "test_acc_final")]
    return out


def goodness(row: dict, column: str) -> float:
    """Higher is better: −log10 ratio, −steps (censored: −inf), accuracy in points."""
    v = float(row[column])
    if "_ratio_" in column:
        return -math.log10(v) if v > 0 else math.inf
    if "_steps_" in column:
        return -v
    return 100.0 * v


def by_instance(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(instance_id(r), {})[r["pick"]] = r
    return {k: v for k, v in out.items() if set(v) == set(PICKS)}


def bootstrap_mean(values, reps: int, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lower, upper) of a 95% percentile bootstrap over the values (nan dropped)."""
    v = np.asarray([x for x in values if np.isfinite(x)], np.float64)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(reps, len(v)))].mean(axis=1)
    return float(v.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def spearman4(x, y) -> float:
    """Spearman ρ of four paired values; nan when either side is constant."""
    from scipy import stats

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if np.ptp(stats.rankdata(x)) == 0 or np.ptp(stats.rankdata(y)) == 0:
        return math.nan
    return float(stats.spearmanr(x, y)[0])


def summarize(rows: list[dict], reps: int, domains=None) -> list[dict]:
    """One row per (predictor, outcome): the mean within-instance Spearman ρ and its
    bootstrap interval; and per outcome the paired top-vs-bottom comparison."""
    from scipy import stats

    inst = by_instance([r for r in rows if domains is None or r["domain"] in domains])
    table = []
    for name, column in outcomes(rows):
        good = {k: [goodness(v[p], column) for p in PICKS] for k, v in inst.items()}
        for pred in PREDICTORS:
            rho = [spearman4([v[p][pred] for p in PICKS], good[k]) for k, v in inst.items()]
            mean, lo, hi = bootstrap_mean(rho, reps)
            table.append({"kind": "spearman", "predictor": pred, "outcome": name,
                          "n": int(np.isfinite(rho).sum()), "mean": mean, "lo": lo, "hi": hi})
        top = np.array([g[0] for g in good.values()])
        bottom = np.array([g[-1] for g in good.values()])
        wins, losses = int(np.sum(top > bottom)), int(np.sum(top < bottom))
        p = float(stats.binomtest(wins, wins + losses).pvalue) if wins + losses else math.nan
        finite = np.isfinite(top) & np.isfinite(bottom)
        mean, lo, hi = bootstrap_mean(top[finite] - bottom[finite], reps)
        table.append({"kind": "top_vs_bottom", "predictor": "score_trained_last", "outcome": name,
                      "n": len(top), "wins": wins, "ties": len(top) - wins - losses, "losses": losses,
                      "sign_p": p, "mean": mean, "lo": lo, "hi": hi, "n_finite": int(finite.sum())})
    return table


def _ci(row: dict, fmt: str = "+.2f") -> str:
    if not np.isfinite(row["mean"]):
        return "–"
    return f"{row['mean']:{fmt}} [{row['lo']:{fmt}}, {row['hi']:{fmt}}]"


def markdown(rows: list[dict], reps: int) -> str:
    """The tables of docs/results/mechanism/README.md, from instances.csv's rows."""
    inst = by_instance(rows)
    doms = sorted({k[0] for k in inst})
    parts = [f"Instances: {len(inst)} ({', '.join(f'{d} {sum(k[0] == d for k in inst)}' for d in doms)}); "
             "ρ > 0: a higher score goes with faster convergence / higher accuracy.\n"]
    all_rows = summarize(rows, reps)
    primary = next((r for r in all_rows if r["kind"] == "spearman"
                    and (r["predictor"], r["outcome"]) == PRIMARY), None)
    if primary is not None:        # (a smoke run has no 1000-step column)
        parts.append(f"**Primary** (fixed before the run): mean within-instance Spearman ρ of "
                     f"`{PRIMARY[0]}` with `{PRIMARY[1]}` = {_ci(primary)} over {primary['n']} "
                     "instances.\n")
    header = "| outcome | " + " | ".join(f"ρ {p}" for p in PREDICTORS) + " |"
    for title, sel in [("all instances", None)] + [(d, (d,)) for d in doms]:
        summary = all_rows if sel is None else summarize(rows, reps, sel)
        parts.append(f"\n### Spearman ρ, mean over instances [95% bootstrap CI]: {title}\n")
        parts += [header, "|---" * (len(PREDICTORS) + 1) + "|"]
        for name, _ in outcomes(rows):
            cells = [_ci(next(r for r in summary if r["kind"] == "spearman" and r["predictor"] == p
                              and r["outcome"] == name)) for p in PREDICTORS]
            parts.append(f"| {name} | " + " | ".join(cells) + " |")
    parts.append("\n### Top vs bottom group (CRC score under the trained model), paired by instance\n")
    parts += ["| outcome | top better / ties / bottom better | sign test p | mean top − bottom [95% CI] |",
              "|---|---|---|---|"]
    for r in (r for r in all_rows if r["kind"] == "top_vs_bottom"):
        unit = "pts" if r["outcome"].startswith("test") else ("log10" if "speed" in r["outcome"] else "steps")
        parts.append(f"| {r['outcome']} | {r['wins']} / {r['ties']} / {r['losses']} | {r['sign_p']:.3g} "
                     f"| {_ci(r)} {unit} (n={r['n_finite']}) |")
    return "\n".join(parts) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inst = by_instance(rows)
    colors = dict(zip(PICKS, ("tab:green", "tab:blue", "tab:gray", "tab:red")))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    gd_col = ("gd_ratio_1000" if "gd_ratio_1000" in rows[0]
              else next(k for k in rows[0] if k.startswith("gd_ratio_")))
    for k, v in inst.items():
        style = "-" if k[0] == "digits" else "--"
        axes[0].plot(range(4), [v[p][gd_col] for p in PICKS], style, color="0.6", lw=0.8)
        acc = np.array([100 * v[p]["test_acc"] for p in PICKS])
        axes[2].plot(range(4), acc - acc.mean(), style, color="0.6", lw=0.8)
        for p in PICKS:
            axes[1].scatter(v[p]["score_trained_last"], v[p]["score_init_all"], color=colors[p], s=12,
                            marker="o" if k[0] == "digits" else "^")
    axes[0].set(xticks=range(4), xticklabels=PICKS, yscale="log",
                ylabel=f"GD squared loss: {gd_col} (L_k / L_0)", title="Theorem 1's setting: lower = faster")
    axes[1].set(xscale="log", yscale="log", xlabel="CRC score under the trained model (last layer)",
                ylabel="realised λ⁺min of K̃(L ∪ g) at θ_0 (all parameters)", title="score vs realised λ⁺min")
    for p in PICKS:
        axes[1].scatter([], [], color=colors[p], label=p)
    axes[1].legend(fontsize=8)
    axes[1].text(0.98, 0.02, "scores of 0 (a group short of the rank) not shown", ha="right",
                 transform=axes[1].transAxes, fontsize=7)
    axes[2].axhline(0.0, color="k", lw=0.6)
    axes[2].set(xticks=range(4), xticklabels=PICKS,
                ylabel="test accuracy − instance mean (points)",
                title="project's training: test accuracy (fit's early stopping)")
    fig.suptitle("CRC's picks, retrained from one initialisation (solid: digits, dashed: moons)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table_from_csv(path, reps: int = 10000) -> str:
    """The markdown tables recomputed from a committed instances.csv."""
    return markdown(read_rows(Path(path)), reps)


# --------------------------------------------------------------------------- the run

def run(config, out: Path) -> list[dict]:
    """Every instance not yet in OUT/instances.csv, appended as it finishes."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "instances.csv"
    rows = read_rows(path) if path.exists() else []
    done = {instance_id(r) for r in rows}
    for d_index, (name, dom) in enumerate(sorted(config.domains.items())):
        setup = domain_setup(dom, config)
        for trial in range(int(dom.trials)):
            sets = labeled_sets(setup, dom.sizes, np.random.default_rng([config.seed, d_index, trial]))
            for size in dom.sizes:
                if (name, trial, size) in done:
                    continue
                start = time.time()
                rows += run_instance(setup, config, name, d_index, trial, size, sets[size],
                                     int(dom.group_size))
                write_rows(path, rows)
                log.info("%s trial %d |L| = %d: %.0f s (load %s)", name, trial, size,
                         time.time() - start, " ".join(open("/proc/loadavg").read().split()[:3]))
    return rows


def report(out: Path, reps: int) -> str:
    rows = read_rows(out / "instances.csv")
    md = markdown(rows, reps)
    (out / "table.md").write_text(md)
    plot(rows, out / "mechanism.png")
    return md


def main(argv=None) -> int:
    """The command (`python -m experiments.mechanism`): the exit status."""
    from crc_jax.errors import UsageError
    from crc_jax.runtime import command

    parser = command.ArgumentParser(prog="python -m experiments.mechanism",
                                    description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", required=True, help="directory of instances.csv, table.md, mechanism.png")
    parser.add_argument("--config", default="mechanism", help="mechanism or mechanism:smoke")
    parser.add_argument("--report-only", action="store_true", help="rebuild table and figure from the CSV")

    def work() -> None:
        args = parser.parse_args(argv)
        from experiments.configs import mechanism as mechanism_config

        name, _, arg = args.config.partition(":")
        if name != "mechanism":
            raise UsageError(f"--config must be mechanism or mechanism:smoke, got {args.config!r}")
        try:
            config = mechanism_config.get_config(arg or None)
        except ValueError as err:
            raise UsageError(str(err)) from None
        out = Path(args.out)
        if args.report_only and not (out / "instances.csv").exists():
            raise UsageError(f"--report-only needs {out / 'instances.csv'}: run without it first")
        if not args.report_only:
            start = time.time()
            run(config, out)
            log.info("all instances: %.0f s", time.time() - start)
        sys.stdout.write(report(out, int(config.bootstrap)))

    return command.run(work, own_process=argv is None)


if __name__ == "__main__":
    sys.exit(main())
