"""Speed of the practitioner's loop: `crc-jax init`, `crc-jax next`, and a label click.

A 1,000-image folder is written from scikit-learn's digits (JPEG and PNG, 96 to 160 px,
RGB and grayscale) - not timed. Then, each as the user runs it (a fresh `crc-jax`
process, Python and JAX start-up included):

  init       `crc-jax init` of the folder at 32×32; baseline: opening and decoding every
             file with Pillow alone in this process (the floor any scan pays)
  next       `crc-jax next --budget 20` with default settings, on a project whose first
             20 images (the cold-start batch) are labeled; baseline: the cold-start
             round itself (no training), in the same run
  click      the labeling page in headless chromium: click a class button, until the
             answer is saved (fsynced) and the next image shown (the page's own
             performance.now() clock); baseline: a GET /api/state round trip from the page

Goals: init < 30 s, next < 5 min on a 2-core CPU, click < 100 ms.

Then the choice of `crc-jax`'s default model (`--model_rounds`): one training round per
model in this process, on the same project (1,000 images at 32×32), 40 random labels
(the same for every model), FixMatch with the default round settings (8 epochs of 25
steps) otherwise: wall time of the fit and the pool accuracy of the trained model.

Command:  python -m experiments.benchmarks.labeling [--images 1000] [--screenshot docs/images/label_page.png]
          python -m experiments.benchmarks.labeling --model_rounds mlp:256,cnn:16,cnn:32
Expect:   a few minutes on a 2-core CPU; figures go into experiments/benchmarks/RESULTS.md
          ("Labeling your own images").
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image
from experiments.benchmarks import start_in_child

ROOT = Path(__file__).resolve().parents[2]


def write_folder(root: Path, n: int) -> dict:
    """n digit images (upscaled, JPEG/PNG, RGB/gray, 96-160 px); {relative path: digit}."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    truth = {}
    for k in range(n):
        i = k % len(digits.target)
        side = int(rng.integers(96, 161))
        gray = Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8), "L")
        img = gray.resize((side, side), Image.Resampling.BICUBIC)
        if k % 2:
            img = img.convert("RGB")
        ext = "jpg" if k % 3 else "png"
        rel = f"class_folder_{k % 7}/img_{k:05d}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(root / rel, **({"quality": 90} if ext == "jpg" else {}))
        truth[rel] = int(digits.target[i])
    return truth


