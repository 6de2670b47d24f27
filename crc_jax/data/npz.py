"""Your own pool from a .npz file (dataset.name = "npz", dataset.data_dir = its path).

The file holds x_train, y_train, x_test, y_test (inputs already scaled as the model
expects: NHWC images or (N, D) vectors; integer labels) and num_classes; an optional
boolean `flip` says whether horizontal flips preserve labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crc_jax.errors import DataError

KEYS = ("x_train", "y_train", "x_test", "y_test", "num_classes")


def _open(path: str):
    if not path:
        raise DataError("dataset.data_dir must name the .npz file when dataset.name is 'npz'")
    if not Path(path).is_file():
        raise DataError(f"{path}: no such .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    missing = [k for k in KEYS if k not in archive.files]
    if missing:
        raise DataError(f"{path}: missing arrays {', '.join(missing)} (needs {', '.join(KEYS)})")
    return archive


def num_classes(path: str) -> int:
    return int(_open(path)["num_classes"])


def flip(path: str) -> bool:
    archive = _open(path)
    return bool(archive["flip"]) if "flip" in archive.files else False


def load(path: str):
    archive = _open(path)
    return tuple(archive[k] for k in ("x_train", "y_train", "x_test", "y_test"))
