"""A labeling project's directory: the scanned pool, stored once, and its metadata.

    DIR/project.json     format version, images folder, the project's kind ("images",
                         "features": vectors from a file, "backbone": computed at init),
                         its input ("images" or "features"), image size or the features'
                         dimension, dtype, scale and source, class names
    DIR/options.json     round options given to earlier commands, kept for later rounds
    DIR/pool.npy         what the model reads, one row per image: (N, S, S, 3) uint8 pixels
                         resized, or (N, d) float32/float16 feature vectors (divided by
                         their RMS value, the `scale` in project.json); memory-mapped
    DIR/index.csv        id,path,sha256: path relative to the images folder and the
                         file's sha256 (empty in features projects made before init
                         recorded it, and for a file it could not read)
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
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np

from crc_jax import durable
from crc_jax.errors import DataError

FORMAT_VERSION = 2      # 2: project.json names its input; a format-1 project holds images
PROJECT_FILE = "project.json"
INIT_MARKER = ".init-incomplete"
OPTIONS_FILE = "options.json"
INPUTS = ("images", "features")
KINDS = {"images": "images", "features": "features", "backbone": "features"}   # kind: its input


class ProjectError(DataError):
    """A project directory that cannot be used as asked, and why."""


def check_class_names(names: list) -> list[str]:
    """Class names as stored: at least two, none empty, none repeated."""
    clean = [str(n).strip() for n in names]
    if any(not n for n in clean):
        raise ProjectError("class names must not be empty")
    if len(set(clean)) != len(clean):
        raise ProjectError(f"class names repeat: {', '.join(clean)}")
    if len(clean) < 2:
        raise ProjectError(f"give at least 2 classes, got {len(clean)} "
                           f"({', '.join(map(repr, clean))}): a classifier needs two")
    return clean


def kind_of(meta: dict) -> str:
    """The project's kind: the one init recorded, else (projects made before it was
    recorded) what the store holds says it: pixels are "images"; vectors read from a
    file, "features"; vectors an encoder computed (ONNX, Flax), "backbone"."""
    if "kind" in meta:
        return str(meta["kind"])
    if meta["input"] == "images":
        return "images"
    source = (meta.get("features") or {}).get("source") or {}
    return "features" if source.get("kind") == "file" else "backbone"


def fill_sha256(root: Path, paths: list, hashes: list) -> list[str]:
    """`hashes` with each empty one replaced by the sha256 of its file (relative to
    `root`; left empty when the file cannot be read)."""
    filled = list(hashes)
    for k, (rel, digest) in enumerate(zip(paths, hashes)):
        if digest:
            continue
        try:
            with open(root / rel, "rb") as f:
                filled[k] = hashlib.file_digest(f, "sha256").hexdigest()
        except OSError:
            pass   # the page says it cannot show this one
    return filled


def check_new_dir(directory: Path) -> None:
    """Refuse a directory that is already a project, or that is not empty and was not made
    by an unfinished `init` (its marker): later rounds would overwrite the files it holds."""
    if (directory / PROJECT_FILE).exists():
        raise ProjectError(f"{directory} is already a crc-jax project; open it, or choose a "
                           "new directory")
    if directory.exists() and not directory.is_dir():
        raise ProjectError(f"{directory}: exists and is not a directory; choose a new directory")
    if directory.is_dir() and not (directory / INIT_MARKER).exists():
        present = sorted(p.name for p in directory.iterdir())
        if present:
            shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            raise ProjectError(f"{directory} is not empty: it holds {shown}, which crc-jax init "
                               "did not write; choose a new or empty directory")


def prepare_dir(directory: Path) -> None:
    """Claim `directory` for `init` (check_new_dir, then its marker)."""
    check_new_dir(directory)
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
    scaled = features / np.float32(scale)
    with np.errstate(over="ignore"):   # an overflow is refused below, naming the vector
        stored = scaled.astype(dtype)
    check_stored(scaled, stored, paths, dtype)
    write_pool(directory, stored, paths, hashes)
    return scale


STORE_RTOL = 1e-2   # a vector stored with a larger relative error has lost its values
STORE_CHUNK = 65536


def check_stored(scaled: np.ndarray, stored: np.ndarray, paths: list, dtype: str) -> None:
    """Every vector must survive the cast to `dtype`: none overflows it (inf), and none loses
    its values to underflow (a vector far smaller than the others, scaled below the dtype's
    normal range, comes out zeroed or coarse). ProjectError naming the first such image."""
    over: list[int] = []
    under: list[int] = []
    for start in range(0, len(scaled), STORE_CHUNK):
        x = scaled[start:start + STORE_CHUNK].astype(np.float32)
        y = stored[start:start + STORE_CHUNK].astype(np.float32)
        finite = np.asarray(np.isfinite(y).all(axis=1))
        over.extend(start + np.flatnonzero(~finite))
        norm = np.linalg.norm(x, axis=1)
        error = np.linalg.norm(np.where(finite[:, None], y - x, 0.0), axis=1)
        under.extend(start + np.flatnonzero(finite & (error > STORE_RTOL * norm)))
    info = np.finfo(dtype)
    if over:
        row = int(over[0])
        raise ProjectError(f"--feature-dtype {dtype}: the vector of {paths[row]!r} overflows it "
                           f"({len(over)} such vectors: values over {float(info.max):g} times "
                           "the features' RMS value); use --feature-dtype float32")
    if under:
        row = int(under[0])
        size = float(np.sqrt(np.mean(np.square(scaled[row], dtype=np.float64))))
        raise ProjectError(f"--feature-dtype {dtype}: the vector of {paths[row]!r} underflows it "
                           f"({len(under)} such vectors: values about {size:.1g} of the features' "
                           f"RMS value, where {dtype} keeps full precision down to "
                           f"{float(info.tiny):.1g}); use --feature-dtype float32")


def write_meta(directory: Path, meta: dict) -> None:
    durable.write_atomic(directory / PROJECT_FILE,
                         (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())


def finish_init(directory: Path, meta: dict) -> None:
    write_meta(directory, meta)
    (directory / INIT_MARKER).unlink(missing_ok=True)


def undo_init(directory: Path, *, made_dir: bool, keep_chunks: bool = True) -> None:
    """Remove what a failed `init` wrote (its pool, index and marker; the directory too when
    init made it and it is left empty): no half-made project stays behind. A backbone's
    finished chunks (features.partial) stay, with the marker, so the same init resumes after
    an interruption; `keep_chunks=False` (an input refused: rerunning cannot succeed)
    removes them too."""
    if not keep_chunks:
        shutil.rmtree(directory / "features.partial", ignore_errors=True)
    resumable = (directory / "features.partial").exists()
    for name in ("pool.npy", "index.csv") + (() if resumable else (INIT_MARKER,)):
        (directory / name).unlink(missing_ok=True)
    if made_dir and not resumable:
        with contextlib.suppress(OSError):
            directory.rmdir()   # only when empty: nothing of anyone else's goes


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
    meta["kind"] = kind_of(meta)
    if KINDS.get(meta["kind"]) != meta["input"]:
        raise ProjectError(f"{path}: kind {meta['kind']!r} does not fit input {meta['input']!r} "
                           f"(kinds: {', '.join(f'{k} ({i})' for k, i in KINDS.items())})")
    return meta


def read_options(directory: Path) -> dict:
    """The round options kept by earlier commands ({} when none were given); ProjectError
    when options.json is not a JSON object."""
    path = directory / OPTIONS_FILE
    if not path.exists():
        return {}
    try:
        options = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ProjectError(f"{path} is not valid JSON ({err}); fix it or delete it (the "
                           "kind's defaults apply then)") from None
    if not isinstance(options, dict):
        raise ProjectError(f"{path}: holds {type(options).__name__}, not an object of "
                           "options; fix it or delete it")
    return options


def write_options(directory: Path, options: dict) -> None:
    durable.write_atomic(directory / OPTIONS_FILE,
                         (json.dumps(options, indent=2, sort_keys=True) + "\n").encode())


DAMAGED = "it was written by crc-jax init: restore it, or run init again in a new directory"


def read_index(directory: Path) -> tuple[list, list]:
    path = directory / "index.csv"
    if not path.is_file():
        raise ProjectError(f"{path}: missing; {DAMAGED}")
    try:
        rows = durable.read_csv(path)
        for expected, row in enumerate(rows):
            if int(row["id"]) != expected:
                raise ProjectError(f"{path}: row {expected + 2} holds id {row['id']}, "
                                   f"expected {expected}")
        return [r["path"] for r in rows], [r["sha256"] for r in rows]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as err:
        if isinstance(err, ProjectError):
            raise
        raise ProjectError(f"{path}: unreadable ({type(err).__name__}: {err}); {DAMAGED}") from None


def load_pool(directory: Path, count: int | None = None) -> np.ndarray:
    """The pool (memory-mapped); ProjectError when pool.npy is missing, truncated, or holds
    another number of images than index.csv (`count`)."""
    path = directory / "pool.npy"
    try:
        pool = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise ProjectError(f"{path}: missing; {DAMAGED}") from None
    except (OSError, ValueError, EOFError) as err:   # a cut file: header or data short
        raise ProjectError(f"{path}: unreadable or truncated ({err}); {DAMAGED}") from None
    images, vectors = pool.ndim == 4 and pool.shape[-1] == 3, pool.ndim == 2
    if not (images or vectors) or (count is not None and len(pool) != count):
        raise ProjectError(f"{path}: holds an array of shape {pool.shape}, but index.csv lists "
                           f"{count} images (a pool is (N, S, S, 3) pixels or (N, d) features); "
                           f"{DAMAGED}")
    return pool


@contextlib.contextmanager
def round_lock(directory: Path):
    """One round at a time per project: an advisory flock the kernel drops if we die."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(durable.file_lock(directory / ".round.lock", wait=False))
        except BlockingIOError:
            raise ProjectError(f"{directory}: another round is running; wait for it") from None
        yield
