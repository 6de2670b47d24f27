"""Rules that pick step 0's labeled set: which Q0 pool images start a trial.

Every rule takes Q0/C images of each class (the protocol's class-balanced start) and reads
the pool's hidden labels to do so, as the paper's step 0 does (§4.1). `rng` is the trial's
generator, so a rule is reproducible from (seed, trial). Distances are Euclidean in input
space (pixels for images, coordinates for points).

  * random: Q0/C per class at random (paper §4.1; `Pool.initial_indices`, the default).
  * indices: the pool indices given (`al.initial_indices`), e.g. pivots placed by hand.
  * spread: off the class-separating region and spread out. A point's margin is its
    distance to the nearest point of another class; the candidates of a class are its
    points whose margin is at or above the class's `margin_quantile` quantile. The first
    pivot is a random candidate, each next one the candidate farthest from the pivots
    chosen so far (farthest-point sampling). Figure 1's start (the paper: "4 manually
    selected pivot points not on the class-separating region").
  * near_duplicate: a badly conditioned start: per class, a random anchor and its Q0/C - 1
    nearest neighbours of the same class, i.e. labels that are near copies of each other.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crc_jax.data.pool import Pool
from crc_jax.registry import Registry

RULES: Registry[Any] = Registry("initial rule")
# name -> rule(x, labels, num_classes, size, rng, *, margin_quantile, indices) -> indices

_CHUNK = 1024   # rows per block of the pairwise distances (bounds memory on large pools)


def margins(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each point's distance to the nearest point of another class (its margin)."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    labels = np.asarray(labels)
    sq = np.einsum("ij,ij->i", flat, flat)
    out = np.empty(len(flat))
    for start in range(0, len(flat), _CHUNK):
        block = flat[start:start + _CHUNK]
        d2 = sq[start:start + _CHUNK, None] + sq[None, :] - 2.0 * block @ flat.T
        d2[labels[start:start + _CHUNK, None] == labels[None, :]] = np.inf
        out[start:start + _CHUNK] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return out


def margin_threshold(class_margins: np.ndarray, margin_quantile: float) -> float:
    """The smallest margin a `spread` pivot of this class may have."""
    return float(np.quantile(class_margins, margin_quantile, method="lower"))


def _per_class(labels, num_classes: int, size: int) -> int:
    if size <= 0 or size % num_classes:
        raise ValueError(f"initial size {size} must be a positive multiple of the "
                         f"{num_classes} classes (class-balanced: size/C per class)")
    per_class = size // num_classes
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    if counts.min() < per_class:
        k = int(counts.argmin())
        raise ValueError(f"class {k} has {counts[k]} examples, fewer than the {per_class} asked for")
    return per_class


def _flat(x) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


@RULES.register("random")
def random(x, labels, num_classes: int, size: int, rng: np.random.Generator,
           **_unused) -> np.ndarray:
    """Q0/C per class at random: exactly the draw of `Pool.initial_indices`."""
    del x
    return Pool(labels, num_classes).initial_indices(size, rng)


@RULES.register("indices")
def given(x, labels, num_classes: int, size: int, rng: np.random.Generator, *,
          indices=(), **_unused) -> np.ndarray:
    """The `indices` given, checked: `size` distinct pool indices."""
    del labels, num_classes, rng
    idx = np.asarray(indices)
    if idx.ndim != 1 or len(idx) != size or (size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"needs {size} integer pool indices (al.initial_size), got {list(indices)!r}")
    if len(np.unique(idx)) != len(idx):
        raise ValueError(f"lists an index twice: {idx.tolist()}")
    if idx.min() < 0 or idx.max() >= len(x):
        raise ValueError(f"indices must lie in [0, {len(x)}), got {idx.tolist()}")
    return idx.astype(np.int64)


@RULES.register("spread")
def spread(x, labels, num_classes: int, size: int, rng: np.random.Generator, *,
           margin_quantile: float = 0.0, **_unused) -> np.ndarray:
    """Per class: farthest-point sampling among the points whose margin is at or above
    the class's `margin_quantile` quantile, from a random first pivot."""
    if not 0.0 <= margin_quantile < 1.0:
        raise ValueError(f"margin_quantile must be in [0, 1), got {margin_quantile!r}")
    per_class = _per_class(labels, num_classes, size)
    labels = np.asarray(labels)
    flat = _flat(x)
    margin = margins(flat, labels) if margin_quantile > 0 else None
    picked = []
    for k in range(num_classes):
        members = np.flatnonzero(labels == k)
        if margin is not None:
            members = members[margin[members] >= margin_threshold(margin[members], margin_quantile)]
        if len(members) < per_class:
            raise ValueError(f"class {k} has {len(members)} points at or above margin quantile "
                             f"{margin_quantile}, fewer than the {per_class} asked for")
        chosen = [int(rng.choice(members))]
        nearest = np.linalg.norm(flat[members] - flat[chosen[0]], axis=1)
        while len(chosen) < per_class:
            nxt = int(members[np.argmax(nearest)])
            chosen.append(nxt)
            nearest = np.minimum(nearest, np.linalg.norm(flat[members] - flat[nxt], axis=1))
        picked += chosen
    return np.asarray(picked, np.int64)


@RULES.register("near_duplicate")
def near_duplicate(x, labels, num_classes: int, size: int, rng: np.random.Generator,
                   **_unused) -> np.ndarray:
    """Per class: a random anchor and its size/C - 1 nearest neighbours of the same class."""
    per_class = _per_class(labels, num_classes, size)
    labels = np.asarray(labels)
    flat = _flat(x)
    picked = []
    for k in range(num_classes):
        members = np.flatnonzero(labels == k)
        anchor = int(rng.choice(members))
        distance = np.linalg.norm(flat[members] - flat[anchor], axis=1)
        order = members[np.lexsort((members, distance))]   # the anchor first (distance 0)
        picked += [anchor] + [int(i) for i in order if i != anchor][:per_class - 1]
    return np.asarray(picked, np.int64)



def names() -> list[str]:
    """Every rule name `al.initial_rule` accepts."""
    return RULES.names()
