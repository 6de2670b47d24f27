"""A labeling project's directory: the scanned pool, stored once, and its metadata.

    DIR/project.json     format version, images folder, input ("images" or "features"),
                         image size or the features' dimension, dtype, scale and source,
                         class names
    DIR/pool.npy         what the model reads, one row per image: (N, S, S, 3) uint8 pixels
                         resized, or (N, d) float32/float16 feature vectors (divided by
                         their RMS value, the `scale` in project.json); memory-mapped
    DIR/index.csv        id,path,sha256: path relative to the images folder (sha256 empty
                         when init did not read the files: --features)
    DIR/features.partial/  feature chunks of an unfinished `init --backbone` (resumed)
    DIR/labels.jsonl     the labels log (crc_jax.project.labels_log)
    DIR/rounds.jsonl     one checksummed line per completed round (crc_jax.durable)
    DIR/queue.csv        the images to label next
    DIR/models/          the model of each round (flax msgpack)

Files are written to a temporary name, fsynced and renamed, so a crash leaves either the
old file or the new one. project.json is written last by `init`: a directory without it
is not a project yet.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from crc_jax import durable
from crc_jax.errors import DataError

FORMAT_VERSION = 2      # 2: project.json names its input; a format-1 project holds images
PROJECT_FILE = "project.json"
INIT_MARKER = ".init-incomplete"
OWNED = ("pool.npy", "index.csv", "labels.jsonl", "rounds.jsonl", "queue.csv",
         "features.partial")
INPUTS = ("images", "features")


class ProjectError(DataError):
    """A project directory that cannot be used as asked, and why."""


def check_class_names(names: list) -> list[str]:
    clean = [str(n).strip() for n in names]
    if any(not n for n in clean):
        raise ProjectError("class names must not be empty")
    if len(set(clean)) != len(clean):
        raise ProjectError(f"class names repeat: {', '.join(clean)}")
    return clean


def prepare_dir(directory: Path) -> None:
    """Refuse a directory that is already a project or holds files `init` did not write."""
    if (directory / PROJECT_FILE).exists():
        raise ProjectError(f"{directory} is already a crc-jax project; open it, or choose a "
                           "new directory")
    if directory.exists() and not (directory / INIT_MARKER).exists():
        present = [name for name in OWNED + ("models",) if (directory / name).exists()]
        if present:
            raise ProjectError(f"{directory} already holds {', '.join(present)}, which crc-jax "
                               "init did not write; choose a new directory")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / INIT_MARKER).touch()


def write_pool(directory: Path, images: np.ndarray, paths: list, hashes: list) -> None:
    buffer = io.BytesIO()
    np.save(buffer, images, allow_pickle=False)
    durable.write_atomic(directory / "pool.npy", buffer.getvalue())
    durable.write_csv(directory / "index.csv", ["id", "path", "sha256"],
                      [[i, p, h] for i, (p, h) in enumerate(zip(paths, hashes))])


def write_features(directory: Path, features: np.ndarray, paths: list, hashes: list, *,
                   dtype: str) -> float:
    """Store (N, d) feature vectors as pool.npy in `dtype`, divided by their RMS value so
    that every backbone's features reach the head at one scale (noise, learning rate and
    float16 range mean the same for all); distances and directions are unchanged. Returns
    the scale."""
    rms = float(np.sqrt(np.mean(np.square(features, dtype=np.float64))))
    scale = rms if rms > 0 else 1.0
    stored = (features / np.float32(scale)).astype(dtype)
    if not np.isfinite(stored).all():
        raise ProjectError(f"--feature-dtype {dtype}: the scaled features overflow it; use float32")
    write_pool(directory, stored, paths, hashes)
    return scale


def write_meta(directory: Path, meta: dict) -> None:
    durable.write_atomic(directory / PROJECT_FILE,
                         (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())


def finish_init(directory: Path, meta: dict) -> None:
    write_meta(directory, meta)
    (directory / INIT_MARKER).unlink(missing_ok=True)


def read_meta(directory: Path) -> dict:
    path = directory / PROJECT_FILE
    if not path.exists():
        if (directory / INIT_MARKER).exists():
            raise ProjectError(f"{directory}: crc-jax init did not finish; run it again")
        raise ProjectError(f"{directory} is not a crc-jax project (no {PROJECT_FILE}); "
                           "create one with: crc-jax init DIR --images PATH")
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ProjectError(f"{path} is not valid JSON ({err})") from None
    version = meta.get("format") if isinstance(meta, dict) else None
    if not isinstance(version, int):
        raise ProjectError(f"{path} has no format version: not written by crc-jax")
    if version > FORMAT_VERSION:
        raise ProjectError(f"{directory} was made by a newer crc-jax (project format {version}; "
                           f"this one reads {FORMAT_VERSION}); upgrade crc_jax")
    if version < 1:
        raise ProjectError(f"{directory} was made by an older crc-jax (project format {version}; "
                           f"this one reads 1 to {FORMAT_VERSION}); run init again in a new directory")
    if version == 1:   # format 1 projects hold images and do not say so
        meta["input"] = "images"
    if meta.get("input") not in INPUTS:
        raise ProjectError(f"{path}: input {meta.get('input')!r} is not one of {', '.join(INPUTS)}")
    return meta


def read_index(directory: Path) -> tuple[list, list]:
    rows = durable.read_csv(directory / "index.csv")
    for expected, row in enumerate(rows):
        if int(row["id"]) != expected:
            raise ProjectError(f"{directory / 'index.csv'}: row {expected + 2} holds id "
                               f"{row['id']}, expected {expected}")
    return [r["path"] for r in rows], [r["sha256"] for r in rows]


def load_pool(directory: Path) -> np.ndarray:
    return np.load(directory / "pool.npy", mmap_mode="r", allow_pickle=False)


@contextlib.contextmanager
def round_lock(directory: Path):
    """One round at a time per project: an advisory flock the kernel drops if we die."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(durable.file_lock(directory / ".round.lock", wait=False))
        except BlockingIOError:
            raise ProjectError(f"{directory}: another round is running; wait for it") from None
        yield
