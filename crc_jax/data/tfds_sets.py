"""SVHN, CIFAR-10 and CIFAR-100 from TensorFlow Datasets, as normalized NumPy arrays.

Pixels are scaled to [0, 1], then each channel is standardized with the data set's
usual training-set mean and standard deviation: x <- (x / 255 - mean) / std.

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

# Per-channel (R, G, B) mean and std of the training images in [0, 1].
MEAN_STD = {
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_BATCH = 4096


def load(tfds_name: str, data_dir: str = ""):
    """(x_train, y_train, x_test, y_test) of a TFDS image set; x float32 NHWC normalized.

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
            xs.append(normalize(images, tfds_name))
            ys.append(labels.astype(np.int32))
        if not xs:
            raise DataError(f"{tfds_name} {split}: empty split")
        out += [np.concatenate(xs), np.concatenate(ys)]
        log.info("loaded %s %s: %d images", tfds_name, split, len(out[-1]))
    return tuple(out)


def normalize(images: np.ndarray, tfds_name: str) -> np.ndarray:
    """uint8 NHWC images -> float32, (x / 255 - mean) / std per channel."""
    mean, std = (np.asarray(v, np.float32) for v in MEAN_STD[tfds_name])
    return (images.astype(np.float32) / 255.0 - mean) / std


def _hide_gpus_from_tensorflow():
    """Keep TensorFlow (used only for reading files) from reserving accelerator memory JAX needs."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow already initialized its devices; nothing to do
        log.debug("TensorFlow devices already initialized; GPUs left visible to it")