def crc_jax(*args) -> float:
    """Run `crc-jax ARGS` in a fresh process; its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "crc_jax.project.cli", *map(str, args)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def decode_floor(root: Path) -> float:
    from crc_jax.project.scan import list_images

    start = time.perf_counter()
    for rel in list_images(root):
        with Image.open(root / rel) as img:
            img.load()
    return time.perf_counter() - start


def label_queue(project_dir: Path, truth: dict) -> None:
    from crc_jax.project import Project

    project = Project.open(project_dir)
    project.add_labels({i: str(truth[project.paths[i]]) for i in project.pending()})


def time_clicks(project_dir: Path, truth: dict, clicks: int, screenshot: str | None) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from crc_jax.project import Project
    from crc_jax.project.server import make_server

    project = Project.open(project_dir)
    server = make_server(project, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1000,760"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{server.port}/")
        time.sleep(1.0)
        if screenshot:
            driver.save_screenshot(screenshot)
        click_ms, state_ms = [], []
        for _ in range(clicks):
            image = driver.execute_script("return document.getElementById('image').dataset.id")
            label = str(truth[project.paths[int(image)]])
            driver.execute_script("window.lastAnswerMs = null")
            driver.find_element("css selector", f"button.cls[data-label='{label}']").click()
            deadline = time.time() + 10
            while time.time() < deadline:
                ms = driver.execute_script("return window.lastAnswerMs")
                if ms is not None:
                    click_ms.append(float(ms))
                    break
                time.sleep(0.005)
            state_ms.append(driver.execute_async_script(
                "const done = arguments[0]; const t = performance.now();"
                "fetch('/api/state').then(r => r.json()).then(() => done(performance.now() - t));"))
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
    return {"click_ms": click_ms, "state_ms": state_ms}


def time_model_rounds(project_dir: Path, truth: dict, specs: str, labels: int = 40) -> list:
    """[(model, width, seconds, pool accuracy)] of one FixMatch round per "model:width"."""
    import dataclasses

    import jax

    from crc_jax.project import Project, RoundSettings
    from crc_jax.project.rounds import Trainer, images_as_float

    project = Project.open(project_dir)
    x = images_as_float(project.pool())
    y = np.array([int(truth[p]) for p in project.paths])
    labeled = np.sort(np.random.default_rng(0).choice(len(x), labels, replace=False))
    unlabeled = np.setdiff1d(np.arange(len(x)), labeled)
    out = []
    for spec in specs.split(","):
        name, _, width = spec.partition(":")
        settings = dataclasses.replace(RoundSettings(), model=name, width=int(width or 0) or
                                       RoundSettings().width)
        start = time.perf_counter()
        trainer = Trainer(settings, 10, "fixmatch")
        variables = trainer.fit(x, labeled, y[labeled], unlabeled, jax.random.PRNGKey(0))
        accuracy = float(np.mean(trainer.probs(variables, x).argmax(-1) == y))
        out.append((name, settings.width, time.perf_counter() - start, accuracy))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--clicks", type=int, default=15)
    parser.add_argument("--screenshot", help="save a screenshot of the page here")
    parser.add_argument("--model_rounds", default="mlp:256,cnn:16",
                        help="MODEL:WIDTH,... one FixMatch round each on 40 random labels "
                             "('none': skip)")
    args = parser.parse_args(argv)
    start_in_child()   # JAX that cannot start: one line, before any crc-jax child
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = write_folder(tmp / "images", args.images)
        floor = decode_floor(tmp / "images")
        init_s = crc_jax("init", tmp / "proj", "--images", tmp / "images",
                         "--classes", ",".join(map(str, range(10))))
        cold_s = crc_jax("next", tmp / "proj", "--budget", 20)
        label_queue(tmp / "proj", truth)
        next_s = crc_jax("next", tmp / "proj", "--budget", 20)
        crc_jax("predict", tmp / "proj", "--out", tmp / "predictions.csv")
        with open(tmp / "predictions.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        accuracy = np.mean([r["predicted"] == str(truth[r["path"]]) for r in rows])
        clicks = time_clicks(tmp / "proj", truth, args.clicks, args.screenshot)
        rounds = ([] if args.model_rounds == "none" else
                  time_model_rounds(tmp / "proj", truth, args.model_rounds))
    load_end = os.getloadavg()

    click = sorted(clicks["click_ms"])
    p90 = click[int(0.9 * (len(click) - 1))]
    print(f"load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end "
          f"({os.cpu_count()} CPUs); {args.images} images; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"pool accuracy of the model `next` trained on the 20 cold-start labels: {accuracy:.3f}")
    print("| step | time | baseline (same run) | ratio | goal |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| crc-jax init | {init_s:.1f} s | Pillow decode alone {floor:.1f} s | "
          f"{init_s / floor:.1f}× | < 30 s: {'met' if init_s < 30 else 'NOT met'} |")
    print(f"| crc-jax next (defaults, 20 labels) | {next_s:.1f} s | cold-start round {cold_s:.1f} s | "
          f"{next_s / cold_s:.1f}× | < 300 s: {'met' if next_s < 300 else 'NOT met'} |")
    print(f"| label click (median of {len(click)}; p90 {p90:.0f} ms, max {click[-1]:.0f} ms) | "
          f"{statistics.median(click):.0f} ms | "
          f"GET /api/state {statistics.median(clicks['state_ms']):.0f} ms | "
          f"{statistics.median(click) / statistics.median(clicks['state_ms']):.1f}× | "
          f"< 100 ms: {'met' if statistics.median(click) < 100 else 'NOT met'} |")

    if rounds:
        print("\nOne FixMatch round per model (40 random labels, 8×25 steps, 1,000 images at "
              "32×32, in one process; the time includes building and compiling the model):")
        print("| model | fit + predict | pool accuracy |\n| --- | ---: | ---: |")
        for name, width, seconds, accuracy in rounds:
            print(f"| {name} width {width} | {seconds:.1f} s | {100 * accuracy:.1f} % |")
    print(f"load average at the very end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    from experiments.benchmarks import command

    command(main)
