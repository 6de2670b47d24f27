"""SVHN, CIFAR-10 and CIFAR-100 from TensorFlow Datasets, as NumPy arrays in [0, 1].

Pixels are scaled to [0, 1] (x / 255) and not standardized per channel: the on-device
augmentation (crc_jax.data.augment: RandAugment's solarize, posterize, equalize, ...)
is defined on [0, 1] pixels, and the models' BatchNorm absorbs the input scale.

TensorFlow and TFDS come with the `tfds` extra (`pip install 'crc_jax[tfds]'`); without
it, loading (or `require`) raises one `MissingExtra` line naming the extra.

Loading iterates `tfds.load(..., as_supervised=True)` in batches. It avoids
`batch_size=-1`, which aborts the process under `tfds.testing.mock_data` with
TensorFlow 2.21. TensorFlow and TFDS are imported here, lazily.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from urllib.parse import urlsplit

import numpy as np

from crc_jax.runtime import extras
from crc_jax.errors import DataError

log = logging.getLogger(__name__)

_BATCH = 4096
PROBE_SECONDS = 10.0   # a host that answers at all answers far sooner


def load(tfds_name: str, data_dir: str = ""):
    """(x_train, y_train, x_test, y_test) of a TFDS image set; x float32 NHWC in [0, 1].

    data_dir "" uses the TFDS default directory and downloads the set if needed (a failed
    download is a `DataError` saying how to prepare the set elsewhere); any other directory
    must already hold the prepared set (else `DataError`). Without the `tfds` extra:
    `MissingExtra`.
    """
    quiet_tensorflow(f"the TFDS data set {tfds_name!r}")
    import tensorflow_datasets as tfds

    _hide_gpus_from_tensorflow()
    if data_dir:
        if not os.path.isdir(data_dir):
            raise DataError(f"data_dir {data_dir!r} does not exist")
        if not tfds.builder(tfds_name, data_dir=data_dir).is_prepared():
            raise DataError(f"data_dir {data_dir!r} holds no prepared {tfds_name!r}; prepare "
                            f"it with `tfds build {tfds_name} --data_dir={data_dir}`, or use "
                            "data_dir='' to let TFDS download it")
    builder = tfds.builder(tfds_name, data_dir=data_dir or None)
    if not builder.is_prepared():
        download_and_prepare(builder, tfds_name)
    out = []
    for split in ("train", "test"):
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        xs, ys = [], []
        for images, labels in tfds.as_numpy(ds.batch(_BATCH)):
            xs.append(scale(images))
            ys.append(labels.astype(np.int32))
        if not xs:
            raise DataError(f"{tfds_name} {split}: empty split")
        out += [np.concatenate(xs), np.concatenate(ys)]
        log.info("loaded %s %s: %d images", tfds_name, split, len(out[-1]))
    return tuple(out)


def download_and_prepare(builder, tfds_name: str) -> None:
    """Run TFDS's download and preparation; a network failure becomes one `DataError` line.

    Only network errors (OSError, which requests' and urllib's errors derive from) are
    turned into the message; anything else, such as a missing module, propagates.

    TFDS retries each file 10 times with exponential back-off (about 200 s before it gives
    up on a machine without a network), so the hosts of the set's files are probed first,
    once, for at most PROBE_SECONDS each: when one cannot be reached, TFDS tries each file
    once (files already in its download folder are still used) and fails within seconds.
    """
    log.debug("preparing %s in %s (TFDS downloads it on first use)", tfds_name, builder.data_dir)
    failure = unreachable(list(builder.url_infos or {}))
    if failure is not None:
        log.info("%s: %s; TFDS tries each file once", tfds_name, failure)
    try:
        with _one_attempt_per_file() if failure is not None else contextlib.nullcontext():
            builder.download_and_prepare()
    except OSError as err:
        raise DataError(  # the error type only: parallel downloads fail in any order
            f"could not download {tfds_name!r} ({type(err).__name__}); on a "
            f"machine with internet run `tfds build {tfds_name} --data_dir=DIR`, copy DIR here "
            "and pass --config.dataset.data_dir=DIR") from None


def unreachable(urls: list[str], timeout: float = PROBE_SECONDS) -> str | None:
    """None when the host of every URL (or the proxy the environment names for it)
    accepts a TCP connection within `timeout` seconds; else why the first one did not."""
    import requests

    tried = set()
    for url in urls:
        proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
        target = urlsplit(proxy or url)
        if not target.hostname:
            continue
        address = (target.hostname, target.port or (443 if target.scheme == "https" else 80))
        if address in tried:
            continue
        tried.add(address)
        failure = _connect(address, timeout)
        if failure is not None:
            return f"no connection to {address[0]}:{address[1]}{' (proxy)' if proxy else ''}: {failure}"
    return None


def _connect(address: tuple[str, int], timeout: float) -> str | None:
    """Open and close one TCP connection (name lookup included) in a thread waited on for
    `timeout` seconds: a resolver that never answers cannot hold the caller longer."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            outcome.append(None)
        except OSError as err:
            outcome.append(err.strerror or str(err) or type(err).__name__)

    thread = threading.Thread(target=attempt, daemon=True, name="crc_jax-probe")
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


@contextlib.contextmanager
def _one_attempt_per_file():
    """TFDS's downloader with no retries (its MAX_RETRIES, read at each request) and no
    progress bars (nothing will progress: the error line stays the only output)."""
    from tensorflow_datasets.core.download import downloader
    from tensorflow_datasets.core.utils import tqdm_utils

    saved = getattr(downloader, "MAX_RETRIES", None), tqdm_utils._active
    downloader.MAX_RETRIES = 0
    tqdm_utils.display_progress_bar(False)
    try:
        yield
    finally:
        if saved[0] is None:
            del downloader.MAX_RETRIES
        else:
            downloader.MAX_RETRIES = saved[0]
        tqdm_utils.display_progress_bar(saved[1])


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


def require(feature: str = "reading TFDS data sets") -> None:
    """Raise `MissingExtra` (one line naming `pip install 'crc_jax[tfds]'`) unless
    TensorFlow and TFDS are installed; imports nothing."""
    extras.require("tfds", feature)


def quiet_tensorflow(feature: str = "reading TFDS data sets") -> None:
    """Import TensorFlow without its C++ start-up messages (CUDA probing on machines without
    a GPU, oneDNN notes), and hide accelerators from it: it only reads files here.
    Without the `tfds` extra: `MissingExtra` naming `feature`.

    TF_CPP_MIN_LOG_LEVEL filters TensorFlow's logs once it runs, but the messages written
    while it loads bypass it, so stderr (fd 2) goes to /dev/null during the import, unless
    TF_CPP_MIN_LOG_LEVEL is set below 2 (to debug TensorFlow itself).
    """
    require(feature)
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    quiet = level.isdigit() and int(level) >= 2
    with _stderr_to_devnull() if quiet else contextlib.nullcontext():
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401

        _hide_gpus_from_tensorflow()


@contextlib.contextmanager
def _stderr_to_devnull():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
