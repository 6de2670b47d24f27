"""experiments/onnx_export.py: crc_jax's CNN written as ONNX gives the Flax model's features
(run by the real onnxruntime), with BatchNorm or without, at an odd image side, and
behind an input pooling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crc_jax import models
from experiments.onnx_export import export_cnn, pool_input


@pytest.mark.parametrize("batch_norm,pool,side", [(True, 1, 21), (False, 1, 21), (True, 4, 32)])
def test_exported_cnn_features_equal_the_flax_model(tmp_path, batch_norm, pool, side):
    import onnxruntime as ort

    module = models.get("cnn", num_classes=10, width=6, dense_width=16, batch_norm=batch_norm)
    variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, side // pool, side // pool, 3)))
    keys = iter(jax.random.split(jax.random.PRNGKey(1), 64))
    # move every parameter and statistic away from its initial value (zero biases, unit
    # BatchNorm scales), so that a mistake in any of them shows
    variables = jax.tree_util.tree_map(lambda a: a + 0.3 * jax.random.normal(next(keys), a.shape),
                                       variables)
    if batch_norm:
        variables["batch_stats"] = jax.tree_util.tree_map(lambda a: jnp.abs(a) + 0.5,
                                                          variables["batch_stats"])
    export_cnn(module, variables, tmp_path / "cnn.onnx", side=side, input_pool=pool)
    x = np.random.default_rng(0).random((5, side, side, 3)).astype(np.float32)
    expected = np.asarray(models.apply_functions(module).features(variables, pool_input(x, pool)))
    session = ort.InferenceSession(str(tmp_path / "cnn.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": x.transpose(0, 3, 1, 2)})[0]
    assert got.shape == (5, 16) and np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    meta = session.get_modelmeta().custom_metadata_map
    assert (meta["mean"], meta["std"]) == ("0,0,0", "1,1,1")
