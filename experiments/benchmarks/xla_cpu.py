"""XLA:CPU with and without YNNPACK fusion: a standalone WRN-28-2 train step, no crc_jax code.

jaxlib 0.10 fuses dots, convolutions and reductions into YNNPACK calls on CPU by default,
and a WRN-28-2 train step got about 4x slower than on jax 0.5.3. crc_jax therefore sets
`--xla_cpu_experimental_ynn_fusion_type=` (empty: no YNNPACK fusion) in XLA_FLAGS at
import (crc_jax.runtime.xla_env). This benchmark decides whether that default is still needed:
the same step (a pre-activation WRN-28-2 in Flax, leaky ReLU 0.1, BatchNorm, SGD Nesterov
with weight decay, 32x32x3 images, 10 classes) runs in two fresh processes, one with
XLA's default fusion and one with the flag (XLA reads XLA_FLAGS once, when its backend
starts, hence two processes). Each child is this file run as a script: it imports
neither crc_jax nor experiments, so XLA_FLAGS is exactly what the parent gives it (the
user's own flags, any YNN setting of theirs removed). The child also counts the YNN
fusions in the compiled step.

Command:  python -m experiments.benchmarks.xla_cpu                 (B=128, 3 timed steps, 2 runs each)
          python -m experiments.benchmarks.xla_cpu --batch 960     (FixMatch's 960 images)
          python -m experiments.benchmarks.xla_cpu --threads 1     (on a busy machine)
Expect:   CPU-dependent. On a quiet 2-core machine (jaxlib 0.10.2): about 10.7 s a
          step with XLA's default vs 2.2 s with fusion off at B=128 (ratio about 5x; compile
          14 vs 6.5 s). On a 2-core AVX-512/AMX Xeon under load the ratio was 0.45 (fusion
          off slower). A ratio at or below 1 on the machines that matter means the default
          in crc_jax.runtime.xla_env should go; RESULTS.md ("XLA:CPU") records the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from experiments.benchmarks import start_in_child

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"  # as in crc_jax.runtime.xla_env (not imported here)


def build_step(batch: int, *, depth: int = 28, widen: int = 2, classes: int = 10):
    """(jitted step, state, batch) of a WRN-depth-widen train step; imports JAX here only."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    norm = lambda: nn.BatchNorm(use_running_average=False, momentum=0.999, epsilon=1e-3)  # noqa: E731
    act = lambda x: nn.leaky_relu(x, 0.1)  # noqa: E731

    class Block(nn.Module):
        features: int
        stride: int

        @nn.compact
        def __call__(self, x):
            h = act(norm()(x))
            shortcut = x
            if x.shape[-1] != self.features or self.stride != 1:
                shortcut = nn.Conv(self.features, (1, 1), self.stride, use_bias=False)(h)
            h = nn.Conv(self.features, (3, 3), self.stride, padding=1, use_bias=False)(h)
            h = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(act(norm()(h)))
            return shortcut + h

    class WideResNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            n = (depth - 4) // 6
            x = nn.Conv(16, (3, 3), padding=1, use_bias=False)(x)
            for i, width in enumerate((16 * widen, 32 * widen, 64 * widen)):
                for j in range(n):
                    x = Block(width, 2 if (i > 0 and j == 0) else 1)(x)
            x = act(norm()(x)).mean(axis=(1, 2))
            return nn.Dense(classes)(x)

    model = WideResNet()
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, 32, 32, 3), np.float32))
    y = jnp.asarray(rng.integers(0, classes, batch).astype(np.int32))
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.03, 0.9, nesterov=True))
    state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))

    def step(state, x, y):
        params, stats, opt = state

        def loss_fn(p):
            logits, new = model.apply({"params": p, "batch_stats": stats}, x, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), new["batch_stats"], opt), loss

    return jax.jit(step, donate_argnums=(0,)), state, (x, y)


