"""Throughput of one jitted train step: FixMatch vs supervised, and FixMatch vs PyTorch.

The whole step (augmentation on device, one forward/backward, optimizer update, EMA)
is a single jitted function; the batch lives on the device before timing starts, so
this measures the step alone. FixMatch at the reference shape processes
B + 2 mu B images per step (64 + 2 * 7 * 64 = 960 at B=64, mu=7); supervised B.
When torch is importable, the same FixMatch step written in PyTorch after
kekmodel/FixMatch-pytorch (experiments/benchmarks/torch_peer.py) is timed at the same
shape and the ratio of images/s printed; without torch that is one line and skipped.
`--steps_per_dispatch K` runs K steps per call (crc_jax.multistep, a lax.scan over the
chunk; train.steps_per_dispatch in configs).

Command:  python -m experiments.benchmarks.train_step            (WRN-28-2, B=64, mu=7)
          python -m experiments.benchmarks.train_step --algorithms fixmatch --steps 2
          python -m experiments.benchmarks.train_step --steps 3 --batch_size 8 --steps_per_dispatch 3
Expect:   on the 2-core CPU of RESULTS.md with jaxlib 0.10.2 and crc_jax's XLA:CPU default
          (crc_jax.runtime.xla_env), 14-20 s per FixMatch step at the reference shape and 0.9-1.2x
          the PyTorch peer's images/s (idle Intel Xeon, 2026-12-03: 14.1 vs 13.1 s a step;
          a 2-core AMD EPYC: 20.4 vs 24.6 s); with CRC_JAX_XLA_DEFAULTS=0, 2.3-4x slower.
          RESULTS.md ("Idle-machine rerun", "Train step").
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import numpy as np

from crc_jax import models, multistep, ssl
from crc_jax.runtime import xla_env
from experiments.configs.base import get_base_config


def reference_config(name: str, *, batch_size: int, mu: int):
    """FixMatch's reference optimizer settings; the supervised step uses the same ones."""
    c = get_base_config()
    c.ssl.name = name
    c.ssl.unlabeled_ratio = mu
    c.train.batch_size = batch_size
    c.train.optimizer, c.train.lr, c.train.momentum, c.train.nesterov = "sgd", 0.03, 0.9, True
    c.train.weight_decay, c.train.schedule, c.train.ema_decay = 5e-4, "fixmatch_cosine", 0.999
    return c


def time_step(algorithm, *, image_shape, num_classes: int, steps: int, seed: int = 0,
              steps_per_dispatch: int = 1) -> dict:
    """Compile, warm up once, then time `steps` steps; one host sync at the end.

    With steps_per_dispatch K > 1, every call runs K steps (the batch repeated, K keys) in
    one lax.scan (crc_jax.multistep) and `steps` is rounded up to a multiple of K.
    """
    rng = np.random.default_rng(seed)
    batch = {"x_l": rng.random((algorithm.labeled_batch, *image_shape), np.float32),
             "y_l": rng.integers(0, num_classes, algorithm.labeled_batch).astype(np.int32)}
    if algorithm.unlabeled_batch:
        batch["x_u"] = rng.random((algorithm.unlabeled_batch, *image_shape), np.float32)
    k = max(int(steps_per_dispatch), 1)
    calls = -(-steps // k)
    step = algorithm.train_step
    if k > 1:
        batch = {name: np.broadcast_to(v, (k, *v.shape)).copy() for name, v in batch.items()}
        step = multistep.scan_steps(algorithm.train_step)
    batch = jax.device_put(batch)
    key = jax.random.PRNGKey(seed)
    state = algorithm.init_state(key, np.asarray(batch["x_l"]).reshape(-1, *image_shape)[:1])
    keys = jax.random.split(key, (calls + 1) * k)
    keys = keys.reshape(calls + 1, k, *keys.shape[1:]) if k > 1 else keys

    start = time.perf_counter()
    state, metrics = step(state, batch, keys[0])  # compile + first call
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(calls):
        state, metrics = step(state, batch, keys[i + 1])
    loss = float(np.asarray(metrics["loss"]).ravel()[-1])  # the only sync
    elapsed = time.perf_counter() - start
    steps = calls * k
    images = algorithm.labeled_batch + 2 * algorithm.unlabeled_batch  # two views of each x_u
    name = algorithm.name + (f" ({k} steps a call)" if k > 1 else "")
    return {"algorithm": name, "images_per_step": images,
            "compile_s": compile_s, "step_s": elapsed / steps,
            "steps_per_s": steps / elapsed, "images_per_s": images * steps / elapsed,
            "loss": loss}


def row(r: dict) -> str:
    return (f"| {r['algorithm']} | {r['images_per_step']} | {r['compile_s']:.1f} | "
            f"{r['step_s']:.3f} | {r['steps_per_s']:.3f} | {r['images_per_s']:.1f} |")


def torch_peer(args, ours: dict):
    """Time the PyTorch FixMatch step at the same shape; print its row and our ratio."""
    try:
        import torch  # noqa: F401
    except ImportError:
        print("\nPyTorch peer: skipped (torch is not importable)")
        return None
    from experiments.benchmarks import torch_peer as peer

    r = peer.time_fixmatch(batch_size=args.batch_size, mu=args.mu, steps=args.steps,
                           num_classes=args.num_classes, image_size=args.image_size)
    print(row(r), flush=True)
    print(f"\ncrc_jax fixmatch / PyTorch fixmatch images/s: "
          f"{ours['images_per_s'] / r['images_per_s']:.2f}x "
          f"({ours['step_s']:.2f} vs {r['step_s']:.2f} s a step, {ours['images_per_step']} images)")
    return r


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="wrn28_2")
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    parser.add_argument("--algorithms", default="fixmatch,supervised")
    parser.add_argument("--steps_per_dispatch", type=int, default=1,
                        help="train steps per jitted call (a lax.scan over the chunk)")
    parser.add_argument("--torch_peer", default="auto", choices=("auto", "off"),
                        help="auto: time the PyTorch FixMatch step too when torch is importable")
    args = parser.parse_args(argv)

    model = models.get(args.model, num_classes=args.num_classes)
    shape = (args.image_size, args.image_size, args.channels)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}; model {args.model}, "
          f"images {shape}, B={args.batch_size}, mu={args.mu}")
    print(xla_env.describe())
    print("| algorithm | images/step | compile+1st step (s) | s/step | steps/s | images/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    results = {}
    for name in args.algorithms.split(","):
        config = reference_config(name, batch_size=args.batch_size, mu=args.mu)
        algorithm = ssl.create(config, model, num_train_steps=1 << 20, flip=True)
        results[name] = time_step(algorithm, image_shape=shape, num_classes=args.num_classes,
                                  steps=args.steps, steps_per_dispatch=args.steps_per_dispatch)
        print(row(results[name]), flush=True)
    if "fixmatch" in results and args.torch_peer == "auto":
        if args.model != "wrn28_2" or shape != (32, 32, 3):
            print("\nPyTorch peer: skipped (it is WRN-28-2 on 32x32x3 only)")
        else:
            torch_peer(args, results["fixmatch"])
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
