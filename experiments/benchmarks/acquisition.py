"""Acquisition benchmarks: CRC scoring speed and exactness, empirical NTK speed, CRC memory.

    python -m experiments.benchmarks.acquisition            # all three parts (~10 min on 2 CPU cores)
    python -m experiments.benchmarks.acquisition --part ntk
    python -m experiments.benchmarks.acquisition --part hand_built

1. scoring: CRC scores of a 20,000-image pool in groups of G = 10 against |L| = 500 with
   d = 128 penultimate features, against a direct implementation (per group: the
   (|L|+G)² trace NTK from per-sample last-layer Jacobians, then eigvalsh), timed on a
   subset of the groups. Goal: ≥ 20× the direct groups/s, scores equal to ~1e-4.
1b. hand_built: the same scoring, end to end, for a Context built by hand without
   features_fn (Φ derived from the dense head) next to one with features_fn, pool 4,500,
   |L| = 500, G = 10, d = 128, against the direct implementation. Goal: ≥ 20× direct.
2. ntk: `empirical_ntk(subset="all")` on a small CNN (64 images) against
   neural-tangents' JACOBIAN_CONTRACTION and NTK_VECTOR_PRODUCTS (all jitted,
   vmap_axes=0). Goal: at least as fast as the fastest, values equal after ×C.
3. memory: peak RSS while scoring an SVHN-sized pool (73,257 images, G = 20, |L| = 200,
   d = 128), sampled every 5 ms, against the size of one pool-by-pool float32 matrix.

Figures are recorded in experiments/benchmarks/RESULTS.md ("## Acquisition").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import threading
import time
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_limits

from crc_jax import ntk
from crc_jax.acquisition import Context, from_spec, select
from crc_jax.acquisition.crc import crc as crc_lib


class BenchCNN(nn.Module):
    """Two strided convs, a 128-wide dense layer (d = 128, WRN-28-2's width), the "head"."""

    num_classes: int = 10
    width: int = 128

    @nn.compact
    def __call__(self, x, train=False, return_features=False):
        x = nn.relu(nn.Conv(16, (3, 3), strides=2)(x))
        x = nn.relu(nn.Conv(32, (3, 3), strides=2)(x))
        x = x.reshape(x.shape[0], -1)
        h = nn.tanh(nn.Dense(self.width)(x))
        logits = nn.Dense(self.num_classes, name="head")(h)
        return (logits, h) if return_features else logits


def make_context(n_pool: int, n_labeled: int, *, seed=0, image_shape=(32, 32, 3)) -> Context:
    model = BenchCNN()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_pool, *image_shape)).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(seed), x[:1])
    labeled = rng.choice(n_pool, n_labeled, replace=False)
    return Context(apply_fn=lambda v, xx: model.apply(v, xx),
                   variables=variables, x=x, labeled=np.sort(labeled),
                   unlabeled=np.setdiff1d(np.arange(n_pool), labeled), num_classes=10,
                   features_fn=lambda v, xx: model.apply(v, xx, return_features=True)[1],
                   batch_size=1024)


def timed(fn, *args, repeats=1):
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return out, best


# --------------------------------------------------------------------------- 1. scoring

def direct_scores(ctx: Context, groups: np.ndarray, rank: int) -> np.ndarray:
    """The definition, group by group: K̃(L∪g) = J̄ J̄ᵀ from per-sample Jacobians, eigvalsh."""
    params = ctx.variables["params"]

    def f_head(head, x):
        return ctx.apply_fn({**ctx.variables, "params": {**params, "head": head}}, x)

    @jax.jit
    def jac(x):   # (n, C·P_head): per-sample Jacobians of the head, classes stacked
        j = jax.vmap(jax.jacrev(lambda h, xi: f_head(h, xi[None])[0]), in_axes=(None, 0))(params["head"], x)
        return jnp.concatenate([l.reshape(x.shape[0], -1) for l in jax.tree_util.tree_leaves(j)], axis=1)

    j_l = np.asarray(jac(jnp.asarray(ctx.x[ctx.labeled])), np.float64)
    out = []
    # One BLAS thread: on a busy 2-core machine OpenBLAS's threads slow eigvalsh 50x.
    with threadpool_limits(limits=1, user_api="blas"):
        for g in groups:
            j = np.concatenate([j_l, np.asarray(jac(jnp.asarray(ctx.x[g])), np.float64)])
            ev = np.linalg.eigvalsh(j @ j.T)
            n = len(j)
            out.append(ev[n - min(n, rank)])
    return np.array(out)


