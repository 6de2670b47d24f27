"""Optional dependency groups (pip extras) and the one-line error when one is missing.

`pip install crc_jax` holds the library, `crc-jax` and the embedded/npz data sets. Three
features need more, each from an extra declared in pyproject.toml:

    tfds      the paper's data sets (svhn, cifar10, cifar100): TensorFlow Datasets and
              TensorFlow (about 1.9 GB)
    infinite  the infinite-width NTK (`crc_infinite`, crc_jax.infinite): neural-tangents,
              whose own requirements pull TensorFlow in too
    onnx      `crc-jax init --backbone MODEL.onnx`: onnxruntime runs the model (78 MB installed)

`require` looks the modules up without importing them, so the check is cheap and runs
where a config or a strategy is checked, before any heavy work.
"""

from __future__ import annotations

import importlib.util

from crc_jax.errors import MissingExtra

EXTRAS: dict[str, tuple[str, ...]] = {   # extra -> the modules it provides
    "tfds": ("tensorflow", "tensorflow_datasets", "importlib_resources"),
    "infinite": ("neural_tangents",),
    "onnx": ("onnxruntime",),
}


def missing(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here."""
    return [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]


def require(extra: str, feature: str) -> None:
    """Raise `MissingExtra` (one line) unless every module of `extra` is installed."""
    lost = missing(extra)
    if lost:
        raise MissingExtra(f"{feature} needs crc_jax's {extra!r} extra ({', '.join(lost)} "
                           f"not installed): pip install 'crc_jax[{extra}]'")
