"""A project's pool as feature vectors: from an embeddings file, or computed by a backbone.

Photos at hundreds of pixels a side are labeled on a pretrained representation, not on
32×32 pixels: `crc-jax init DIR --images PATH --features FILE` takes one vector per
image from a file (crc_jax.project.features.embeddings), `--backbone FILE` computes them
with an ONNX model or a checkpoint of a crc_jax.models model (backbone), in resumable
chunks (chunks). Either way the result is a `FeatureResult`: the images in pool order
and one float32 vector each, which crc_jax.project.store writes once as pool.npy.

A source is used in two steps, so a bad file or option is refused before anything is
written: `check(images)` (cheap: the file is read and matched, the model loaded and its
input understood) and `compute(images, workdir, progress)`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Protocol

import numpy as np

from crc_jax.project.store import ProjectError

STORE_DTYPES = ("float32", "float16")


@dataclasses.dataclass
class FeatureResult:
    """paths (relative, POSIX, pool order), hashes (sha256, "" when the files were not
    read), features (N, d) float32; duplicates: (path, path of the kept copy); skipped:
    (path, reason); source: what produced the vectors (written into project.json)."""

    paths: list
    hashes: list
    features: np.ndarray
    duplicates: list
    skipped: list
    source: dict


class FeatureSource(Protocol):
    def check(self, images: Path) -> None: ...

    def compute(self, images: Path, workdir: Path, *, progress: bool) -> FeatureResult: ...


def check_store_dtype(dtype: str) -> str:
    if dtype not in STORE_DTYPES:
        raise ProjectError(f"--feature-dtype: {dtype!r} is not one of {', '.join(STORE_DTYPES)}")
    return dtype


def backbone(path: Path, *, model: str | None = None, input_size: int | None = None,
             mean=None, std=None, batch_size: int = 32, provider: str = "auto"):
    """The source for `--backbone FILE`: an ONNX model (.onnx), or a crc_jax.models
    checkpoint (a Flax msgpack file or an orbax directory) of the model spec `model`.
    The model is loaded here, so a bad file or option fails before anything is written."""
    from crc_jax.project.features import backbones, chunks

    path = Path(path)
    encoder: backbones.OnnxEncoder | backbones.FlaxEncoder
    if path.suffix.lower() == ".onnx":
        if model is not None:
            raise ProjectError("--backbone-model: only for Flax checkpoints; an ONNX file "
                               "holds its own model")
        encoder = backbones.OnnxEncoder(path, input_size=input_size, mean=mean, std=std,
                                        provider=provider)
    else:
        if mean is not None or std is not None:
            raise ProjectError("--mean/--std: only for ONNX models; crc_jax models take pixels "
                               "in [0, 1]")
        encoder = backbones.FlaxEncoder(path, model=model, input_size=input_size)
    return chunks.ChunkedBackbone(encoder, batch_size=batch_size)


def embeddings_file(path: Path):
    """The source for `--features FILE` (.npz with paths and features, or .csv)."""
    from crc_jax.project.features.embeddings import EmbeddingsFile

    return EmbeddingsFile(Path(path))