def bench_scoring(n_pool=20_000, n_labeled=500, group_size=10, direct_groups=20):
    ctx = make_context(n_pool, n_labeled)
    groups = crc_lib.random_groups(jax.random.PRNGKey(0), ctx.unlabeled, group_size)
    crc_lib.score_groups(ctx, groups[:8])                          # compile
    t = time.perf_counter()
    gram = crc_lib.gram_lib.build(ctx, groups)                     # features of the pool, once
    t_features = time.perf_counter() - t
    t = time.perf_counter()
    scores = gram.score()
    t_scores = time.perf_counter() - t
    ref = direct_scores(ctx, groups[:2], gram.rank)                # compile
    t = time.perf_counter()
    ref = direct_scores(ctx, groups[:direct_groups], gram.rank)
    t_direct = time.perf_counter() - t
    rel = np.max(np.abs(scores[:direct_groups] - ref) / np.abs(ref))
    costs = {}
    for name, strategy, budget in (
            ("crc (Algorithm 1), budget 50", from_spec(f"crc:group_size={group_size}"), 50),
            ("crc sequential=True, budget 50",
             from_spec(f"crc:group_size={group_size},sequential=True"), 50),
            ("crc_greedy max_candidates=2000, budget 10", from_spec("crc_greedy:max_candidates=2000"),
             10)):
        t = time.perf_counter()
        select(strategy, ctx, budget, jax.random.PRNGKey(0))
        costs[name] = time.perf_counter() - t
    fast_rate, e2e_rate = len(groups) / t_scores, len(groups) / (t_scores + t_features)
    direct_rate = direct_groups / t_direct
    return {
        "setting": f"pool {n_pool}, |L| = {n_labeled}, G = {group_size}, d = 128, C = 10, "
                   f"{len(groups)} groups, rank ρ = {gram.rank}",
        "crc_groups_per_s": fast_rate, "crc_end_to_end_groups_per_s": e2e_rate,
        "features_s": t_features, "scores_s": t_scores,
        "direct_groups_per_s": direct_rate, "direct_groups_timed": direct_groups,
        "speedup_scoring": fast_rate / direct_rate, "speedup_end_to_end": e2e_rate / direct_rate,
        "max_rel_diff": float(rel), "score_range": (float(scores.min()), float(scores.max())),
        "strategy_seconds": costs,
    }


def bench_hand_built(n_pool=4_500, n_labeled=500, group_size=10, direct_groups=20):
    """"last" scoring of a hand-built Context without features_fn (Φ derived from the dense
    head) vs one with features_fn vs the direct implementation; whole `score_groups` calls."""
    ctx = make_context(n_pool, n_labeled)
    bare = dataclasses.replace(ctx, features_fn=None)
    groups = crc_lib.random_groups(jax.random.PRNGKey(0), ctx.unlabeled, group_size)
    rates, scores = {}, {}
    for name, c in (("with features_fn", ctx), ("hand-built, no features_fn", bare)):
        crc_lib.score_groups(c, groups[:8], backend="host")                  # compile
        t = time.perf_counter()
        scores[name] = crc_lib.score_groups(c, groups, backend="host")
        rates[name] = len(groups) / (time.perf_counter() - t)
    rank = crc_lib.gram_lib.build(ctx, groups[:1], backend="host").rank
    direct_scores(ctx, groups[:2], rank)                                     # compile
    t = time.perf_counter()
    ref = direct_scores(ctx, groups[:direct_groups], rank)
    rates["direct"] = direct_groups / (time.perf_counter() - t)
    diffs = {name: float(np.max(np.abs(s[:direct_groups] - ref) / np.abs(ref)))
             for name, s in scores.items()}
    return {"setting": f"pool {n_pool}, |L| = {n_labeled}, G = {group_size}, d = 128, C = 10, "
                       f"{len(groups)} groups, rank ρ = {rank}; end to end (features included)",
            "groups_per_s": rates, "max_rel_diff_vs_direct": diffs}


# --------------------------------------------------------------------------- 2. NTK

class SmallCNN(nn.Module):
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(self.num_classes, name="head")(x)


def bench_ntk(n=64, repeats=5):
    from crc_jax.runtime._nt_compat import import_neural_tangents
    nt = import_neural_tangents()
    model = SmallCNN()
    x = jax.random.normal(jax.random.PRNGKey(0), (n, 16, 16, 3))
    params = model.init(jax.random.PRNGKey(1), x[:1])["params"]
    f = lambda p, xx: model.apply({"params": p}, xx)  # noqa: E731
    ours = jax.jit(partial(ntk.empirical_ntk, f, subset="all"))
    fns = {"crc_jax.empirical_ntk": lambda p, xx: ours(p, xx)}
    for impl in ("JACOBIAN_CONTRACTION", "NTK_VECTOR_PRODUCTS"):
        k = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0,
                                        implementation=getattr(nt.NtkImplementation, impl)))
        fns[f"nt {impl}"] = (lambda kk: lambda p, xx: 10 * kk(xx, None, p))(k)
    results, values = {}, {}
    for name, fn in fns.items():
        _, compile_s = timed(fn, params, x)
        values[name], results[name] = timed(fn, params, x, repeats=repeats)
    ref = np.asarray(values["crc_jax.empirical_ntk"])
    diffs = {name: float(np.max(np.abs(np.asarray(v) - ref)) / np.max(np.abs(ref)))
             for name, v in values.items()}
    return {"setting": f"{n} images 16×16×3, {ntk.count_parameters(params)} parameters, C = 10",
            "seconds": results, "max_rel_diff_vs_ours": diffs}


