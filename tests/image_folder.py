"""A folder of real image files made from scikit-learn's digits, for the project tests.

Each digit is written as a file in one of several formats, sizes and modes (PNG, JPEG,
WebP, BMP, TIFF; grayscale, RGB, RGBA, palette, 16-bit, CMYK), plus a few broken files
and an exact duplicate. `truth` maps each written path to its digit: the simulated
annotator.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

VARIANTS = [  # (extension, Pillow mode, side in pixels)
    ("png", "L", 8), ("jpg", "RGB", 24), ("png", "RGBA", 16), ("png", "P", 12),
    ("tif", "I;16", 8), ("jpg", "CMYK", 20), ("webp", "RGB", 16), ("bmp", "RGB", 10),
]
BROKEN = ["broken/empty.png", "broken/truncated.png", "broken/not_an_image.jpg"]


def digit_image(pixels: np.ndarray, mode: str, side: int) -> Image.Image:
    gray = Image.fromarray((pixels * (255.0 / 16.0)).astype(np.uint8), "L")
    gray = gray.resize((side, side), Image.Resampling.NEAREST)
    if mode == "L":
        return gray
    if mode == "I;16":
        return Image.fromarray((np.asarray(gray, np.uint16) * 257).astype("<u2")).convert("I;16")
    if mode == "RGBA":
        rgba = gray.convert("RGBA")
        rgba.putalpha(255)
        return rgba
    return gray.convert(mode)


def write_digits(root: Path, n: int, *, seed: int = 0, broken: bool = True) -> dict:
    """Write `n` digits under `root`; returns {relative path: digit} of the good images."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[:n]
    truth = {}
    for k, i in enumerate(order):
        ext, mode, side = VARIANTS[k % len(VARIANTS)]
        rel = f"batch_{k % 3}/digit_{k:04d}.{ext}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img = digit_image(digits.images[i], mode, side)
        img.save(root / rel, **({"quality": 95} if ext in ("jpg", "webp") else {}))
        truth[rel] = int(digits.target[i])
    if broken:
        (root / "broken").mkdir(parents=True, exist_ok=True)
        (root / BROKEN[0]).write_bytes(b"")
        good = (root / next(p for p in truth if p.endswith(".png"))).read_bytes()
        (root / BROKEN[1]).write_bytes(good[:len(good) // 2])
        (root / BROKEN[2]).write_text("this is not a JPEG\n")
        first = next(iter(truth))
        dup = root / "duplicates" / Path(first).name
        dup.parent.mkdir(exist_ok=True)
        shutil.copy(root / first, dup)
    return truth
