"""Pretrained backbones that turn images into feature vectors at `crc-jax init`.

An encoder maps a batch of RGB images, (n, S, S, 3) uint8 at its `input_size` S, to
(n, d) float32 features; `describe()` says what it is (written into project.json, and
compared when an interrupted init resumes).

  OnnxEncoder  an ONNX model run by onnxruntime (the `onnx` extra): the format most
               pretrained vision models are exported to (timm, torchvision, Hugging Face).
               From the model: the input layout (NCHW or NHWC, from the axis of size 3;
               a model taking another number of channels, e.g. grayscale, is refused),
               its side (a fixed one; else --input-size), its element type (float, half, or
               uint8 taken as raw pixels), and `mean`/`std` from its metadata (keys "mean"
               and "std", comma-separated, on the 0-1 pixel scale) unless given as options;
               without either, pixels go in as [0, 1] values. The first output is the
               feature vector; trailing axes of size 1 are dropped ((n, d, 1, 1) -> (n, d)).
               Providers: the CUDA one when onnxruntime has it (provider "auto"), else CPU.
  FlaxEncoder  a checkpoint of a crc_jax.models model (a Flax msgpack file, e.g. a round
               model a project saved, or an orbax checkpoint directory) and its spec
               ("cnn", "cnn:width=64"): the features are the head's input, on pixels in
               [0, 1] as crc_jax's own models take them.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from crc_jax.project.store import ProjectError

ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def file_digest(path: Path) -> str:
    """sha256 of a file, or of a directory's files (names and bytes), first 16 hex digits."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


STD_MIN = 1e-3   # no pixel statistic is smaller (std 1/255 feeds a model 0-255 values)


def parse_triple(text, option: str, *, model: Path | None = None) -> list | None:
    """Three channel values from "a,b,c" (or one value for all three), on the 0-1 pixel scale.

    option: "--mean" or "--std"; model: the ONNX file when `text` comes from its metadata
    (errors then name the metadata and say which option overrides it)."""
    if text is None:
        return None
    where = option if model is None else f"--backbone {model}: its metadata {option[2:]!r}"
    fix = "" if model is None else f"; give {option} on the 0-1 scale to override it"
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise ProjectError(f"{where}: expected three numbers like 0.485,0.456,0.406, "
                           f"got {text!r}{fix}") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ProjectError(f"{where}: expected 3 values (one per RGB channel), got "
                           f"{len(values)}{fix}")
    if not all(np.isfinite(values)):
        raise ProjectError(f"{where}: values must be finite numbers, got {text!r}{fix}")
    if max(abs(v) for v in values) > 1.0:
        if model is not None and max(abs(v) for v in values) <= 255.0:
            scaled = ",".join(f"{v / 255.0:.4g}" for v in values)
            raise ProjectError(f"{where} is {text!r}, on the 0-255 pixel scale; crc-jax reads "
                               f"it on the 0-1 scale: give {option} {scaled} (the metadata "
                               "divided by 255)")
        raise ProjectError(f"{where}: values are on the 0-1 pixel scale (ImageNet: "
                           f"0.485,0.456,0.406 / 0.229,0.224,0.225), got {text!r}{fix}")
    if option == "--std" and min(values) < STD_MIN:
        raise ProjectError(f"{where}: values must be positive, at least {STD_MIN:g} (on the 0-1 "
                           f"pixel scale; ImageNet: 0.229,0.224,0.225), got {text!r}{fix}")
    return values


def channel_axis(path: Path, name: str, shape: list) -> int:
    """1 (NCHW) or 3 (NHWC): the axis of size 3 of an image input; a fixed axis of fewer
    than 8 entries (an image side is at least 8) that is not 3 is a channel count crc-jax
    cannot feed (it feeds RGB), and is refused."""
    if shape[1] == 3:
        return 1
    if shape[3] == 3:
        return 3
    for axis in (1, 3):
        size = shape[axis]
        if isinstance(size, int) and 0 < size < 8:
            raise ProjectError(f"--backbone {path}: input {name!r} has shape {shape}, "
                               f"{size} channel{'s' * (size != 1)}; crc-jax feeds RGB images "
                               "(3 channels): export the model with a 3-channel input (for "
                               "a grayscale model, average the 3 channels in the model first)")
    return 1


