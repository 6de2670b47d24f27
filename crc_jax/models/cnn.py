"""A small CNN for the embedded digits set (8x8x1), usable on any HxWxC image.

    conv3x3(w) [BN] ReLU -> conv3x3(w) [BN] ReLU -> avg-pool 2x2
    -> conv3x3(2w) [BN] ReLU -> global average pool -> Dense(dense_width) ReLU = features
    -> [Dropout(dropout)] -> head: Dense(C)

Flax's default initialization (LeCun-normal kernels, zero biases), so that with
`batch_norm=False` it is the finite-width network whose infinite-width limit
crc_jax.infinite builds with neural-tangents `stax`. With BatchNorm the convs carry
no bias (BN's shift replaces it); without BatchNorm they do. `dtype` is the
activation dtype (mixed precision); parameters, features and logits stay float32.
`dropout` > 0 drops features before the head in passes given a "dropout" PRNG stream
(crc_jax.models.dropout_before_head).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crc_jax.models import MODELS, activation_dtype, check_dropout, dropout_before_head


class CNN(nn.Module):
    num_classes: int
    width: int = 32
    dense_width: int = 128
    batch_norm: bool = True
    dtype: Any = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        def conv_act(h, features):
            h = nn.Conv(features, (3, 3), padding="SAME", use_bias=not self.batch_norm,
                        dtype=self.dtype)(h)
            if self.batch_norm:
                h = nn.BatchNorm(use_running_average=not train, dtype=self.dtype)(h)
            return nn.relu(h)

        h = conv_act(jnp.asarray(x, self.dtype), self.width)
        h = conv_act(h, self.width)
        h = nn.avg_pool(h, (2, 2), strides=(2, 2))
        h = conv_act(h, 2 * self.width)
        h = jnp.mean(h, axis=(1, 2))
        features = nn.relu(nn.Dense(self.dense_width, dtype=self.dtype)(h)).astype(jnp.float32)
        logits = nn.Dense(self.num_classes, name="head")(dropout_before_head(self, features))
        return (logits, features) if return_features else logits


@MODELS.register("cnn")
def cnn(*, num_classes: int, width: int = 0, dense_width: int = 128,
        batch_norm: bool = True, dtype="float32", dropout: float = 0.0) -> CNN:
    """Small CNN; `width` conv channels (0 = 32); `dtype` of the activations; `dropout`
    rate before the head."""
    check_dropout(dropout)
    if width < 0 or dense_width <= 0:
        raise ValueError(f"width must be >= 0 and dense_width > 0, got {width}, {dense_width}")
    return CNN(num_classes=num_classes, width=width or 32, dense_width=dense_width,
               batch_norm=batch_norm, dtype=activation_dtype(dtype), dropout=float(dropout))
