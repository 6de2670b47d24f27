"""A fully connected ReLU network, for two-moons, the infinite-width comparison and heads
over pretrained features ("mlp"), and its depth-0 case, a linear classifier ("linear").

    flatten -> depth x [Dense(width) -> ReLU] = features -> [Dropout(dropout)] -> head: Dense(C)

Flax's default initialization (LeCun-normal kernels, i.e. weights N(0, 1/fan_in),
zero biases): the standard parameterization of neural-tangents `stax.Dense` with
W_std = 1, whose infinite-width kernel crc_jax.infinite compares against. No BatchNorm,
so the model has no "batch_stats". `dtype` is the activation dtype (mixed precision);
parameters, features and logits stay float32. `dropout` > 0 drops features before the
head in passes given a "dropout" PRNG stream (crc_jax.models.dropout_before_head).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crc_jax.models import MODELS, activation_dtype, check_dropout, dropout_before_head


class MLP(nn.Module):
    num_classes: int
    width: int = 256
    depth: int = 2
    dtype: Any = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        del train  # no BatchNorm; dropout depends on a "dropout" PRNG stream, not on train
        h = jnp.asarray(x, self.dtype).reshape((x.shape[0], -1))
        for _ in range(self.depth):
            h = nn.relu(nn.Dense(self.width, dtype=self.dtype)(h))
        h = h.astype(jnp.float32)
        logits = nn.Dense(self.num_classes, name="head")(dropout_before_head(self, h))
        return (logits, h) if return_features else logits


@MODELS.register("mlp", vectors=True)
def mlp(*, num_classes: int, width: int = 0, depth: int = 2, dtype="float32",
        dropout: float = 0.0) -> MLP:
    """MLP with `depth` hidden layers of `width` units (0 = 256); `dtype` of the
    activations; `dropout` rate before the head."""
    check_dropout(dropout)
    if width < 0 or depth < 1:
        raise ValueError(f"width must be >= 0 and depth >= 1, got {width}, {depth}")
    return MLP(num_classes=num_classes, width=width or 256, depth=depth,
               dtype=activation_dtype(dtype), dropout=float(dropout))


@MODELS.register("linear", vectors=True)
def linear(*, num_classes: int, dtype="float32", dropout: float = 0.0) -> MLP:
    """A linear classifier (an MLP without hidden layers): logits = x W + b, features = x.
    Over a pretrained backbone's features it is the linear probe, and its last-layer NTK
    is C·(xxᵀ + 1) on the features themselves; `dropout` drops input features."""
    check_dropout(dropout)
    return MLP(num_classes=num_classes, width=1, depth=0, dtype=activation_dtype(dtype),
               dropout=float(dropout))
