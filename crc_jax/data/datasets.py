"""Data sets by name, as NumPy arrays: the pool (train split) and the test split.

    ds = crc_jax.data.load("svhn", data_dir="", train_size=0, test_size=0, seed=0)

Images are NHWC float32 in [0, 1] (what the on-device augmentation expects);
two-moons points are (N, 2) float32; labels are int32 in [0, C). Every split goes
through `validate_arrays`, so bad data fails here with a `DataError` rather than as a
NaN loss many steps later. `train_size` / `test_size` > 0 keep a seeded, stratified
random subset. The TFDS sets (svhn, cifar10, cifar100) need the `tfds` extra; without it
`num_classes` and `load` raise one `MissingExtra` line naming `pip install 'crc_jax[tfds]'`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable

import numpy as np

from crc_jax.data import embedded, npz, tfds_sets
from crc_jax.errors import DataError
from crc_jax.registry import Registry

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


SOURCES: Registry[_Source] = Registry("data set")   # name -> factory(data_dir) -> _Source


def register(name: str, *, num_classes: int, flip: bool, **traits):
    """Decorator registering `load(data_dir) -> (x_train, y_train, x_test, y_test)` as data
    set `name` with a fixed number of classes; `flip`: whether a horizontal flip keeps the
    label. Adding a data set is one module with such a loader, and this registration."""
    def decorator(load: Callable[[str], Arrays]):
        SOURCES.register(name, **traits)(lambda *, data_dir: _Source(load, num_classes, flip))
        return load

    return decorator


for _name, _builder, _classes, _flip in (("svhn", "svhn_cropped", 10, False),
                                         ("cifar10", "cifar10", 10, True),
                                         ("cifar100", "cifar100", 100, True)):
    register(_name, num_classes=_classes, flip=_flip, tfds_name=_builder)(
        functools.partial(tfds_sets.load, _builder))
register("digits", num_classes=10, flip=False)(lambda data_dir: embedded.digits())
register("moons", num_classes=2, flip=False)(lambda data_dir: embedded.moons())
# your own pool: classes and flip come from the file
SOURCES.register("npz")(lambda *, data_dir: _Source(npz.load, npz.num_classes(data_dir),
                                                     npz.flip(data_dir)))


def _source(name: str, data_dir: str) -> _Source:
    """The registered source; a TFDS set needs the `tfds` extra installed (else one
    `MissingExtra` line, raised where the config is checked, before any work)."""
    if name not in SOURCES:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(names())}")
    if tfds_name(name) is not None:
        tfds_sets.require(f"data set {name!r}")
    return SOURCES.get(name, data_dir=data_dir)


def names() -> list[str]:
    """The data set names `load` accepts."""
    return SOURCES.names()


def tfds_name(name: str) -> str | None:
    """The TFDS builder behind data set `name` (its registration trait), or None."""
    return SOURCES.traits(name).get("tfds_name") if name in SOURCES else None


def num_classes(name: str, data_dir: str = "") -> int:
    """Number of classes of data set `name`, known without loading the images."""
    if name == "npz":   # without reading the images
        return npz.num_classes(data_dir)
    return _source(name, data_dir).num_classes


def load(name: str, *, data_dir: str = "", train_size: int = 0, test_size: int = 0,
         seed: int = 0) -> Dataset:
    """Load data set `name`; `data_dir` "" lets TFDS use (and download to) its default."""
    source = _source(name, data_dir)
    x_train, y_train, x_test, y_test = source.load(data_dir)
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, x, y, size, stream in (("train", x_train, y_train, train_size, 0),
                                      ("test", x_test, y_test, test_size, 1)):
        x = prepare_inputs(x, split=f"{name} {split}", array=f"x_{split}")
        y = np.asarray(y)
        validate_arrays(x, y, source.num_classes, split=f"{name} {split}")
        check_pixel_range(x, split=f"{name} {split}", array=f"x_{split}")
        if split == "train" and name == "npz":  # the file's num_classes must be honest
            check_every_class(y, source.num_classes, split=f"{name} {split}")
        if split == "test" and x.shape[1:] != splits["train"][0].shape[1:]:
            raise DataError(f"{name} test: x_test holds inputs of shape {x.shape[1:]}, but "
                            f"x_train's are {splits['train'][0].shape[1:]}")
        if size > 0:
            keep = stratified_subset(y, size, np.random.default_rng([seed, stream]),
                                     field=f"dataset.{split}_size")
            x, y = x[keep], y[keep]
        splits[split] = (x, y.astype(np.int32))
        log.info("%s %s: %d examples of shape %s", name, split, len(x), x.shape[1:])
    return Dataset(name=name, x_train=splits["train"][0], y_train=splits["train"][1],
                   x_test=splits["test"][0], y_test=splits["test"][1],
                   num_classes=source.num_classes, flip=source.flip)


def prepare_inputs(x, *, split: str, array: str) -> np.ndarray:
    """Inputs as float32 (N, H, W, C) images or (N, D) vectors.

    Converts what has one obvious meaning, saying so: uint8 pixels are scaled to [0, 1]
    (x / 255), and (N, H, W) images get one channel. Refuses (`DataError`, naming the
    array) what has not: a scalar or 1-D array, complex, boolean or non-numeric values,
    more than 4 axes, and integer pixels other than uint8.
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise DataError(f"{split}: {array} must hold N inputs, (N, H, W, C) images or (N, D) "
                        f"vectors; got shape {x.shape}")
    if x.ndim > 4:
        raise DataError(f"{split}: {array} has {x.ndim} axes {x.shape}; expected (N, H, W, C) "
                        "images or (N, D) vectors")
    if np.iscomplexobj(x):
        raise DataError(f"{split}: {array} holds complex values ({x.dtype}); inputs must be "
                        "real")
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{split}: inputs must be numeric, got dtype {x.dtype} in {array}")
    if x.ndim == 3:
        log.warning("%s: %s holds images of shape %s without a channel axis; using them as "
                    "1-channel images %s", split, array, x.shape[1:], x.shape[1:] + (1,))
        x = x[..., None]
    if np.issubdtype(x.dtype, np.integer) and x.ndim == 4:
        if x.dtype != np.uint8:
            raise DataError(f"{split}: {array} holds {x.dtype} pixels; give uint8 (0-255) or "
                            "float pixels in [0, 1]")
        log.warning("%s: %s holds uint8 pixels; scaled to [0, 1] (x / 255)", split, array)
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32)


