"""The labeled/unlabeled pool: which images carry a label, and the oracle that reveals them.

The pool holds every training label but shows a label only once its index has gone
through `label` (the annotator). Strategies get indices, never the hidden labels.
Three places read hidden labels by design, and say so:
  * `initial_indices`: the paper's step 0 samples Q0/C images per class (§4.1);
  * crc_jax/data/initial_sets.py: the other step-0 rules place Q0/C images per class too;
  * `oracle_labels`: the pseudo-AL setting of Table 3 searches class-balanced groups.
"""

from __future__ import annotations

import numpy as np


class Pool:
    """Pool of N examples with hidden labels in [0, num_classes)."""

    def __init__(self, labels: np.ndarray, num_classes: int):
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError("labels must be a 1-D integer array, "
                             f"got {labels.dtype} {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes})")
        self._labels = labels.astype(np.int32)
        self._labels.flags.writeable = False
        self.num_classes = int(num_classes)
        self._order: list[np.ndarray] = []  # labeled indices, one array per `label` call
        self._is_labeled = np.zeros(len(labels), dtype=bool)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def labeled(self) -> np.ndarray:
        """Labeled indices in acquisition order."""
        return np.concatenate(self._order) if self._order else np.zeros(0, np.int64)

    @property
    def unlabeled(self) -> np.ndarray:
        """Unlabeled indices, sorted."""
        return np.flatnonzero(~self._is_labeled)

    @property
    def labeled_labels(self) -> np.ndarray:
        """Revealed labels, aligned with `labeled`."""
        return self._labels[self.labeled]

    def initial_indices(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """`size` unlabeled indices, size/C from each class, in random order; labels nothing.

        Class-balanced random sampling for step 0 (paper §4.1). Reads the hidden labels,
        which is what the protocol prescribes for Q0.
        """
        c = self.num_classes
        if size <= 0 or size % c:
            raise ValueError(f"initial size {size} must be a positive multiple of the "
                             f"{c} classes (class-balanced: size/C per class)")
        per_class = size // c
        picked = []
        for k in range(c):
            candidates = np.flatnonzero((self._labels == k) & ~self._is_labeled)
            if len(candidates) < per_class:
                raise ValueError(f"class {k} has {len(candidates)} unlabeled examples, "
                                 f"fewer than the {per_class} asked for")
            picked.append(rng.choice(candidates, per_class, replace=False))
        return rng.permutation(np.concatenate(picked))

    def label(self, indices) -> np.ndarray:
        """Ask the oracle: mark `indices` labeled, in the given order, and return their labels.

        Refuses (ValueError) non-integer or out-of-range indices, duplicates within the
        request and indices labeled before, so no label is ever bought twice.
        """
        idx = self._check(indices)
        if len(np.unique(idx)) != len(idx):
            raise ValueError("indices to label contain duplicates")
        already = idx[self._is_labeled[idx]]
        if len(already):
            raise ValueError(f"indices already labeled: {already[:10].tolist()}")
        if len(idx):
            self._is_labeled[idx] = True
            self._order.append(idx.copy())
        return self._labels[idx]

    def oracle_labels(self, indices) -> np.ndarray:
        """Hidden labels of any indices, without labeling them.

        Only the pseudo-AL setting (paper Table 3) may call this: it is defined by
        groups holding R images of each class, which needs the labels up front. Every
        other strategy must go through `label`.
        """
        return self._labels[self._check(indices)]

    def _check(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.size == 0:
            return np.zeros(0, np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
        if idx.min() < 0 or idx.max() >= len(self):
            raise ValueError(f"indices must lie in [0, {len(self)}), "
                             f"got range [{idx.min()}, {idx.max()}]")
        return idx.astype(np.int64)
