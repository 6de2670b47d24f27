"""Throughput of one jitted train step: FixMatch vs supervised, on one model, in one run.

The whole step (augmentation on device, one forward/backward, optimizer update, EMA)
is a single jitted function; the batch lives on the device before timing starts, so
this measures the step alone. FixMatch at the reference shape processes
B + 2 mu B images per step (64 + 2 * 7 * 64 = 960 at B=64, mu=7); supervised B.

Command:  python -m experiments.benchmarks.train_step            (WRN-28-2, B=64, mu=7)
          python -m experiments.benchmarks.train_step --steps 3 --batch_size 8
Expect:   on a 2-core CPU, tens of seconds per FixMatch step at the reference shape;
          figures are recorded in experiments/benchmarks/RESULTS.md ("Train step").
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from crc_jax import models, ssl
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


def time_step(algorithm, *, image_shape, num_classes: int, steps: int, seed: int = 0) -> dict:
    """Compile, warm up once, then time `steps` steps; one host sync at the end."""
    rng = np.random.default_rng(seed)
    batch = {"x_l": rng.random((algorithm.labeled_batch, *image_shape), np.float32),
             "y_l": rng.integers(0, num_classes, algorithm.labeled_batch).astype(np.int32)}
    if algorithm.unlabeled_batch:
        batch["x_u"] = rng.random((algorithm.unlabeled_batch, *image_shape), np.float32)
    batch = jax.device_put(batch)
    key = jax.random.PRNGKey(seed)
    state = algorithm.init_state(key, batch["x_l"][:1])
    keys = jax.random.split(key, steps + 1)

    start = time.perf_counter()
    state, metrics = algorithm.train_step(state, batch, keys[0])  # compile + first step
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(steps):
        state, metrics = algorithm.train_step(state, batch, keys[i + 1])
    loss = float(metrics["loss"])  # the only sync
    elapsed = time.perf_counter() - start
    images = algorithm.labeled_batch + 2 * algorithm.unlabeled_batch  # two views of each x_u
    return {"algorithm": algorithm.name, "images_per_step": images,
            "compile_s": compile_s, "step_s": elapsed / steps,
            "steps_per_s": steps / elapsed, "images_per_s": images * steps / elapsed,
            "loss": loss}


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
    args = parser.parse_args(argv)

    model = models.get(args.model, num_classes=args.num_classes)
    shape = (args.image_size, args.image_size, args.channels)
    device = jax.devices()[0]
    print(f"device: {device.platform} ({device.device_kind}), jax {jax.__version__}, "
          f"model {args.model}, images {shape}, B={args.batch_size}, mu={args.mu}")
    print("| algorithm | images/step | compile+1st step (s) | s/step | steps/s | images/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in args.algorithms.split(","):
        config = reference_config(name, batch_size=args.batch_size, mu=args.mu)
        algorithm = ssl.create(config, model, num_train_steps=1 << 20, flip=True)
        r = time_step(algorithm, image_shape=shape, num_classes=args.num_classes,
                      steps=args.steps)
        print(f"| {r['algorithm']} | {r['images_per_step']} | {r['compile_s']:.1f} | "
              f"{r['step_s']:.3f} | {r['steps_per_s']:.3f} | {r['images_per_s']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
