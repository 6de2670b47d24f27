"""Pseudo-AL's per-class wrapper: each class's pick and record stay that class's."""

import jax
import numpy as np

from crc_jax.acquisition import Context
from crc_jax.acquisition.per_class import per_class


def recording_strategy(ctx, budget, key):
    """Picks the lowest indices and records what it saw (like CRC's group scores)."""
    del key
    ctx.record["seen"] = sorted(int(i) for i in ctx.unlabeled)
    return np.sort(ctx.unlabeled)[:budget]


def test_per_class_keeps_every_class_record_apart():
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    ctx = Context(apply_fn=None, variables=None, x=np.zeros((12, 1)), labeled=np.array([0, 1, 2]),
                  unlabeled=np.arange(3, 12), num_classes=3, oracle=lambda idx: labels[idx])
    picked = per_class(recording_strategy)(ctx, 6, jax.random.PRNGKey(0))
    assert sorted(picked.tolist()) == [3, 4, 5, 6, 7, 8]
    assert np.array_equal(np.bincount(labels[picked], minlength=3), [2, 2, 2])
    assert ctx.record == {"per_class": {"0": {"seen": [3, 6, 9]}, "1": {"seen": [4, 7, 10]},
                                        "2": {"seen": [5, 8, 11]}}}
