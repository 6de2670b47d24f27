"""Scan a folder tree of images into one array: decode, convert, resize, deduplicate.

Every readable image (PNG, JPEG, WebP, BMP, TIFF, in any mode Pillow reads: grayscale,
RGBA, palette, 16-bit, CMYK) becomes an RGB uint8 array of `size`×`size`. Files with the
same bytes (sha256) are exact duplicates: the first one (in sorted path order) is kept,
the others are reported. A file that cannot be decoded is listed with the reason and
skipped: the scan never stops on one bad file. So is a file whose name is not valid
UTF-8 (index.csv, the page and the exports store names as text).

Pillow does the decoding: it reads every format above and converts between modes, so no
decoder is written here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclasses.dataclass
class ScanResult:
    """paths (relative, POSIX), hashes and images (N, size, size, 3) uint8 of kept files;
    duplicates: (path, path of the kept copy); skipped: (path, reason)."""

    paths: list
    hashes: list
    images: np.ndarray
    duplicates: list
    skipped: list


def list_images(root: Path) -> list[str]:
    """Relative POSIX paths of files with an image extension under `root`, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.lower().endswith(EXTENSIONS) and not name.startswith("."):
                found.append((Path(folder) / name).relative_to(root).as_posix())
    return sorted(found)


def to_rgb(img: Image.Image) -> Image.Image:
    """RGB from any mode: 16-bit scaled to 8-bit, alpha composited on white, CMYK/palette converted."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_image(path: Path, size: int) -> np.ndarray:
    """One file as a (size, size, 3) uint8 array; raises ValueError/OSError when unreadable."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size, size))  # decode at reduced scale: much faster for big JPEGs
        img.load()
        rgb = to_rgb(img)
    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(rgb, dtype=np.uint8)


NOT_UTF8 = "its file name is not valid UTF-8; rename the file to include it"


def printable(rel: str) -> str:
    """A path as text that can be printed and stored: bytes that are not UTF-8 (kept by
    the file system as surrogates) shown as \\xNN escapes."""
    return os.fsencode(rel).decode("utf-8", "backslashreplace")


def describe_error(err: Exception) -> str:
    if isinstance(err, UnidentifiedImageError):
        return "not an image Pillow can identify"
    text = str(err) or type(err).__name__
    return text.split("\n")[0][:200]


def scan(root: os.PathLike, size: int, *, progress: bool = True) -> ScanResult:
    """Decode every image under `root` at `size`×`size`; see the module docstring."""
    from tqdm.auto import tqdm

    root = Path(root)
    paths, hashes, images, duplicates, skipped = [], [], [], [], []
    first_of: dict[str, str] = {}
    # disable=None: no bar when stderr is not a terminal (logs, pipes)
    for rel in tqdm(list_images(root), desc="scan", disable=None if progress else True, leave=False):
        path = root / rel
        if printable(rel) != rel:   # index.csv, the page and exports need a text name
            skipped.append((printable(rel), NOT_UTF8))
            continue
        try:
            data = path.read_bytes()
            if not data:
                raise ValueError("empty file (0 bytes)")
            digest = hashlib.sha256(data).hexdigest()
            if digest in first_of:
                duplicates.append((rel, first_of[digest]))
                continue
            array = load_image(path, size)
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
            skipped.append((rel, describe_error(err)))
            continue
        first_of[digest] = rel
        paths.append(rel)
        hashes.append(digest)
        images.append(array)
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return ScanResult(paths=paths, hashes=hashes, images=stacked, duplicates=duplicates,
                      skipped=skipped)
