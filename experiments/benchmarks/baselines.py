"""Benchmark of the baseline strategies on an SVHN-sized pool: time and peak memory of one
acquisition.

    python -m experiments.benchmarks.baselines                  # every strategy (~10-20 min, 2 CPU cores)
    python -m experiments.benchmarks.baselines --strategies coreset badge

The pool of experiments/benchmarks/acquisition.py: 73,257 random 32×32×3 images through a
small CNN whose penultimate layer has d = 128 features, |L| = 200, budget 50. BALD gets
MC dropout (rate 0.25) on those features before the head. Each strategy runs once on a
5,000-image pool first (compiles), then once on the full pool, timed, while a thread
samples the process RSS every 5 ms. Reference rows measured in the same run: `random`
(no model) and `entropy` (one forward pass over the pool); the ratio column is the time
over entropy's. Goals: peak increase under 2 GB and one acquisition under
2 minutes on a 2-core CPU. Figures go to RESULTS.md ("## Baseline strategies").
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import jax
import jax.numpy as jnp

from crc_jax import acquisition
from experiments.benchmarks.acquisition import machine, make_context, rss_bytes, with_peak_rss

STRATEGIES = ("random", "entropy", "coreset", "badge", "typiclust", "probcover", "bald")
REFERENCE = "entropy"
DROPOUT = 0.25


def with_mc_dropout(ctx):
    """The Context with a stochastic apply: dropout on the d = 128 features, then the head."""
    def stochastic_apply(variables, x, key):
        h = ctx.features_fn(variables, x)
        keep = jax.random.bernoulli(key, 1.0 - DROPOUT, h.shape)
        return (jnp.where(keep, h / (1.0 - DROPOUT), 0.0) @ variables["params"]["head"]["kernel"]
                + variables["params"]["head"]["bias"])

    return dataclasses.replace(ctx, stochastic_apply_fn=stochastic_apply)


def measure(strategy, ctx, budget):
    before = rss_bytes()
    picked, seconds, peak = with_peak_rss(
        lambda: acquisition.select(strategy, ctx, budget, jax.random.PRNGKey(0)))
    return seconds, (max(peak, before) - before) / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--pool", type=int, default=73_257)
    parser.add_argument("--labeled", type=int, default=200)
    parser.add_argument("--budget", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    small = with_mc_dropout(make_context(5_000, args.labeled, seed=2))
    ctx = with_mc_dropout(make_context(args.pool, args.labeled, seed=1))
    print(f"pool {args.pool} (32×32×3, {ctx.x.nbytes / 2**20:.0f} MiB of images), "
          f"|L| = {args.labeled}, d = 128, budget {args.budget}")
    results = {}
    names = list(dict.fromkeys([REFERENCE] + args.strategies))
    for name in names:
        strategy = acquisition.from_spec(name)
        acquisition.select(strategy, small, args.budget, jax.random.PRNGKey(0))     # compile
        results[name] = measure(strategy, ctx, args.budget)
        print(f"  {name:10s} {results[name][0]:8.2f} s  ({results[name][0] / results[REFERENCE][0]:6.2f}x "
              f"{REFERENCE})  peak RSS increase {results[name][1]:8.0f} MiB", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
