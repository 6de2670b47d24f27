"""Data: data sets by name, the labeled/unlabeled pool, on-device augmentation (augment.py)."""

from crc_jax.data.datasets import (Dataset, load, names, num_classes, register,
                                   stratified_subset, tfds_name, validate_arrays)
from crc_jax.data.pool import Pool

__all__ = ["Dataset", "Pool", "load", "names", "num_classes", "register", "stratified_subset",
           "tfds_name", "validate_arrays"]
