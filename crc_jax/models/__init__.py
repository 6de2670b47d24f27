"""Models by name. Every model is a Flax linen module with the same contract:

    logits = model.apply(variables, x, train=False)
    logits, features = model.apply(variables, x, train=False, return_features=True)
    logits, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])

The final dense layer that produces the logits is named "head" (the last-layer NTK
differentiates exactly its parameters); `features` is its input (N, d).

Every model takes `dtype`, the dtype of its activations ("float32" or "bfloat16", mixed
precision). Parameters stay float32 whatever it is, and so do the returned logits and
features: the head runs in float32 on float32 features, so losses, softmaxes and the
NTK quantities CRC computes from them keep float32 precision.

Every model takes `dropout` (default 0): the rate of a dropout layer on the features,
before the head. It is active exactly in the passes given a "dropout" PRNG stream,

    logits = model.apply(variables, x, train=False, rngs={"dropout": key})

whatever `train` is: the SSL train steps pass one (training with dropout), evaluation
passes none (deterministic), and MC-dropout acquisition (BALD) passes one per sample with
BatchNorm in evaluation mode. With rate 0 the layer is the identity.
"""

import functools
from typing import Any, NamedTuple
from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

from crc_jax.registry import Registry

MODELS: Registry[Any] = Registry("model")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def activation_dtype(dtype):
    """The jnp dtype for "float32" / "bfloat16" (or a dtype among them); ValueError otherwise."""
    name = jnp.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DTYPES:
        raise ValueError(f"activation dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[name]


def check_dropout(rate) -> None:
    if not 0.0 <= float(rate) < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {rate!r}")


def dropout_before_head(module: nn.Module, features):
    """Dropout of rate `module.dropout` on the features, active when the pass has a
    "dropout" PRNG stream (see the module docstring); the identity at rate 0."""
    if not module.dropout:
        return features
    return nn.Dropout(module.dropout, deterministic=not module.has_rng("dropout"))(features)


def get(name: str, *, num_classes: int, **options):
    """Build the model registered under `name` for `num_classes` outputs."""
    _import_all()
    return MODELS.get(name, num_classes=num_classes, **options)


def names(trait: str | None = None) -> list[str]:
    """Registered model names (with `trait`: those registered with it, e.g. "vectors")."""
    _import_all()
    return MODELS.names(trait)


def _import_all():
    from crc_jax.models import cnn, mlp, wrn  # noqa: F401  (registration side effects)


class ApplyFunctions(NamedTuple):
    """A model's passes in evaluation mode (BatchNorm running statistics, float32).

    logits:     (variables, x) -> logits (N, C), dropout off.
    features:   (variables, x) -> the head's input features (N, d).
    stochastic: (variables, x, key) -> logits with dropout drawn from `key` (MC dropout),
                None when the model has no dropout.
    """

    logits: Callable
    features: Callable
    stochastic: Callable | None


@functools.lru_cache(maxsize=32)
def apply_functions(model: nn.Module) -> ApplyFunctions:
    """The evaluation passes of `model`, one set per (hashable) module, so the functions
    jitted code is keyed on stay the same across steps and rounds (no recompiles)."""

    def logits(variables, x):
        return model.apply(variables, x, train=False)

    def features(variables, x):
        return model.apply(variables, x, train=False, return_features=True)[1]

    def stochastic(variables, x, key):  # MC dropout: dropout on, BatchNorm in eval mode
        return model.apply(variables, x, train=False, rngs={"dropout": key})

    return ApplyFunctions(logits, features, stochastic if getattr(model, "dropout", 0) else None)