def check_input_size(size) -> int | None:
    if size is None:
        return None
    if not 8 <= int(size) <= 1024:
        raise ProjectError(f"--input-size: must be between 8 and 1024, got {size}")
    return int(size)


class OnnxEncoder:
    """An ONNX model run by onnxruntime; see the module docstring for what is read from it."""

    def __init__(self, path: Path, *, input_size=None, mean=None, std=None,
                 provider: str = "auto"):
        from crc_jax.runtime import extras

        extras.require("onnx", "--backbone with an ONNX model")
        import onnxruntime as ort

        if provider not in ("auto", "cpu"):
            raise ProjectError(f"--onnx-provider: {provider!r} is not one of auto, cpu")
        self.path = Path(path)
        if not self.path.is_file():
            raise ProjectError(f"--backbone {path}: no such file")
        providers = ["CPUExecutionProvider"]
        if provider == "auto" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: no warnings on stderr per session
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # noqa: BLE001 -- onnxruntime raises its own exception types
            raise ProjectError(f"--backbone {path}: onnxruntime cannot load it "
                               f"({str(err).splitlines()[0][:200]})") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.output_name = self.session.get_outputs()[0].name
        if inp.type not in ONNX_TYPES:
            raise ProjectError(f"--backbone {path}: input {inp.name!r} is {inp.type}; expected "
                               f"an image tensor of {', '.join(ONNX_TYPES)}")
        self.input_type = ONNX_TYPES[inp.type]
        shape = list(inp.shape)
        if len(shape) != 4:
            raise ProjectError(f"--backbone {path}: input {inp.name!r} has shape {shape}; expected "
                               "an image batch (N, 3, H, W) or (N, H, W, 3)")
        self.channels_first = channel_axis(self.path, inp.name, shape) == 1
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        spatial = shape[2:] if self.channels_first else shape[1:3]
        fixed = [s for s in spatial if isinstance(s, int) and s > 0]
        if len(fixed) == 2 and fixed[0] != fixed[1]:
            raise ProjectError(f"--backbone {path}: input side {fixed[0]}x{fixed[1]} is not square")
        given = check_input_size(input_size)
        if fixed and given is not None and given != fixed[0]:
            raise ProjectError(f"--input-size {given}: the model takes {fixed[0]}x{fixed[0]} images")
        if not fixed and given is None:
            raise ProjectError(f"--backbone {path}: the model's input side is not fixed; give "
                               "--input-size")
        self.input_size = fixed[0] if fixed else given
        meta = self.session.get_modelmeta().custom_metadata_map
        self.mean = (parse_triple(mean, "--mean")
                     or parse_triple(meta.get("mean"), "--mean", model=self.path))
        self.std = (parse_triple(std, "--std")
                    or parse_triple(meta.get("std"), "--std", model=self.path))
        if self.input_type == np.uint8 and (self.mean or self.std):
            raise ProjectError(f"--backbone {path}: the model takes uint8 pixels; it normalizes "
                               "them itself, so --mean/--std do not apply")
        self.provider = self.session.get_providers()[0]

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """(n, S, S, 3) uint8 -> the model's input tensor."""
        if self.input_type == np.uint8:
            x = images
        else:
            x = images.astype(np.float32) / 255.0
            if self.mean is not None:
                x = x - np.asarray(self.mean, np.float32)
            if self.std is not None:
                x = x / np.asarray(self.std, np.float32)
            x = x.astype(self.input_type)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.channels_first else x)

    def run(self, x: np.ndarray) -> np.ndarray:
        """The first output for an input batch; a model exported with a fixed batch size
        gets slices of that size (the last one padded)."""
        if self.fixed_batch is None:
            return self._session_run(x)
        b, outs = self.fixed_batch, []
        for s in range(0, len(x), b):
            part = x[s:s + b]
            padded = np.concatenate([part, np.repeat(part[:1], b - len(part), axis=0)])
            outs.append(self._session_run(padded)[:len(part)])
        return np.concatenate(outs)

    def _session_run(self, x: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0])
        except Exception as err:  # noqa: BLE001 -- onnxruntime raises its own exception types
            raise ProjectError(f"--backbone {self.path}: onnxruntime cannot run it on input "
                               f"{self.input_name!r} of shape {list(x.shape)} "
                               f"({str(err).splitlines()[0][:200]})") from None

    def encode(self, images: np.ndarray) -> np.ndarray:
        out = self.run(self.preprocess(images))
        while out.ndim > 2 and out.shape[-1] == 1:
            out = out[..., 0]
        if out.ndim != 2 or out.shape[0] != len(images):
            raise ProjectError(f"--backbone {self.path}: output {self.output_name!r} has shape "
                               f"{out.shape} for {len(images)} images; expected (N, d): pool or "
                               "flatten in the exported model")
        return out.astype(np.float32)

    def describe(self) -> dict:
        return {"kind": "onnx", "file": str(self.path.resolve()), "sha256": file_digest(self.path),
                "input_size": self.input_size, "layout": "NCHW" if self.channels_first else "NHWC",
                "input_type": np.dtype(self.input_type).name, "mean": self.mean, "std": self.std,
                "output": self.output_name, "provider": self.provider}


