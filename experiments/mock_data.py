"""`--mock_data=N`: run a config on tfds.testing.mock_data (N random examples per split).

Mock examples are generated per index from a fixed seed, so the first N labels of a
larger mock split are those of an N-example one: the smallest N a config can run on is
found by reading the labels once, and a too small N is refused naming what it lacks.
"""

from __future__ import annotations

import contextlib

import numpy as np

from crc_jax.errors import ConfigError


def context(num_examples: int):
    """tfds.testing.mock_data(num_examples=N) when N > 0, else nothing."""
    if num_examples <= 0:
        return contextlib.nullcontext()
    from crc_jax.data.tfds_sets import quiet_tensorflow

    quiet_tensorflow()
    import tensorflow_datasets as tfds

    return tfds.testing.mock_data(num_examples=num_examples)


def _mock_labels(tfds_name: str, num_examples: int) -> np.ndarray:
    import logging

    from crc_jax.data import tfds_sets

    logger = logging.getLogger(tfds_sets.__name__)
    level = logger.level
    logger.setLevel(logging.WARNING)  # a probe, not the run's data: no "loaded" lines
    try:
        with context(num_examples):
            return tfds_sets.load(tfds_name)[1]
    finally:
        logger.setLevel(level)


def needs(config) -> list[tuple[int, str]]:
    """(smallest N, what sets it) for each need of the config; the largest N is the answer."""
    labels = config.al.initial_size + config.al.steps * config.al.query_size
    out = [(config.dataset.test_size, f"config.dataset.test_size={config.dataset.test_size} "
                                      "test examples"),
           (config.dataset.train_size, f"config.dataset.train_size={config.dataset.train_size} "
                                       "pool examples"),
           (labels + config.train.val_size, f"Q0 + steps*Q = {labels} labels"
            + (f" + train.val_size={config.train.val_size}" if config.train.val_size else ""))]
    floor = max(n for n, _ in out)
    from crc_jax import data

    num_classes = data.num_classes(config.dataset.name)
    per_class = config.al.initial_size // num_classes
    bound = max(4 * floor, floor + 400)
    y = _mock_labels(data.tfds_name(config.dataset.name), bound)
    counts = np.cumsum(np.eye(num_classes, dtype=np.int64)[y], axis=0).min(axis=1)
    reached = np.flatnonzero(counts >= per_class)
    first = int(reached[0]) + 1 if len(reached) else bound + 1
    out.append((first, f"Q0/C = {per_class} pool images of every class (mock labels are random)"))
    return [(n, why) for n, why in out if n > 0]


def check(config, num_examples: int) -> None:
    """Refuse an N the config cannot run on (ConfigError naming the needs and the smallest N)."""
    from crc_jax import data

    if num_examples <= 0 or data.tfds_name(config.dataset.name) is None:
        return
    all_needs = needs(config)
    smallest = max(n for n, _ in all_needs)
    if num_examples < smallest:
        unmet = [why for n, why in all_needs if n > num_examples]
        raise ConfigError("", f"--mock_data={num_examples} is too small for this config, which "
                              f"needs {'; '.join(unmet)}: use --mock_data={smallest} or more")
