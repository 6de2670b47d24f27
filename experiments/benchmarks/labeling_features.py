"""Labeling on pretrained features at scale: `init --features`, a `next` round, `--backbone`.

Not timed: a folder of N image files (default 50,000 small PNGs, 64×64, of 10 texture
classes) and a features file for it: 512-d float32 vectors with class structure (a random
class centre plus noise, at a CLIP-like scale), saved with np.savez as a CLIP/DINOv2
script would. Then, each in a fresh `crc-jax` process (Python and JAX start-up included),
its wall time and peak resident memory (the child's ru_maxrss):

  init --features    `crc-jax init P --images F --features feats.npz`
  cold start         `crc-jax next P --budget B --ssl mean_teacher --model linear`: CRC on
                     the untrained linear head over the whole pool (no training)
  next               after the cold-start batch is labeled: the same command again, which
                     trains the head (Mean Teacher, default length) on the labels plus the
                     unlabeled pool, predicts every image, scores CRC over the pool and
                     writes the queue
  --backbone         `crc-jax init` of the first 1,000 files through an ONNX model:
                     crc_jax's small CNN (width 32, 512 features), randomly initialized and
                     exported by experiments/onnx_export.py, at 64×64 input; images/s over
                     the whole command (file hashing and decoding included)

Goals: init < 60 s, next < 2 min, peak memory < 4 GB, on a 2-core CPU.

Command:  python -m experiments.benchmarks.labeling_features [--images 50000] [--dim 512]
          (`--images 2000 --backbone-images 200`: the same steps in about a minute)
Expect:   7 minutes measured on a 2-core CPU at load average 13-15, 1.5 of them in the timed steps.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.benchmarks import start_in_child

ROOT = Path(__file__).resolve().parents[2]
CLASSES = 10


def write_folder(root: Path, n: int, seed: int = 0) -> list:
    """n 64×64 PNG files in 100 sub-folders, a texture per class; returns the class of each."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    yy, xx = np.mgrid[0:64, 0:64]
    for k in range(n):
        c = int(labels[k])
        stripes = np.sin((xx * np.cos(c) + yy * np.sin(c)) * (0.2 + 0.05 * c) + rng.random() * 6)
        gray = (127 + 100 * stripes + rng.normal(0, 20, (64, 64))).clip(0, 255).astype(np.uint8)
        rel = root / f"part_{k % 100:02d}" / f"img_{k:06d}.png"
        rel.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gray, "L").save(rel, compress_level=1)
    return labels.tolist()


def write_features(path: Path, root: Path, labels: list, dim: int, seed: int = 0) -> None:
    from crc_jax.project.scan import list_images

    paths = list_images(root)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (CLASSES, dim)).astype(np.float32)
    index = {f"part_{k % 100:02d}/img_{k:06d}.png": labels[k] for k in range(len(labels))}
    y = np.array([index[p] for p in paths])
    vectors = 0.3 * (centres[y] + 1.5 * rng.normal(0, 1, (len(paths), dim)).astype(np.float32))
    np.savez(path, paths=np.array(paths, dtype=str), features=vectors.astype(np.float32))


def crc_jax(*args) -> tuple[float, float]:
    """Run `crc-jax ARGS` in a fresh process: (wall seconds, peak resident GiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "crc_jax.project.cli", *map(str, args)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if status != 0:
        raise SystemExit(f"crc-jax {' '.join(map(str, args))} failed:\n{err[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20   # ru_maxrss is in KiB on Linux


def label_queue(project_dir: Path, labels: list) -> None:
    from crc_jax.project import Project

    project = Project.open(project_dir)
    k_of = {p: int(p.split("_")[-1].split(".")[0]) for p in project.paths}
    project.add_labels({i: str(labels[k_of[project.paths[i]]]) for i in project.pending()})


def export_backbone(path: Path, dim: int, side: int) -> None:
    import jax
    import jax.numpy as jnp

    from crc_jax import models
    from experiments.onnx_export import export_cnn

    module = models.get("cnn", num_classes=CLASSES, width=32, dense_width=dim)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, side, side, 3)))
    export_cnn(module, variables, path, side=side)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--backbone-images", type=int, default=1000)
    parser.add_argument("--side", type=int, default=64, help="the ONNX backbone's input side")
    args = parser.parse_args(argv)
    start_in_child()   # JAX that cannot start: one line, before any crc-jax child
    classes = ",".join(str(c) for c in range(CLASSES))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        labels = write_folder(tmp / "images", args.images)
        write_features(tmp / "feats.npz", tmp / "images", labels, args.dim)
        setup_s = time.perf_counter() - start
        load_start = os.getloadavg()
        init = crc_jax("init", tmp / "p", "--images", tmp / "images", "--features",
                       tmp / "feats.npz", "--classes", classes)
        round_args = ("--budget", args.budget, "--ssl", "mean_teacher", "--model", "linear")
        cold = crc_jax("next", tmp / "p", *round_args)
        label_queue(tmp / "p", labels)
        trained = crc_jax("next", tmp / "p", *round_args)
        predicted = crc_jax("predict", tmp / "p", "--out", tmp / "pred.csv")
        rows = (tmp / "pred.csv").read_text().splitlines()[1:]
        k_of = [int(r.split(",")[1].split("_")[-1].split(".")[0]) for r in rows]
        accuracy = np.mean([r.split(",")[2] == str(labels[k]) for r, k in zip(rows, k_of)])

        small = tmp / "small"
        n_backbone = min(args.backbone_images, args.images)
        for k in range(n_backbone):
            rel = Path(f"part_{k % 100:02d}") / f"img_{k:06d}.png"
            (small / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(tmp / "images" / rel, small / rel)
        export_backbone(tmp / "cnn.onnx", args.dim, args.side)
        backbone = crc_jax("init", tmp / "q", "--images", small, "--backbone", tmp / "cnn.onnx")
        load_end = os.getloadavg()

    gib = max(init[1], cold[1], trained[1], backbone[1])
    print(f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end (2-core CPU "
          f"shared with other jobs); {args.images} images, {args.dim}-d features; folder and "
          f"features written in {setup_s:.0f} s (not timed)")
    print(f"pool accuracy after the round trained on {args.budget} labels: {accuracy:.3f}")
    print("| step | wall | peak memory | goal |")
    print("| --- | ---: | ---: | --- |")
    print(f"| `init --features` ({args.images} images) | {init[0]:.1f} s | {init[1]:.2f} GiB | "
          f"< 60 s: {'met' if init[0] < 60 else 'NOT met'} |")
    print(f"| `next`, cold start (CRC on the untrained head) | {cold[0]:.1f} s | {cold[1]:.2f} GiB | |")
    print(f"| `next` (train the head, CRC over the pool, write the queue) | {trained[0]:.1f} s | "
          f"{trained[1]:.2f} GiB | < 120 s: {'met' if trained[0] < 120 else 'NOT met'} |")
    print(f"| `predict` ({args.images} rows) | {predicted[0]:.1f} s | {predicted[1]:.2f} GiB | |")
    print(f"| `init --backbone` ({n_backbone} images, ONNX CNN at {args.side}×{args.side}) | "
          f"{backbone[0]:.1f} s = {n_backbone / backbone[0]:.0f} images/s | "
          f"{backbone[1]:.2f} GiB | |")
    print(f"peak memory over all commands: {gib:.2f} GiB (< 4 GB: {'met' if gib < 3.725 else 'NOT met'})")


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
