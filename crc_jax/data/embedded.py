"""Small data sets that need no download: scikit-learn's digits and two-moons.

They make the whole pipeline runnable (and testable) on a CPU in seconds. Both use
fixed seeds, so every run sees the same splits.
"""

from __future__ import annotations

import numpy as np

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
MOONS_TRAIN, MOONS_TEST = 1000, 1000
MOONS_NOISE = 0.1
MOONS_SEEDS = (0, 1)  # train, test


def digits():
    """The 1797 8x8 UCI handwritten digits: (N, 8, 8, 1) in [0, 1], 10 classes.

    A fixed stratified split holds out 25% for testing.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return x_train, y_train, x_test, y_test


def moons():
    """Two interleaving half circles: (N, 2) points, 2 classes, noise 0.1, 1000/1000."""
    from sklearn.datasets import make_moons

    x_train, y_train = make_moons(MOONS_TRAIN, noise=MOONS_NOISE, random_state=MOONS_SEEDS[0])
    x_test, y_test = make_moons(MOONS_TEST, noise=MOONS_NOISE, random_state=MOONS_SEEDS[1])
    return (x_train.astype(np.float32), y_train.astype(np.int32),
            x_test.astype(np.float32), y_test.astype(np.int32))
