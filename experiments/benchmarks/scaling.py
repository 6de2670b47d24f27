"""Data-parallel scaling: train-step images/s and CRC groups/s on 1 device and on N.

Both measurements run in one process, on a 1-device mesh (jax.devices()[:1]) and on a
mesh over all N devices, with the same model, data and compiled code paths that
`experiments.main` uses (crc_jax.runtime.sharding: batches split over "data", state replicated):

  train step   `sharding.data_parallel(algorithm.train_step)` on batches placed by
               `shard_batch`; images/s counts the B + μB images of a batch.
  CRC          `gram.build(ctx, groups, mesh=...)` + `.score()`: pool features (or per-sample
               Jacobians, subset "all") split over the devices, then float64 eigvalsh on
               the host (which does not scale with devices). groups/s end to end.

Command:  python -m experiments.benchmarks.scaling                      (every device JAX sees)
          python -m experiments.benchmarks.scaling --cpu_devices 4      (4 forced host devices)
          python -m experiments.benchmarks.scaling --cpu_devices 4 --model cnn --batch_size 32
Expect:   on a GPU/TPU host with N chips, close to N× for the train step at the reference
          shape; on CPU, forced host devices share the same cores, so ~1× (it checks the
          sharded code paths, not speed). Figures: experiments/benchmarks/RESULTS.md ("Scaling").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu_devices", type=int, default=0,
                   help="force this many host devices (sets XLA_FLAGS; CPU only)")
    p.add_argument("--model", default="wrn28_2")
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--num_classes", type=int, default=10)
    p.add_argument("--algorithms", default="mean_teacher,fixmatch")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--mu", type=int, default=7)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--steps", type=int, default=3, help="timed train steps after the warm-up")
    p.add_argument("--pool", type=int, default=4096, help="CRC pool size (subset last)")
    p.add_argument("--pool_all", type=int, default=256, help="CRC pool size (subset all)")
    p.add_argument("--labeled", type=int, default=100)
    p.add_argument("--group_size", type=int, default=10)
    p.add_argument("--subsets", default="last,all")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    return p.parse_args(argv)


def time_train_step(name: str, args, mesh) -> dict:
    import jax
    import numpy as np

    from crc_jax import models, ssl
    from crc_jax.runtime import sharding
    from experiments.configs.base import get_base_config

    c = get_base_config()
    c.ssl.name, c.ssl.unlabeled_ratio, c.train.batch_size = name, args.mu, args.batch_size
    c.train.dtype = args.dtype
    model = models.get(args.model, num_classes=args.num_classes, dtype=args.dtype)
    alg = ssl.create(c, model, num_train_steps=1000, flip=True)
    shape = (args.image_size, args.image_size, 3)
    rng = np.random.default_rng(0)
    batch = {"x_l": rng.random((alg.labeled_batch, *shape), np.float32),
             "y_l": rng.integers(0, args.num_classes, alg.labeled_batch).astype(np.int32),
             "x_u": rng.random((alg.unlabeled_batch, *shape), np.float32)}
    # on the devices before timing, as fit's batches are when the step is sharded
    batch = sharding.shard_batch(mesh, batch) if sharding.is_parallel(mesh) else jax.device_put(batch)
    state = sharding.replicate(mesh, alg.init_state(jax.random.PRNGKey(0), batch["x_l"][:1]))
    step = sharding.data_parallel(alg.train_step, mesh)
    keys = jax.random.split(jax.random.PRNGKey(1), args.steps + 1)

    start = time.perf_counter()
    state, metrics = step(state, batch, keys[0])
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.steps):
        state, metrics = step(state, batch, keys[i + 1])
    float(metrics["loss"])
    elapsed = time.perf_counter() - start
    images = alg.labeled_batch + alg.unlabeled_batch
    return {"what": f"train step {name}", "devices": sharding.num_devices(mesh),
            "compile_s": round(compile_s, 2), "step_s": elapsed / args.steps,
            "rate": images * args.steps / elapsed, "unit": "images/s"}


def time_crc(subset: str, args, mesh) -> dict:
    import jax
    import numpy as np

    from crc_jax import models
    from crc_jax.runtime import sharding
    from crc_jax.acquisition import Context
    from crc_jax.acquisition.crc import gram as gram_lib

    n = args.pool if subset == "last" else args.pool_all
    model = models.get(args.model, num_classes=args.num_classes, dtype="float32")
    rng = np.random.default_rng(0)
    x = rng.random((n, args.image_size, args.image_size, 3), np.float32)
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    labeled = np.arange(min(args.labeled, n // 4))
    unlabeled = np.arange(len(labeled), n)
    g = args.group_size
    groups = unlabeled[:len(unlabeled) // g * g].reshape(-1, g)
    ctx = Context(apply_fn=lambda v, xx: model.apply(v, xx), variables=variables, x=x,
                  labeled=labeled, unlabeled=unlabeled, num_classes=args.num_classes,
                  features_fn=lambda v, xx: model.apply(v, xx, return_features=True)[1],
                  batch_size=256)

    def run():
        start = time.perf_counter()
        gram = gram_lib.build(ctx, groups, subset=subset, mesh=mesh)
        built = time.perf_counter()
        scores = gram.score()
        return built - start, time.perf_counter() - built, scores

    run()                                            # compile
    build_s, score_s, scores = run()
    return {"what": f"CRC subset={subset} (pool {n}, L={len(labeled)}, G={g})",
            "devices": sharding.num_devices(mesh), "build_s": round(build_s, 2),
            "score_s": round(score_s, 2), "rate": len(groups) / (build_s + score_s),
            "unit": "groups/s", "scores": np.asarray(scores).tolist()}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.cpu_devices:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.cpu_devices}")
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import numpy as np

    from crc_jax.runtime import sharding

    meshes = [sharding.make_mesh(jax.devices()[:1])]
    if jax.device_count() > 1:
        meshes.append(sharding.make_mesh())
    rows = []
    for name in filter(None, args.algorithms.split(",")):
        rows += [time_train_step(name, args, mesh) for mesh in meshes]
    for subset in filter(None, args.subsets.split(",")):
        rows += [time_crc(subset, args, mesh) for mesh in meshes]

    device = jax.devices()[0]
    print(f"{jax.device_count()} x {device.device_kind} ({jax.default_backend()}), host "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; model "
          f"{args.model}, B={args.batch_size}, mu={args.mu}, {args.image_size}x{args.image_size}x3, "
          f"dtype {args.dtype}\n")
    print("| measurement | devices | rate | vs 1 device | detail |")
    print("| --- | ---: | ---: | ---: | --- |")
    base = {}
    for r in rows:
        first = base.setdefault(r["what"], r)
        if "step_s" in r:
            detail = f"compile {r['compile_s']} s, step {r['step_s']:.3f} s"
        else:
            a, b = np.asarray(first["scores"]), np.asarray(r["scores"])
            detail = (f"features/Jacobians {r['build_s']} s, eigvalsh {r['score_s']} s; scores vs "
                      f"1 device: max rel. diff {np.max(np.abs(b - a) / np.abs(a)):.1e}")
        print(f"| {r['what']} | {r['devices']} | {r['rate']:.1f} {r['unit']} | "
              f"{r['rate'] / first['rate']:.2f}× | {detail} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
