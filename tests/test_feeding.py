"""fit's batch feeding: pools on the device with the gather in a jitted call, or host batches.

Both paths must train the bit-identical model (the same step on the same batches), and
the automatic choice must fall back to the host when the pools are too large.
"""

import jax
import numpy as np
import pytest

from crc_jax import feeding
from crc_jax.train import fit


@pytest.mark.parametrize("ssl_name", ["fixmatch", "supervised"])
def test_device_feed_trains_the_same_model_as_host_feed(ssl_name, moons_fit):
    algorithm, kwargs = moons_fit(ssl_name, epochs=2, labeled=10, unlabeled=True, watch=64, seed=5)
    host = fit(algorithm, feed="host", **kwargs)
    device = fit(algorithm, feed="device", **kwargs)
    assert [r["loss"] for r in device.history] == [r["loss"] for r in host.history]
    for a, b in zip(jax.tree_util.tree_leaves(device.state.params),
                    jax.tree_util.tree_leaves(host.state.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert device.test_accuracy == host.test_accuracy


def test_device_feeder_gathers_the_rows_it_is_given():
    x_l = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    y_l = np.arange(5)
    x_u = -np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    seen = []

    def step(state, batch, key):
        seen.append({k: np.asarray(v) for k, v in batch.items()})
        return state, {}

    feeder = feeding.BatchFeeder(step, None, x_labeled=x_l, y_labeled=y_l, x_unlabeled=x_u,
                                 feed="device")
    assert feeder.on_device and isinstance(feeder.pools["x_u"], jax.Array)
    feeder(0, np.array([4, 0, 4]), np.array([6, 1]), None)
    np.testing.assert_array_equal(seen[0]["x_l"], x_l[[4, 0, 4]])
    np.testing.assert_array_equal(seen[0]["y_l"], [4, 0, 4])
    np.testing.assert_array_equal(seen[0]["x_u"], x_u[[6, 1]])


def test_auto_feed_uses_the_device_on_accelerators_when_the_pools_fit(monkeypatch):
    small = np.zeros((10, 4), np.float32)
    assert feeding.feeds_on_device("auto", (small, None), platform="gpu")
    assert not feeding.feeds_on_device("auto", (small, None), platform="cpu")
    assert not feeding.feeds_on_device("auto", (small, None))           # this machine: CPU
    monkeypatch.setattr(feeding, "DEVICE_FEED_MAX_BYTES", small.nbytes - 1)
    assert not feeding.feeds_on_device("auto", (small, None), platform="gpu")
    assert feeding.feeds_on_device("device", (small, None))
    with pytest.raises(ValueError, match="feed must be one of auto, host, device"):
        feeding.feeds_on_device("gpu", (small,))
