"""Data sets: the real TFDS loaders under tfds.testing.mock_data, the embedded sets, validation."""

import numpy as np
import pytest

from crc_jax import data
from crc_jax.errors import DataError

MOCK_EXAMPLES = 24


def _raw_tfds(tfds_name, split):
    """The mocked uint8 images and labels, read independently of crc_jax."""
    import tensorflow_datasets as tfds

    pairs = list(tfds.as_numpy(tfds.load(tfds_name, split=split, as_supervised=True)))
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])


@pytest.mark.parametrize("name, tfds_name, num_classes, flip", [
    ("svhn", "svhn_cropped", 10, False),
    ("cifar10", "cifar10", 10, True),
    ("cifar100", "cifar100", 100, True),
])
def test_tfds_loader_under_mock(name, tfds_name, num_classes, flip):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        ds = data.load(name)
        raw_x, raw_y = _raw_tfds(tfds_name, "train")
    assert ds.image_shape == (32, 32, 3)
    assert ds.x_train.shape == ds.x_test.shape == (MOCK_EXAMPLES, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.num_classes == num_classes and ds.flip is flip
    assert 0 <= ds.y_train.min() and ds.y_train.max() < num_classes
    np.testing.assert_array_equal(ds.y_train, raw_y)
    # x / 255: in [0, 1], as the on-device augmentation expects.
    np.testing.assert_allclose(ds.x_train, raw_x / 255.0, rtol=1e-6, atol=1e-6)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    # The mock draws pixels uniformly in [0, 255]: scaled, the channel means sit near 0.5.
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), 0.5, atol=0.1)


def test_tfds_subset_under_mock():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        full = data.load("cifar10")
        sub = data.load("cifar10", train_size=10, test_size=5, seed=1)
    assert len(sub.x_train) == 10 and len(sub.x_test) == 5
    # Each kept image is one of the full split's images, with its label.
    for x, y in zip(sub.x_train, sub.y_train):
        match = np.flatnonzero((full.x_train == x).all(axis=(1, 2, 3)))
        assert len(match) >= 1 and y in full.y_train[match]


def test_missing_data_dir_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        data.load("svhn", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="no prepared"):
        data.load("cifar10", data_dir=str(tmp_path))


def test_digits():
    ds = data.load("digits")
    from sklearn.datasets import load_digits

    total = load_digits()
    assert ds.image_shape == (8, 8, 1) and ds.num_classes == 10 and ds.flip is False
    assert len(ds.x_train) + len(ds.x_test) == len(total.target) == 1797
    assert len(ds.x_test) == 450  # ceil(0.25 * 1797)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    # Stratified: each class's share of the test split is within 1 example of 25%.
    total_counts = np.bincount(total.target, minlength=10)
    test_counts = np.bincount(ds.y_test, minlength=10)
    assert np.all(np.abs(test_counts - 0.25 * total_counts) <= 1)
    # Every test image really is a digit image, with its label.
    flat = (total.images / 16.0).reshape(len(total.images), -1).astype(np.float32)
    for x, y in zip(ds.x_test[:20], ds.y_test[:20]):
        match = np.flatnonzero((flat == x.reshape(-1)).all(axis=1))
        assert y in total.target[match]


def test_digits_split_is_fixed():
    a, b = data.load("digits", seed=0), data.load("digits", seed=5)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    np.testing.assert_array_equal(a.y_train, b.y_train)


def test_moons():
    ds = data.load("moons")
    assert ds.x_train.shape == (1000, 2) and ds.x_test.shape == (1000, 2)
    assert ds.image_shape == (2,) and ds.num_classes == 2 and ds.flip is False
    assert set(np.unique(ds.y_train)) == {0, 1}
    assert not np.array_equal(ds.x_train, ds.x_test)  # different seeds
    again = data.load("moons")
    np.testing.assert_array_equal(ds.x_train, again.x_train)


def test_subset_is_seeded_and_stratified():
    a = data.load("digits", train_size=200, test_size=100, seed=3)
    b = data.load("digits", train_size=200, test_size=100, seed=3)
    c = data.load("digits", train_size=200, test_size=100, seed=4)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert len(a.x_train) == 200 and len(a.x_test) == 100
    full = data.load("digits")
    expected = 200 * np.bincount(full.y_train) / len(full.y_train)
    assert np.all(np.abs(np.bincount(a.y_train, minlength=10) - expected) < 1)


def test_stratified_subset_counts(np_rng):
    y = np.repeat([0, 1, 2], [50, 30, 20])
    idx = data.stratified_subset(y, 10, np_rng)
    assert len(idx) == len(np.unique(idx)) == 10
    np.testing.assert_array_equal(np.bincount(y[idx]), [5, 3, 2])
    with pytest.raises(DataError):
        data.stratified_subset(y, 101, np_rng)