class FlaxEncoder:
    """A crc_jax.models model with its checkpointed variables; features = the head's input."""

    def __init__(self, path: Path, *, model: str | None, input_size=None):
        import jax

        from crc_jax import models
        from crc_jax.acquisition import SpecError, parse_spec

        self.path = Path(path)
        if model is None:
            raise ProjectError(f"--backbone {path}: a Flax checkpoint needs --backbone-model "
                               f"(one of {', '.join(models.names())}, with options as in cnn:width=64)")
        if not self.path.exists():
            raise ProjectError(f"--backbone {path}: no such file or directory")
        try:
            name, options = parse_spec(model)
        except SpecError as err:
            raise ProjectError(f"--backbone-model: {err}") from None
        self.variables = restore(self.path)
        head = self.variables.get("params", {}).get("head", {})
        if "kernel" not in head:
            raise ProjectError(f"--backbone {path}: no params/head/kernel; expected the variables "
                               "of a crc_jax.models model")
        try:
            self.module = models.get(name, num_classes=int(head["kernel"].shape[-1]), **options)
        except (KeyError, TypeError, ValueError) as err:
            raise ProjectError(f"--backbone-model {model}: {str(err).strip(chr(34))}") from None
        self.model_spec = model
        self.input_size = check_input_size(input_size) or 32
        self._features = jax.jit(models.apply_functions(self.module).features)
        try:
            self.encode(np.zeros((1, self.input_size, self.input_size, 3), np.uint8))
        except Exception as err:  # noqa: BLE001 -- Flax raises its own errors for mismatched shapes
            raise ProjectError(f"--backbone {path}: its variables do not fit --backbone-model "
                               f"{model} ({str(err).splitlines()[0][:160]})") from None

    def encode(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32) / 255.0
        return np.asarray(self._features(self.variables, x), np.float32)

    def describe(self) -> dict:
        return {"kind": "flax", "file": str(self.path.resolve()), "sha256": file_digest(self.path),
                "model": self.model_spec, "input_size": self.input_size}


def restore(path: Path) -> dict:
    """The variables of a Flax msgpack file or an orbax checkpoint directory, as saved."""
    if path.is_dir():
        import orbax.checkpoint as ocp

        try:
            with warnings.catch_warnings():   # "sharding info not provided": one host here
                warnings.simplefilter("ignore", UserWarning)
                tree = ocp.PyTreeCheckpointer().restore(str(path.resolve()))
        except Exception as err:  # noqa: BLE001 -- orbax raises many types for a bad directory
            raise ProjectError(f"--backbone {path}: not an orbax checkpoint "
                               f"({str(err).splitlines()[0][:160]})") from None
    else:
        from flax import serialization

        try:
            tree = serialization.msgpack_restore(path.read_bytes())
        except Exception as err:  # noqa: BLE001 -- msgpack raises its own types
            raise ProjectError(f"--backbone {path}: not a Flax msgpack checkpoint "
                               f"({str(err).splitlines()[0][:160]})") from None
    if not isinstance(tree, dict):
        raise ProjectError(f"--backbone {path}: holds a {type(tree).__name__}, not variables")
    return tree if "params" in tree else {"params": tree}