PIXEL_SLACK = 1e-3  # float rounding of pixels scaled to [0, 1] elsewhere


def check_pixel_range(x: np.ndarray, *, split: str, array: str) -> None:
    """Images must lie in [0, 1] (the augmentation clips to it); vectors may lie anywhere."""
    if x.ndim != 4 or not len(x):
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < -PIXEL_SLACK or hi > 1 + PIXEL_SLACK:
        hint = " (0-255 pixels: divide by 255, or save them as uint8)" if hi > 1.5 else ""
        raise DataError(f"{split}: {array} holds pixel values in [{lo:g}, {hi:g}]; images "
                        f"must lie in [0, 1]{hint}")


def check_every_class(y: np.ndarray, num_classes: int, *, split: str) -> None:
    """Every class must have examples in the pool: step 0 labels Q0/C images of each."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if len(empty):
        raise DataError(f"{split}: no examples of class{'es' if len(empty) > 1 else ''} "
                        f"{', '.join(map(str, empty[:10]))} (of {num_classes}); step 0 labels "
                        "Q0/C images of every class")


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


def stratified_subset(y: np.ndarray, size: int, rng: np.random.Generator, *,
                      field: str = "") -> np.ndarray:
    """Sorted indices of `size` examples drawn without replacement, classes kept in proportion.

    Class c gets floor(size * n_c / N) examples; the remaining slots go to the
    classes with the largest fractional parts (random tie-break).
    """
    y = np.asarray(y)
    if size > len(y):
        where = f"config.{field}={size}: " if field else ""
        raise DataError(f"{where}asked for a subset of {size} examples, but the split has "
                        f"{len(y)}" + (f"; set {field} <= {len(y)} (0 = all)" if field else ""))
    classes, counts = np.unique(y, return_counts=True)
    quota = size * counts / len(y)
    take = np.floor(quota).astype(int)
    remainder = size - take.sum()
    order = np.lexsort((rng.random(len(classes)), -(quota - take)))
    take[order[:remainder]] += 1
    picked = [rng.choice(np.flatnonzero(y == c), k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked))
