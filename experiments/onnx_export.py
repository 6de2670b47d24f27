"""Export crc_jax's small CNN (crc_jax.models.cnn) to ONNX: its features as a "pretrained backbone".

Written with the `onnx` helper API from the Flax variables, node by node:

    Flax (NHWC)                          ONNX (NCHW input, opset 17)
    [avg_pool p×p stride p of the input  AveragePool kernel p stride p: input_pool=p > 1]
    Conv 3x3 SAME, kernel (3,3,I,O)      Conv pads 1, weight (O,I,3,3) (+ bias without BN)
    BatchNorm (running stats, eps)       BatchNormalization (inference form, same eps)
    relu / avg_pool 2x2 stride 2         Relu / AveragePool kernel 2 stride 2
    mean over H, W                       GlobalAveragePool + Flatten
    Dense(dense_width) + relu            Gemm + Relu  -> output "features" (N, dense_width)

The output is the head's input (the features crc_jax.models' `return_features` gives),
so `crc-jax init --backbone model.onnx` computes what the Flax model would. The model's
metadata carries mean "0,0,0" and std "1,1,1": the network takes pixels in [0, 1], as
crc_jax's models do. tests/test_onnx_export.py checks the export against the Flax model.

Used by experiments/transfer_backbone.py and experiments/benchmarks/labeling_features.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def pool_input(x: np.ndarray, pool: int) -> np.ndarray:
    """(N, S, S, C) -> (N, S/p, S/p, C): the p×p average pooling `input_pool` puts first."""
    if pool == 1:
        return x
    n, s, _, c = x.shape
    return x.reshape(n, s // pool, pool, s // pool, pool, c).mean(axis=(2, 4))


def export_cnn(module, variables, path: Path, *, side: int, input_pool: int = 1,
               batch: int | str = "N") -> None:
    """Write the features of a crc_jax.models.cnn.CNN with `variables` to `path` (ONNX),
    for input images of side `side` (N, 3, side, side) in [0, 1]; with input_pool=p the
    network sees the images average-pooled p×p (`pool_input`), as it was trained."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from crc_jax.models.cnn import CNN

    if not isinstance(module, CNN):
        raise TypeError(f"export_cnn exports crc_jax.models.cnn.CNN, got {type(module).__name__}")
    params = variables["params"]
    stats = variables.get("batch_stats", {})
    inits, nodes = [], []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name=name))
        return name

    def conv_block(x: str, k: int) -> str:
        conv = params[f"Conv_{k}"]
        weight = const(f"conv{k}_w", np.transpose(np.asarray(conv["kernel"]), (3, 2, 0, 1)))
        inputs = [x, weight] + ([const(f"conv{k}_b", conv["bias"])] if "bias" in conv else [])
        nodes.append(helper.make_node("Conv", inputs, [f"conv{k}"], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1]))
        h = f"conv{k}"
        if module.batch_norm:
            bn, st = params[f"BatchNorm_{k}"], stats[f"BatchNorm_{k}"]
            nodes.append(helper.make_node(
                "BatchNormalization",
                [h, const(f"bn{k}_scale", bn["scale"]), const(f"bn{k}_bias", bn["bias"]),
                 const(f"bn{k}_mean", st["mean"]), const(f"bn{k}_var", st["var"])],
                [f"bn{k}"], epsilon=1e-5))   # flax.linen.BatchNorm's default epsilon
            h = f"bn{k}"
        nodes.append(helper.make_node("Relu", [h], [f"relu{k}"]))
        return f"relu{k}"

    if side % input_pool:
        raise ValueError(f"input_pool {input_pool} must divide the side {side}")
    first = "image"
    if input_pool > 1:
        nodes.append(helper.make_node("AveragePool", ["image"], ["image_pooled"],
                                      kernel_shape=[input_pool] * 2, strides=[input_pool] * 2))
        first = "image_pooled"
    h = conv_block(first, 0)
    h = conv_block(h, 1)
    nodes.append(helper.make_node("AveragePool", [h], ["pool"], kernel_shape=[2, 2], strides=[2, 2]))
    h = conv_block("pool", 2)
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
    dense = params["Dense_0"]
    nodes.append(helper.make_node("Gemm", ["flat", const("dense_w", dense["kernel"]),
                                           const("dense_b", dense["bias"])], ["dense"]))
    nodes.append(helper.make_node("Relu", ["dense"], ["features"]))
    graph = helper.make_graph(
        nodes, "crc_jax_cnn_features",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, side, side])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, module.dense_width])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="crc_jax experiments.onnx_export")
    model.ir_version = 8   # readable by onnxruntime releases of the last two years
    for key, value in (("mean", "0,0,0"), ("std", "1,1,1")):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
