"""A small conv net written with the `onnx` helper API, and the same network in NumPy.

    input (N, 3, S, S) float [or (N, S, S, 3) with a Transpose first]
    -> Conv 3x3 (3 -> 4, pad 1, bias) -> Relu -> GlobalAveragePool -> Flatten
    -> Gemm (4 -> 6, bias) -> Relu = features (N, 6)

The tests run it through the real onnxruntime and compare with `numpy_features`. Bad
models for the refusals: `channels=1` (a grayscale input) and `nan=True` (a NaN conv bias:
every output NaN).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHANNELS, FEATURES = 4, 6


def weights(seed: int = 0, channels: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {"conv_w": rng.normal(size=(CHANNELS, channels, 3, 3)).astype(np.float32),
            "conv_b": rng.normal(size=CHANNELS).astype(np.float32),
            "fc_w": rng.normal(size=(FEATURES, CHANNELS)).astype(np.float32),
            "fc_b": rng.normal(size=FEATURES).astype(np.float32) * 0.1}


def write_conv_net(path: Path, *, side: int = 16, layout: str = "NCHW", seed: int = 0,
                   metadata: dict | None = None, batch="N", channels: int = 3,
                   nan: bool = False) -> dict:
    """Write the net to `path` (input side `side`, a symbolic batch axis unless `batch` is
    an int, `channels` input channels, a NaN conv bias when `nan`); returns its weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = weights(seed, channels)
    if nan:
        w["conv_b"][0] = np.nan
    shape = ([batch, channels, side, side] if layout == "NCHW"
             else [batch, side, side, channels])
    nodes = []
    first = "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]))
        first = "nchw"
    nodes += [
        helper.make_node("Conv", [first, "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu1"]),
        helper.make_node("GlobalAveragePool", ["relu1"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], transB=1),
        helper.make_node("Relu", ["fc"], ["features"]),
    ]
    graph = helper.make_graph(
        nodes, "small_conv_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [batch, FEATURES])],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return w


def numpy_features(images_uint8: np.ndarray, w: dict, mean=None, std=None) -> np.ndarray:
    """The net in NumPy on (N, S, S, 3) uint8 images, float64."""
    x = images_uint8.astype(np.float64) / 255.0
    if mean is not None:
        x = x - np.asarray(mean)
    if std is not None:
        x = x / np.asarray(std)
    n, s = x.shape[0], x.shape[1]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((n, s, s, CHANNELS))
    for dy in range(3):
        for dx in range(3):
            patch = padded[:, dy:dy + s, dx:dx + s, :]                      # (n, s, s, 3)
            conv += np.einsum("nhwc,oc->nhwo", patch, w["conv_w"][:, :, dy, dx])
    conv = np.maximum(conv + w["conv_b"], 0.0)
    pooled = conv.mean(axis=(1, 2))                                           # (n, 4)
    return np.maximum(pooled @ w["fc_w"].T + w["fc_b"], 0.0)
