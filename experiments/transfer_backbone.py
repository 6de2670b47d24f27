"""Transfer, measured without downloads: a backbone pretrained on half of the digits labels the other half.

Data. scikit-learn's digits (1,797 images, 8×8) rendered at 64×64 RGB: each digit upscaled
to 28-44 px, at a random position on a textured background (stripes of random frequency
and angle, blotches, pixel noise, a random tint), in ink about 110 levels darker or
lighter than the background's mean, so that raw pixels carry the digit weakly (random
shifts, and a texture of the same contrast as the strokes). A seeded permutation splits
the digits in two halves, A and B.

Backbone. crc_jax's small CNN (width 32, 64 features, BatchNorm) behind a 4×4 average
pooling of the 64×64 input (its 3×3 convolutions then span the digit), trained supervised
on A (six renderings of each digit; 10% held out to stop early; an EMA of the weights)
with crc_jax.train.fit, exported to ONNX by experiments/onnx_export.py (checked here
against the Flax model), and used as the "pretrained" `--backbone`. The CNN's own
classifier on B is reported as a reference: this backbone was trained on the same ten
classes, so the study measures the favourable case of a backbone that fits the task.

Labeling. B is written as 64×64 PNG files. For each path × strategy × seed, a project
goes through rounds of 10 with a simulated annotator labeling each queue:
  backbone  `init --backbone cnn.onnx`; rounds: Mean Teacher, a linear head
  pixels    `init` at 32×32 (the default); rounds: the default settings (MLP of width
            256, FixMatch) without flips
  strategies `crc` (cold start: CRC on the untrained model) and `random` (cold start random)
The accuracy reported is that of the model trained on 30 and on 60 labels, over the
images of B not labeled yet.

Command: python -m experiments.transfer_backbone [--seeds 3] [--out docs/results/transfer_backbone.md]
Expect:  14 minutes measured on a 2-core CPU at load average 1-10 (3 seeds; the pixel
         path's FixMatch rounds and the pretraining dominate).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from experiments.onnx_export import pool_input
from experiments.published import BACKBONE_CHECKPOINTS as CHECKPOINTS

SIDE = 64
RENDERS = 6          # renderings of each digit of A (backgrounds, sizes, positions)
POOL = 4             # the backbone averages 4×4 first: its convolutions then see the digit whole
BUDGET = 10


def background(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """A 64×64×3 float texture (two stripe patterns, blotches, pixel noise, a tint) and
    its mean brightness."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    base = rng.uniform(60, 190)
    gray = np.full((SIDE, SIDE), base, np.float32)
    for _ in range(2):
        angle, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.15, 0.9), rng.uniform(0, 6.3)
        gray += np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq + phase) * rng.uniform(15, 40)
    for _ in range(int(rng.integers(2, 6))):
        cy, cx, r = rng.uniform(0, SIDE, 2).tolist() + [rng.uniform(4, 14)]
        gray += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) * rng.uniform(-50, 50)
    tint = rng.uniform(0.7, 1.3, 3)
    return gray[..., None] * tint + rng.normal(0, 10, (SIDE, SIDE, 3)), float(base)