def child(batch: int, steps: int) -> None:
    """Time the step in this process and print one JSON line."""
    import jax

    jitted, state, (x, y) = build_step(batch)
    start = time.perf_counter()
    compiled = jitted.lower(state, x, y).compile()
    state, loss = compiled(state, x, y)
    jax.block_until_ready(loss)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = compiled(state, x, y)
    float(loss)
    step_s = (time.perf_counter() - start) / steps
    from importlib import metadata
    print(json.dumps({"compile_s": compile_s, "step_s": step_s, "images_per_s": batch / step_s,
                      "ynn_fusions": compiled.as_text().count('"__ynn_fusion"'),
                      "jax": jax.__version__, "jaxlib": metadata.version("jaxlib"),
                      "xla_flags": os.environ.get("XLA_FLAGS", "")}))


def cpu_model() -> str:
    """The CPU's model name and its widest vector ISA (YNNPACK's speed depends on both)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                 if ln.startswith("model name")), platform.machine())
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                      if ln.startswith("flags")), []))
    isa = next((f for f in ("amx_tile", "avx512f", "avx2", "avx") if f in flags), "no AVX")
    return f"{name} ({isa.replace('_tile', '')})"


def without_ynn(flags: str) -> str:
    return " ".join(f for f in flags.split() if not f.startswith(YNN_FLAG))


def run_child(label: str, flags: str, batch: int, steps: int, *, one_cpu: bool = False) -> dict:
    env = dict(os.environ, XLA_FLAGS=flags, CRC_JAX_XLA_DEFAULTS="0")
    env.setdefault("JAX_PLATFORMS", "cpu")
    pin = ["taskset", "-c", str(min(os.sched_getaffinity(0)))] if one_cpu else []
    out = subprocess.run([*pin, sys.executable, os.path.abspath(__file__), "--child",
                          "--batch", str(batch), "--steps", str(steps)],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{label} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"  # plus one CPU for the child (taskset)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="images per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the compile")
    parser.add_argument("--repeats", type=int, default=2,
                        help="processes per setting, alternated (default, off, default, off...)")
    parser.add_argument("--threads", default="all", choices=("all", "1"),
                        help="1: both children on one CPU (taskset) with single-threaded Eigen: "
                             "per-core efficiency, less sensitive to a busy machine; "
                             "the default uses every core")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.batch, args.steps)
    start_in_child()   # JAX that cannot start: one line, before any child

    base = without_ynn(os.environ.get("XLA_FLAGS", ""))
    if args.threads == "1":
        base = f"{base} {SINGLE_THREAD}".strip()
    settings = {"XLA default (YNNPACK fusion on)": base,
                "fusion off (crc_jax's default)": f"{base} {YNN_FLAG}=".strip()}
    load = os.getloadavg()
    runs = {label: [] for label in settings}
    for _ in range(args.repeats):
        for label, flags in settings.items():
            runs[label].append(run_child(label, flags, args.batch, args.steps,
                                         one_cpu=args.threads == "1"))
    first = runs[next(iter(runs))][0]
    print(f"WRN-28-2 train step, B={args.batch}, 32x32x3, float32; jax {first['jax']}, jaxlib "
          f"{first['jaxlib']}, Python {platform.python_version()}, {os.cpu_count()} CPUs "
          f"{cpu_model()}, XLA "
          f"threads: {args.threads}; load average {load[0]:.2f} before, {os.getloadavg()[0]:.2f} "
          f"after; {time.strftime('%Y-%m-%d %H:%M')}; {args.repeats} alternated process(es) per "
          f"setting, best shown, every run's s/step in the last column")
    print("\n| XLA:CPU | XLA_FLAGS | YNN fusions | compile + 1st step (s) | s/step | images/s "
          "| runs (s/step) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    best = {}
    for label, rs in runs.items():
        r = best[label] = min(rs, key=lambda r: r["step_s"])
        every = ", ".join(f"{x['step_s']:.3f}" for x in rs)
        print(f"| {label} | `{r['xla_flags'] or '(none)'}` | {r['ynn_fusions']} | "
              f"{min(x['compile_s'] for x in rs):.1f} | {r['step_s']:.3f} | "
              f"{r['images_per_s']:.1f} | {every} |")
    on, off = best.values()
    compile_on, compile_off = (min(x["compile_s"] for x in rs) for rs in runs.values())
    print(f"\nXLA default / fusion off: step time {on['step_s'] / off['step_s']:.2f}x, "
          f"compile time {compile_on / compile_off:.2f}x "
          "(above 1: fusion off is faster)")


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
