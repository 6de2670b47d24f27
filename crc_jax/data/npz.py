"""Your own pool from a .npz file (dataset.name = "npz", dataset.data_dir = its path).

The file holds x_train, y_train, x_test, y_test (NHWC images in [0, 1], or uint8 images
that are scaled on loading, or (N, D) vectors; integer labels) and num_classes, an
integer >= 2; an optional boolean `flip` says whether horizontal flips preserve labels.
Arrays must be numeric: a pickled object array is refused, never unpickled.
"""

from __future__ import annotations

import zipfile
import zlib
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
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # e.g. a truncated file
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    missing = [k for k in KEYS if k not in archive.files]
    if missing:
        raise DataError(f"{path}: missing arrays {', '.join(missing)} (needs {', '.join(KEYS)})")
    return archive


def _array(archive, path: str, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:  # an object array: np.load refuses to unpickle it
        raise DataError(f"{path}: array {key} cannot be read without unpickling Python "
                        f"objects ({err}); save it as a numeric array") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{path}: array {key} is unreadable ({err})") from None


def _scalar(archive, path: str, key: str) -> np.ndarray:
    value = _array(archive, path, key)
    if value.ndim != 0:
        raise DataError(f"{path}: {key} must be a single value, got an array of shape "
                        f"{value.shape}")
    return value


def num_classes(path: str) -> int:
    value = _scalar(_open(path), path, "num_classes")
    if not np.issubdtype(value.dtype, np.integer) or int(value) < 2:
        raise DataError(f"{path}: num_classes must be an integer >= 2, got {value.item()!r}")
    return int(value)


def flip(path: str) -> bool:
    archive = _open(path)
    if "flip" not in archive.files:
        return False
    value = _scalar(archive, path, "flip")
    if value.dtype != np.bool_:
        raise DataError(f"{path}: flip must be True or False, got {value.item()!r}")
    return bool(value)


def load(path: str):
    archive = _open(path)
    return tuple(_array(archive, path, k) for k in ("x_train", "y_train", "x_test", "y_test"))