def render(digit_8x8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One digit (values 0..16) at a random size and position on a textured background,
    darker or lighter than it by about 110 levels, (64, 64, 3) uint8."""
    img, base = background(rng)
    size = int(rng.integers(28, 45))
    glyph = Image.fromarray((digit_8x8 * (255 / 16)).astype(np.uint8), "L")
    alpha = np.asarray(glyph.resize((size, size), Image.Resampling.BILINEAR), np.float32) / 255
    oy, ox = rng.integers(0, SIDE - size + 1, 2)
    ink = base + (110 if base < 125 else -110) + rng.uniform(-20, 20, 3)
    region = img[oy:oy + size, ox:ox + size]
    img[oy:oy + size, ox:ox + size] = region * (1 - alpha[..., None]) + ink * alpha[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def split_digits(seed: int = 0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    half = len(order) // 2
    return digits, order[:half], order[half:]


def pretrain(digits, a_idx, *, seed: int = 0):
    """The CNN trained on A: (module, evaluation variables, held-out accuracy on A)."""
    import jax

    from crc_jax import config as config_defaults
    from crc_jax import models, ssl
    from crc_jax.train import fit

    rng = np.random.default_rng(seed + 1)
    x = np.stack([render(digits.images[i], rng) for i in a_idx for _ in range(RENDERS)])
    y = np.repeat(digits.target[a_idx], RENDERS).astype(np.int32)
    x = pool_input(x.astype(np.float32) / 255.0, POOL)
    held = np.zeros(len(x), bool)
    held[np.random.default_rng(seed + 2).permutation(len(a_idx))[:len(a_idx) // 10] * RENDERS] = True
    held = np.repeat(held.reshape(-1, RENDERS).any(axis=1), RENDERS)  # a digit's renderings together
    c = config_defaults.defaults()
    c.ssl.name = "supervised"
    t = c.train
    t.batch_size, t.steps_per_epoch, t.max_epochs, t.patience = 64, 40, 120, 15
    t.lr, t.augment, t.eval_batch_size, t.ema_decay = 2e-3, True, 256, 0.99
    module = models.get("cnn", num_classes=10, width=32, dense_width=64)
    algorithm = ssl.create(c, module, num_train_steps=t.max_epochs * t.steps_per_epoch, flip=False)
    result = fit(algorithm, x_labeled=x[~held], y_labeled=y[~held], x_unlabeled=None,
                 watch=(x[held], y[held]), test=(x[held], y[held]), train_config=t,
                 key=jax.random.PRNGKey(seed), desc="pretrain on A",
                 eval_apply=models.apply_functions(module).logits)
    return module, result.variables, float(result.test_accuracy)


def export_and_check(module, variables, path: Path, images: np.ndarray) -> float:
    """Export to ONNX; the largest difference from the Flax features on `images`."""
    import onnxruntime as ort

    from crc_jax import models
    from experiments.onnx_export import export_cnn

    export_cnn(module, variables, path, side=SIDE, input_pool=POOL)
    x = images.astype(np.float32) / 255.0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.transpose(0, 3, 1, 2)})[0]
    want = np.asarray(models.apply_functions(module).features(variables, pool_input(x, POOL)))
    return float(np.abs(got - want).max() / (np.abs(want).max() + 1e-12))


def write_b(root: Path, digits, b_idx, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed + 3)
    truth = {}
    for k, i in enumerate(b_idx):
        rel = f"{k % 10}/b_{k:04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render(digits.images[i], rng)).save(root / rel)
        truth[rel] = str(int(digits.target[i]))
    return truth


def run_arm(workdir: Path, images: Path, truth: dict, *, path: str, strategy: str, seed: int,
            onnx: Path) -> dict:
    """One project through rounds of BUDGET: {labels: accuracy on the unlabeled rest}."""
    from crc_jax.project import Project, RoundSettings, features

    classes = [str(d) for d in range(10)]
    name = workdir / f"{path}_{strategy}_{seed}"
    if path == "backbone":
        project, _ = Project.create(name, images, classes=classes, progress=False,
                                    features=features.backbone(onnx))
        settings = RoundSettings(ssl="mean_teacher", model="linear", strategy=strategy,
                                 cold_start=strategy, seed=seed)
    else:
        project, _ = Project.create(name, images, classes=classes, progress=False)
        settings = RoundSettings(flip=False, strategy=strategy, cold_start=strategy, seed=seed)
    out = {}
    while True:
        ids = project.next_batch(BUDGET, settings)
        n = len(project.labels())
        if n in CHECKPOINTS:
            labeled = project.labels()
            rows = [r for r in project.predict() if r["id"] not in labeled]
            out[n] = float(np.mean([r["predicted"] == truth[r["path"]] for r in rows]))
        if n >= max(CHECKPOINTS):
            return out
        project.add_labels({i: truth[project.paths[i]] for i in ids})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("docs/results/transfer_backbone.md"))
    args = parser.parse_args(argv)
    for noisy in ("jax", "absl", "crc_jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started, load_start = time.time(), os.getloadavg()
    digits, a_idx, b_idx = split_digits()
    module, variables, a_acc = pretrain(digits, a_idx)
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = write_b(tmp / "B", digits, b_idx)
        b_images = np.stack([np.asarray(Image.open(tmp / "B" / p).convert("RGB")) for p in truth])
        export_error = export_and_check(module, variables, tmp / "cnn.onnx", b_images[:64])
        from crc_jax import models

        logits = models.apply_functions(module).logits(
            variables, pool_input(b_images.astype(np.float32) / 255, POOL))
        b_labels = np.array([int(v) for v in truth.values()])
        own_acc = float(np.mean(np.argmax(np.asarray(logits), 1) == b_labels))
        print(f"pretrained CNN: held-out accuracy on A {a_acc:.3f}, its own classifier on B "
              f"{own_acc:.3f}; ONNX export vs Flax: max relative difference {export_error:.1e}",
              flush=True)
        for seed in range(args.seeds):
            for path in ("backbone", "pixels"):
                for strategy in ("crc", "random"):
                    t0 = time.time()
                    acc = run_arm(tmp / "projects", tmp / "B", truth, path=path,
                                  strategy=strategy, seed=seed, onnx=tmp / "cnn.onnx")
                    results.setdefault((path, strategy), []).append(acc)
                    print(f"seed {seed} {path:8s} {strategy:6s} " + "  ".join(
                        f"{n} labels: {acc[n]:.3f}" for n in CHECKPOINTS)
                          + f"  ({time.time() - t0:.0f} s)", flush=True)
    minutes = (time.time() - started) / 60
    load_end = os.getloadavg()
    raw = {"pretrain_accuracy_a": a_acc, "backbone_own_accuracy_b": own_acc,
           "export_max_rel_diff": export_error, "minutes": minutes,
           "runs": {f"{p}/{s}": [{str(n): v for n, v in run.items()} for run in runs]
                    for (p, s), runs in results.items()}}
    from experiments import markers, published

    lines = [
        "# Transfer through `--backbone` (`python -m experiments.transfer_backbone`)", "",
        f"Measured {time.strftime('%Y-%m-%d')}: {minutes:.0f} min wall on a 2-core CPU shared "
        f"with other jobs (load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end); "
        f"{args.seeds} seeds.", "",
        f"Backbone: crc_jax's CNN trained on half A of the digits rendered at 64×64 on textured "
        f"backgrounds (held-out accuracy on A {100 * a_acc:.1f}%); its own classifier on half B: "
        f"**{100 * own_acc:.1f}%** (a reference: the backbone was trained on these ten classes). "
        f"ONNX export vs Flax features: max relative difference {export_error:.1e}.", "",
        f"Accuracy (%) on the unlabeled images of half B ({len(b_idx)} PNG files), of the model "
        "trained on 30 and on 60 labels; mean ± SD over the n seeds (SD: sample standard "
        "deviation, n − 1), then each seed's value (per seed: transfer_backbone.json):", "",
        markers.marked("backbone", published.backbone(raw, "results"))]
    lines += ["", "Rounds of 10 labels from a cold start (CRC on the untrained model, or "
              "random), a simulated annotator, the project's default round length (8 epochs "
              "of 25 steps)."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
