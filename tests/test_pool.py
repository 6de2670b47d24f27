"""The labeled/unlabeled pool: class-balanced start, the oracle's refusals, bookkeeping."""

import numpy as np
import pytest

from crc_jax.data import Pool


def _labels():
    # 3 classes with 10, 6 and 4 examples, interleaved.
    return np.array([0, 1, 2, 0, 0, 1, 0, 2, 1, 0, 0, 1, 2, 0, 1, 0, 0, 2, 1, 0])


def test_starts_empty():
    pool = Pool(_labels(), 3)
    assert len(pool) == 20 and len(pool.labeled) == 0 and len(pool.labeled_labels) == 0
    np.testing.assert_array_equal(pool.unlabeled, np.arange(20))


def test_initial_indices_are_class_balanced(np_rng):
    labels = _labels()
    pool = Pool(labels, 3)
    idx = pool.initial_indices(9, np_rng)
    assert len(idx) == len(np.unique(idx)) == 9
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=3), [3, 3, 3])
    assert len(pool.labeled) == 0  # sampling does not label
    # Seeded: the same generator state gives the same draw, another gives another.
    again = Pool(labels, 3).initial_indices(9, np.random.default_rng(0))
    np.testing.assert_array_equal(idx, again)
    draws = {tuple(Pool(labels, 3).initial_indices(9, np.random.default_rng(s))) for s in range(5)}
    assert len(draws) > 1


def test_initial_indices_errors(np_rng):
    pool = Pool(_labels(), 3)
    with pytest.raises(ValueError, match="multiple"):
        pool.initial_indices(10, np_rng)
    with pytest.raises(ValueError, match="class 2 has 4"):
        pool.initial_indices(15, np_rng)  # 5 per class, class 2 has only 4
    with pytest.raises(ValueError, match="multiple"):
        pool.initial_indices(0, np_rng)


def test_label_reveals_and_records_order():
    labels = _labels()
    pool = Pool(labels, 3)
    got = pool.label([7, 2, 5])
    np.testing.assert_array_equal(got, labels[[7, 2, 5]])
    got = pool.label(np.array([0, 19]))
    np.testing.assert_array_equal(got, labels[[0, 19]])
    np.testing.assert_array_equal(pool.labeled, [7, 2, 5, 0, 19])
    np.testing.assert_array_equal(pool.labeled_labels, labels[[7, 2, 5, 0, 19]])
    expected_unlabeled = sorted(set(range(20)) - {7, 2, 5, 0, 19})
    np.testing.assert_array_equal(pool.unlabeled, expected_unlabeled)
    assert len(pool.labeled) + len(pool.unlabeled) == len(pool)


@pytest.mark.parametrize("request_, match", [
    ([3, 4, 3], "duplicates"),
    ([1, 6], "already labeled"),
    ([20], r"\[0, 20\)"),
    ([-1], r"\[0, 20\)"),
    (np.array([1.0, 2.0]), "integer"),
    (np.array([True, False]), "integer"),
])
def test_label_refuses(request_, match):
    pool = Pool(_labels(), 3)
    pool.label([6, 8])
    with pytest.raises(ValueError, match=match):
        pool.label(request_)
    # A refused request changes nothing.
    np.testing.assert_array_equal(pool.labeled, [6, 8])
    assert len(pool.unlabeled) == 18


def test_oracle_labels_do_not_label():
    labels = _labels()
    pool = Pool(labels, 3)
    np.testing.assert_array_equal(pool.oracle_labels([4, 12]), labels[[4, 12]])
    assert len(pool.labeled) == 0
    with pytest.raises(ValueError):
        pool.oracle_labels([20])


def test_initial_then_label_flow(np_rng):
    labels = np.repeat(np.arange(4), 25)
    pool = Pool(labels, 4)
    first = pool.initial_indices(8, np_rng)
    pool.label(first)
    second = pool.initial_indices(8, np_rng)  # draws only unlabeled examples
    assert not set(first) & set(second)
    pool.label(second)
    np.testing.assert_array_equal(np.bincount(pool.labeled_labels), [4, 4, 4, 4])


def test_rejects_bad_labels():
    with pytest.raises(ValueError):
        Pool(np.array([0, 3]), 3)
    with pytest.raises(ValueError):
        Pool(np.array([0.0, 1.0]), 3)
