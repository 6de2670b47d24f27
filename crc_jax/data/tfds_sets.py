"""SVHN, CIFAR-10 and CIFAR-100 from TensorFlow Datasets, as NumPy arrays in [0, 1].

Pixels are scaled to [0, 1] (x / 255) and not standardized per channel: the on-device
augmentation (crc_jax.data.augment: RandAugment's solarize, posterize, equalize, ...)
is defined on [0, 1] pixels, and the models' BatchNorm absorbs the input scale.

Loading iterates `tfds.load(..., as_supervised=True)` in batches. It avoids
`batch_size=-1`, which aborts the process under `tfds.testing.mock_data` with
TensorFlow 2.21. TensorFlow and TFDS are imported here, lazily.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from crc_jax.errors import DataError

log = logging.getLogger(__name__)

_BATCH = 4096


def load(tfds_name: str, data_dir: str = ""):
    """(x_train, y_train, x_test, y_test) of a TFDS image set; x float32 NHWC in [0, 1].

    data_dir "" uses the TFDS default directory and downloads the set if needed; any
    other directory must already hold the prepared set (else `DataError`).
    """
    import tensorflow_datasets as tfds

    _hide_gpus_from_tensorflow()
    if data_dir:
        if not os.path.isdir(data_dir):
            raise DataError(f"data_dir {data_dir!r} does not exist")
        if not tfds.builder(tfds_name, data_dir=data_dir).is_prepared():
            raise DataError(f"data_dir {data_dir!r} holds no prepared {tfds_name!r}; prepare "
                            f"it with `tfds build {tfds_name} --data_dir={data_dir}`, or use "
                            "data_dir='' to let TFDS download it")
    out = []
    for split in ("train", "test"):
        ds = tfds.load(tfds_name, split=split, data_dir=data_dir or None, download=not data_dir,
                       as_supervised=True, shuffle_files=False)
        xs, ys = [], []
        for images, labels in tfds.as_numpy(ds.batch(_BATCH)):
            xs.append(scale(images))
            ys.append(labels.astype(np.int32))
        if not xs:
            raise DataError(f"{tfds_name} {split}: empty split")
        out += [np.concatenate(xs), np.concatenate(ys)]
        log.info("loaded %s %s: %d images", tfds_name, split, len(out[-1]))
    return tuple(out)


def scale(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images -> float32 in [0, 1]."""
    return images.astype(np.float32) / 255.0


def _hide_gpus_from_tensorflow():
    """Keep TensorFlow (used only for reading files) from reserving accelerator memory JAX needs."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialized its devices; nothing to do
        log.debug("TensorFlow devices already initialized; GPUs left visible to it")
