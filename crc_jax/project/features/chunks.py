"""Features of a folder computed by a backbone in chunks, so a killed `init` resumes.

The folder is listed and every file hashed first (exact duplicates kept out, empty or
unreadable files and names that are not valid UTF-8 skipped, as crc_jax.project.scan
does); the remaining images are cut into chunks of `chunk_images`. Each chunk is decoded
at the encoder's input size (a few threads), encoded in batches of `batch_size`, and
written whole to DIR/features.partial/chunk_NNNNNN.npz through
crc_jax.durable.write_atomic, beside a manifest naming the encoder, the images and the
chunk size. Rerunning the same `init` finds the manifest, keeps every chunk already
written and computes the rest; a different backbone or folder starts over (the partial
files are init's own). A vector that is not finite, or an encoder that returns vectors
of length 0, stops the init with one line naming the image (ProjectError). The fault
point "features_chunk" kills the process after a chunk is written (tests).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from crc_jax import durable
from crc_jax.runtime import faults
from crc_jax.project.features import FeatureResult
from crc_jax.project.scan import NOT_UTF8, describe_error, list_images, load_image, printable
from crc_jax.project.store import ProjectError

log = logging.getLogger(__name__)

PARTIAL = "features.partial"
MANIFEST = "manifest.json"
CHUNK_IMAGES = 512
DECODE_THREADS = 4


def index_folder(root: Path) -> tuple[list, list, list, list]:
    """(paths, sha256s) of the distinct readable files under `root`, in sorted order, plus
    duplicates (path, kept path) and skipped (path, reason) for empty/unreadable files."""
    paths, hashes, duplicates, skipped = [], [], [], []
    first_of: dict[str, str] = {}
    for rel in list_images(root):
        if printable(rel) != rel:   # index.csv and the page need a text name
            skipped.append((printable(rel), NOT_UTF8))
            continue
        try:
            data = (root / rel).read_bytes()
        except OSError as err:
            skipped.append((rel, describe_error(err)))
            continue
        if not data:
            skipped.append((rel, "empty file (0 bytes)"))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in first_of:
            duplicates.append((rel, first_of[digest]))
            continue
        first_of[digest] = rel
        paths.append(rel)
        hashes.append(digest)
    return paths, hashes, duplicates, skipped


def decode(root: Path, rel: str, size: int):
    """(image, None) or (None, reason) for one file at size×size."""
    try:
        return load_image(root / rel, size), None
    except Exception as err:  # noqa: BLE001 -- Pillow raises many types for a broken file
        return None, describe_error(err)


class ChunkedBackbone:
    """The `--backbone` source: an encoder (crc_jax.project.features.backbones) run over the
    folder in resumable chunks."""

    def __init__(self, encoder, *, batch_size: int = 32, chunk_images: int = CHUNK_IMAGES):
        if int(batch_size) <= 0:
            raise ProjectError(f"--batch-size: must be a positive integer, got {batch_size}")
        self.encoder, self.batch_size, self.chunk_images = encoder, int(batch_size), int(chunk_images)

    def check(self, images: Path) -> None:
        if not Path(images).is_dir():
            raise ProjectError(f"--images {images}: not a folder")

    def compute(self, images: Path, workdir: Path, *, progress: bool) -> FeatureResult:
        from tqdm.auto import tqdm

        root = Path(images)
        paths, hashes, duplicates, skipped = index_folder(root)
        if not paths:
            raise ProjectError(f"--images {root}: no readable images found ({len(skipped)} unreadable)")
        partial = Path(workdir) / PARTIAL
        starts = list(range(0, len(paths), self.chunk_images))
        manifest = {"encoder": self.encoder.describe(), "chunk_images": self.chunk_images,
                    "images": hashlib.sha256("\n".join(f"{p}\t{h}" for p, h in zip(paths, hashes))
                                             .encode()).hexdigest()[:16]}
        done = self._resume(partial, manifest, len(starts))
        bar = tqdm(total=len(paths), desc="features", unit="img", leave=False,
                   disable=None if progress else True,
                   initial=sum(min(self.chunk_images, len(paths) - starts[k]) for k in done))
        with concurrent.futures.ThreadPoolExecutor(min(DECODE_THREADS, os.cpu_count() or 1)) as pool:
            for k, start in enumerate(starts):
                if k in done:
                    continue
                self._write_chunk(partial / chunk_name(k), root, paths[start:start + self.chunk_images],
                                  pool)
                bar.update(min(self.chunk_images, len(paths) - start))
                faults.maybe_kill("features_chunk")
        bar.close()
        kept: list[int] = []
        vectors: list[np.ndarray] = []
        for k, start in enumerate(starts):
            with np.load(partial / chunk_name(k), allow_pickle=False) as chunk:
                kept.extend(start + int(i) for i in chunk["kept"])
                if len(chunk["kept"]):
                    vectors.append(chunk["features"])
                skipped.extend((paths[start + int(i)], str(r))
                               for i, r in zip(chunk["skipped"], chunk["reasons"]))
        if not kept:
            raise ProjectError(f"--images {root}: no readable images found ({len(skipped)} unreadable)")
        return FeatureResult(paths=[paths[i] for i in kept], hashes=[hashes[i] for i in kept],
                             features=np.concatenate(vectors), duplicates=duplicates,
                             skipped=sorted(skipped), source=manifest["encoder"])

    def _resume(self, partial: Path, manifest: dict, n_chunks: int) -> set:
        """Indices of the chunks already written for this manifest; a partial directory left
        by another backbone or folder is cleared first."""
        partial.mkdir(parents=True, exist_ok=True)
        path = partial / MANIFEST
        same = False
        if path.exists():
            try:
                same = json.loads(path.read_text()) == json.loads(json.dumps(manifest))
            except ValueError:
                same = False
        if not same:
            if path.exists():
                log.info("%s: computed for another backbone or folder; starting over", partial)
            for old in partial.glob("chunk_*.npz"):
                old.unlink()
            durable.write_atomic(path, (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())
            return set()
        done = {k for k in range(n_chunks) if chunk_ok(partial / chunk_name(k))}
        if done:
            log.info("resuming: %d of %d feature chunks already computed", len(done), n_chunks)
        return done

    def _write_chunk(self, path: Path, root: Path, rels: list, pool) -> None:
        size = self.encoder.input_size
        decoded = list(pool.map(lambda rel: decode(root, rel, size), rels))
        kept = [i for i, (image, _) in enumerate(decoded) if image is not None]
        bad = [i for i, (image, _) in enumerate(decoded) if image is None]
        outs = []
        for s in range(0, len(kept), self.batch_size):
            batch = np.stack([decoded[i][0] for i in kept[s:s + self.batch_size]])
            outs.append(self.encoder.encode(batch))
        features = np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)
        if outs:
            self._check_vectors(features, [rels[i] for i in kept])
        buffer = io.BytesIO()
        np.savez(buffer, features=features, kept=np.asarray(kept, np.int64),
                 skipped=np.asarray(bad, np.int64),
                 reasons=np.asarray([decoded[i][1] for i in bad], dtype=str))
        durable.write_atomic(path, buffer.getvalue())

    def _check_vectors(self, features: np.ndarray, rels: list) -> None:
        """Vectors the pool can hold: of length >= 1, every value finite."""
        where = f"--backbone {getattr(self.encoder, 'path', '')}".rstrip()
        if features.shape[1] == 0:
            raise ProjectError(f"{where}: its output holds vectors of length 0 (shape "
                               f"{features.shape}); export the model with its feature output first")
        finite = np.isfinite(features).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise ProjectError(f"{where}: its vector for {rels[row]!r} holds NaN or infinite "
                               f"values ({int((~finite).sum())} of {len(rels)} images in this "
                               "chunk); check the model, and --mean/--std or its metadata")


def chunk_name(k: int) -> str:
    return f"chunk_{k:06d}.npz"


def chunk_ok(path: Path) -> bool:
    """Whether a chunk file is whole (readable, its keys present, one vector per kept image)."""
    if not path.exists():
        return False
    try:
        with np.load(path, allow_pickle=False) as chunk:
            return len(chunk["features"]) == len(chunk["kept"])
    except (OSError, ValueError, KeyError):
        return False


def cleanup(directory: Path) -> None:
    """Remove the partial chunks once the project's pool holds the features."""
    shutil.rmtree(Path(directory) / PARTIAL, ignore_errors=True)