def test_unknown_name():
    with pytest.raises(DataError, match="unknown data set"):
        data.load("mnist")
    assert data.names() == ["cifar10", "cifar100", "digits", "moons", "npz", "svhn"]


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((3, 2)), np.array([0, 1, 2]), r"\[0, 2\)"),
    (np.zeros((3, 2)), np.array([0, -1, 1]), r"\[0, 2\)"),
    (np.zeros((3, 2)), np.array([0, 1]), "3 inputs but 2 labels"),
    (np.zeros((0, 2)), np.zeros(0, int), "empty"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), np.array([0, 1]), "non-finite.*example 0"),
    (np.array([[0.0, 1.0], [np.inf, 2.0]]), np.array([0, 1]), "non-finite.*example 1"),
    (np.zeros((2, 2)), np.array([0.0, 1.0]), "integers"),
])
def test_validate_arrays_rejects(x, y, match):
    with pytest.raises(DataError, match=match):
        data.validate_arrays(x, y, 2)


def test_validate_arrays_accepts():
    data.validate_arrays(np.zeros((3, 2), np.float32), np.array([0, 1, 1]), 2)


def test_load_validates_what_a_loader_returns(monkeypatch):
    from crc_jax.data import embedded

    def bad_moons():
        x = np.zeros((4, 2), np.float32)
        x[2, 1] = np.nan
        y = np.array([0, 1, 0, 1], np.int32)
        return x, y, x[:2], y[:2]

    monkeypatch.setattr(embedded, "moons", bad_moons)
    with pytest.raises(DataError, match="moons train: non-finite.*example 2"):
        data.load("moons")


def _npz(path, x_train, x_test, **extra):
    x_tr, y_tr, x_te, y_te = embedded_digits_small()
    np.savez(path, x_train=x_train, y_train=y_tr, x_test=x_test, y_test=y_te, num_classes=10,
             **extra)
    return str(path)


def embedded_digits_small():
    from crc_jax.data import embedded

    x_tr, y_tr, x_te, y_te = embedded.digits()
    return x_tr[:200], y_tr[:200], x_te[:50], y_te[:50]


def test_npz_uint8_pixels_are_scaled_once_with_a_warning(tmp_path, caplog):
    x_tr, _, x_te, _ = embedded_digits_small()
    u8_tr = np.round(x_tr * 255).astype(np.uint8)
    u8_te = np.round(x_te * 255).astype(np.uint8)
    with caplog.at_level("WARNING"):
        ds = data.load("npz", data_dir=_npz(tmp_path / "u8.npz", u8_tr, u8_te))
    np.testing.assert_array_equal(ds.x_train, u8_tr.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(ds.x_test, u8_te.astype(np.float32) / 255.0)
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0
    scaled = [r for r in caplog.records if "uint8 pixels" in r.getMessage()]
    assert [r.getMessage().split(":")[0] for r in scaled] == ["npz train", "npz test"]


def test_npz_images_without_channel_axis_get_one_channel(tmp_path, caplog):
    x_tr, _, x_te, _ = embedded_digits_small()
    with caplog.at_level("WARNING"):
        ds = data.load("npz", data_dir=_npz(tmp_path / "hw.npz", x_tr[..., 0], x_te[..., 0]))
    assert ds.image_shape == (8, 8, 1)
    np.testing.assert_array_equal(ds.x_train, x_tr)
    assert sum("without a channel axis" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("arrays, match", [
    (dict(x_train="x255"), r"x_train holds pixel values in \[0, 255\]"),
    (dict(x_train="int64"), r"x_train holds int64 pixels"),
    (dict(x_train="complex"), r"x_train holds complex values"),
    (dict(x_test="crop"), r"x_test holds inputs of shape \(7, 7, 1\)"),
    (dict(num_classes=0), r"num_classes must be an integer >= 2, got 0"),
    (dict(num_classes=10.7), r"num_classes must be an integer >= 2, got 10\.7"),
    (dict(num_classes=np.array([10, 10])), r"num_classes must be a single value"),
    (dict(y_train="object"), r"y_train cannot be read without unpickling"),
    (dict(x_train="scalar"), r"x_train must hold N inputs"),
    (dict(y_train="no class 3"), r"no examples of class 3 \(of 10\)"),
])
def test_npz_refuses_what_has_no_obvious_meaning(tmp_path, arrays, match):
    x_tr, y_tr, x_te, y_te = embedded_digits_small()
    files = dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=10)
    variants = {"x255": x_tr * 255, "int64": np.round(x_tr * 255).astype(np.int64),
                "complex": x_tr.astype(np.complex64), "crop": x_te[:, :7, :7],
                "object": y_tr.astype(object), "scalar": np.float32(0.5),
                "no class 3": np.where(y_tr == 3, 4, y_tr)}
    for key, value in arrays.items():
        files[key] = variants[value] if isinstance(value, str) else value
    np.savez(tmp_path / "bad.npz", **files)
    with pytest.raises(DataError, match=match):
        data.num_classes("npz", str(tmp_path / "bad.npz"))
        data.load("npz", data_dir=str(tmp_path / "bad.npz"))