# --------------------------------------------------------------------------- 3. memory

def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def with_peak_rss(fn):
    """(fn(), seconds, peak RSS in bytes while it ran), RSS sampled every 5 ms."""
    peak, done = [rss_bytes()], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.005)

    thread = threading.Thread(target=sample)
    thread.start()
    t = time.perf_counter()
    try:
        out = fn()
    finally:
        seconds = time.perf_counter() - t
        done.set()
        thread.join()
    return out, seconds, peak[0]


def bench_memory(n_pool=73_257, n_labeled=200, group_size=20):
    ctx = make_context(n_pool, n_labeled, seed=1)
    groups = crc_lib.random_groups(jax.random.PRNGKey(0), ctx.unlabeled, group_size)
    crc_lib.score_groups(ctx, groups[:4])   # compile (and a first pass over the pool)
    before = rss_bytes()
    scores, seconds, peak = with_peak_rss(lambda: crc_lib.score_groups(ctx, groups))
    pool_matrix = 4 * n_pool ** 2
    return {"setting": f"pool {n_pool} (32×32×3, {ctx.x.nbytes / 2**20:.0f} MiB of images), "
                       f"|L| = {n_labeled}, "
                       f"G = {group_size}, d = 128, {len(groups)} groups",
            "rss_before_MiB": before / 2**20, "rss_peak_MiB": peak / 2**20,
            "peak_increase_MiB": (peak - before) / 2**20,
            "pool_by_pool_float32_MiB": pool_matrix / 2**20, "seconds": seconds,
            "n_scores": len(scores)}


def machine() -> str:
    return (f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"jax {jax.__version__} on {jax.devices()[0].platform}, "
            f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "scoring", "hand_built", "ntk", "memory"],
                        default="all")
    parser.add_argument("--direct-groups", type=int, default=20,
                        help="groups the direct implementation is timed on")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.part in ("all", "scoring"):
        r = bench_scoring(direct_groups=args.direct_groups)
        print(f"\n[scoring] {r['setting']}")
        print(f"  CRC scores:      {r['crc_groups_per_s']:10.1f} groups/s  ({r['scores_s']:.2f} s; "
              f"pool features once: {r['features_s']:.2f} s)")
        print(f"  CRC end to end:  {r['crc_end_to_end_groups_per_s']:10.1f} groups/s")
        print(f"  direct:          {r['direct_groups_per_s']:10.2f} groups/s  "
              f"(timed on {r['direct_groups_timed']} groups)")
        print(f"  speedup: {r['speedup_scoring']:.0f}x scoring, {r['speedup_end_to_end']:.0f}x end to end "
              f"(goal ≥ 20x); largest relative score difference {r['max_rel_diff']:.2e}; "
              f"scores in [{r['score_range'][0]:.3g}, {r['score_range'][1]:.3g}]")
        for name, seconds in r["strategy_seconds"].items():
            print(f"  whole acquisition, {name:42s} {seconds:7.2f} s")
    if args.part in ("all", "hand_built"):
        r = bench_hand_built(direct_groups=args.direct_groups)
        print(f"\n[hand_built] {r['setting']}")
        direct = r["groups_per_s"]["direct"]
        for name, rate in r["groups_per_s"].items():
            diff = r["max_rel_diff_vs_direct"].get(name)
            print(f"  {name:28s} {rate:10.1f} groups/s  ({rate / direct:6.1f}x direct)"
                  + ("" if diff is None else f"  max rel. score diff vs direct {diff:.1e}"))
    if args.part in ("all", "ntk"):
        r = bench_ntk()
        print(f"\n[ntk] {r['setting']}")
        ours = r["seconds"]["crc_jax.empirical_ntk"]
        for name, s in r["seconds"].items():
            print(f"  {name:30s} {1e3 * s:8.1f} ms  ({s / ours:5.2f}x ours)  "
                  f"max |ΔK|/max|K| vs ours {r['max_rel_diff_vs_ours'][name]:.1e}")
    if args.part in ("all", "memory"):
        r = bench_memory()
        print(f"\n[memory] {r['setting']}")
        print(f"  RSS before scoring {r['rss_before_MiB']:.0f} MiB, peak {r['rss_peak_MiB']:.0f} MiB "
              f"(+{r['peak_increase_MiB']:.0f} MiB) over {r['seconds']:.1f} s; one pool-by-pool "
              f"float32 matrix would be {r['pool_by_pool_float32_MiB']:.0f} MiB")


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
