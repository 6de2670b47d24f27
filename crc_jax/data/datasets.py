"""Data sets by name, as NumPy arrays: the pool (train split) and the test split.

    ds = crc_jax.data.load("svhn", data_dir="", train_size=0, test_size=0, seed=0)

Images are NHWC float32 in [0, 1] (what the on-device augmentation expects);
two-moons points are (N, 2) float32; labels are int32 in [0, C). Every split goes
through `validate_arrays`, so bad data fails here with a `DataError` rather than as a
NaN loss many steps later. `train_size` / `test_size` > 0 keep a seeded, stratified
random subset.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import Callable

import numpy as np

from crc_jax.data import embedded, npz, tfds_sets
from crc_jax.errors import DataError

log = logging.getLogger(__name__)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x_train, y_train, x_test, y_test


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train (pool) / test split pair.

    flip: whether a horizontal flip is a label-preserving augmentation (not for digits
    and house numbers, where it turns one class into another or into no class).
    """

    name: str
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    num_classes: int
    flip: bool

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one input: (H, W, C) for images, (D,) for points."""
        return tuple(self.x_train.shape[1:])


@dataclasses.dataclass(frozen=True)
class _Source:
    load: Callable[[str], Arrays]  # data_dir -> arrays
    num_classes: int
    flip: bool


_SOURCES = {
    "svhn": _Source(functools.partial(tfds_sets.load, "svhn_cropped"), 10, False),
    "cifar10": _Source(functools.partial(tfds_sets.load, "cifar10"), 10, True),
    "cifar100": _Source(functools.partial(tfds_sets.load, "cifar100"), 100, True),
    "digits": _Source(lambda data_dir: embedded.digits(), 10, False),
    "moons": _Source(lambda data_dir: embedded.moons(), 2, False),
    "npz": _Source(npz.load, 0, False),  # classes and flip come from the file
}


def names() -> list[str]:
    """The data set names `load` accepts."""
    return sorted(_SOURCES)


def num_classes(name: str, data_dir: str = "") -> int:
    """Number of classes of data set `name`, known without loading the images."""
    if name not in _SOURCES:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(names())}")
    return npz.num_classes(data_dir) if name == "npz" else _SOURCES[name].num_classes


def load(name: str, *, data_dir: str = "", train_size: int = 0, test_size: int = 0,
         seed: int = 0) -> Dataset:
    """Load data set `name`; `data_dir` "" lets TFDS use (and download to) its default."""
    if name not in _SOURCES:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(names())}")
    source = _SOURCES[name]
    if name == "npz":
        source = _Source(npz.load, npz.num_classes(data_dir), npz.flip(data_dir))
    x_train, y_train, x_test, y_test = source.load(data_dir)
    splits = {}
    for split, x, y, size, stream in (("train", x_train, y_train, train_size, 0),
                                      ("test", x_test, y_test, test_size, 1)):
        x = np.asarray(x, np.float32)
        y = np.asarray(y)
        validate_arrays(x, y, source.num_classes, split=f"{name} {split}")
        if size > 0:
            keep = stratified_subset(y, size, np.random.default_rng([seed, stream]))
            x, y = x[keep], y[keep]
        splits[split] = (x, y.astype(np.int32))
        log.info("%s %s: %d examples of shape %s", name, split, len(x), x.shape[1:])
    return Dataset(name=name, x_train=splits["train"][0], y_train=splits["train"][1],
                   x_test=splits["test"][0], y_test=splits["test"][1],
                   num_classes=source.num_classes, flip=source.flip)


def validate_arrays(x: np.ndarray, y: np.ndarray, num_classes: int, *, split: str = "data") -> None:
    """Raise `DataError` unless x, y form a usable non-empty split of a C-class problem.

    Checks: same length, at least one example, integer labels in [0, C), finite inputs.
    """
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{split}: labels must be 1-D, got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"{split}: {len(x)} inputs but {len(y)} labels")
    if len(y) == 0:
        raise DataError(f"{split}: empty split")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{split}: labels must be integers, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{split}: labels must lie in [0, {num_classes}), "
                        f"got range [{y.min()}, {y.max()}]")
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{split}: inputs must be numeric, got dtype {x.dtype}")
    chunk = 4096  # bounded temporary memory on the 73k-image SVHN pool
    for start in range(0, len(x), chunk):
        finite = np.isfinite(x[start:start + chunk])
        if not finite.all():
            bad = start + int(np.argwhere(~finite)[0][0])
            raise DataError(f"{split}: non-finite input value (NaN or inf) in example {bad}")


def stratified_subset(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of `size` examples drawn without replacement, classes kept in proportion.

    Class c gets floor(size * n_c / N) examples; the remaining slots go to the
    classes with the largest fractional parts (random tie-break).
    """
    y = np.asarray(y)
    if size > len(y):
        raise DataError(f"asked for a subset of {size} examples, but the split has {len(y)}")
    classes, counts = np.unique(y, return_counts=True)
    quota = size * counts / len(y)
    take = np.floor(quota).astype(int)
    remainder = size - take.sum()
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))
    take[order[:remainder]] += 1
    picked = [rng.choice(np.flatnonzero(y == c), k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))
