"""WRN-28-2: the pre-activation wide ResNet of Oliver et al. (2018) and FixMatch.

Zagoruyko & Komodakis' wide ResNet, in the form the SSL literature trains it
(FixMatch's `libml/models.py`, following Oliver et al. 2018):

    conv3x3(16)
    3 groups of 4 pre-activation blocks, widths 16k, 32k, 64k (k = 2), strides 1, 2, 2
    BN -> leaky ReLU(0.1) -> global average pool  = features (64k = 128 for k = 2)
    head: Dense(C)

A block is  BN -> lReLU -> conv3x3(stride) -> BN -> lReLU -> conv3x3, plus the
shortcut: the block's input, or a 1x1 strided conv of it where the width changes.
The very first block takes its shortcut after the activation
("activate_before_residual"). Depth 28 = 1 + 3 groups * 4 blocks * 2 convs + 3 (the
counted 1x1 shortcuts), so (28 - 4) / 6 = 4 blocks per group.

No dropout by default (`dropout` > 0 adds it before the head, for MC-dropout
strategies; crc_jax.models.dropout_before_head), no conv biases (BatchNorm follows every
conv). BatchNorm momentum 0.999
(Flax convention: running = 0.999 * running + 0.001 * batch) and epsilon 1e-3, as in
the TensorFlow reference. Convs are initialized N(0, 2 / (k*k*out_channels))
(He et al., fan-out), the head Glorot-normal, biases zero. About 1.47 M parameters
at C = 10 (tests/test_models.py checks the exact count). `dtype` is the activation
dtype (mixed precision); parameters, BatchNorm statistics, features and logits stay float32.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from crc_jax.models import MODELS, activation_dtype, check_dropout, dropout_before_head

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_BatchNorm = functools.partial(nn.BatchNorm, momentum=0.999, epsilon=1e-3)


def _lrelu(x):
    return nn.leaky_relu(x, negative_slope=0.1)


class _Block(nn.Module):
    """One pre-activation residual block of width `features`."""

    features: int
    stride: int = 1
    activate_before_residual: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        conv = functools.partial(nn.Conv, use_bias=False, kernel_init=_conv_init, padding="SAME",
                                 dtype=self.dtype)
        bn = functools.partial(_BatchNorm, use_running_average=not train, dtype=self.dtype)
        h = _lrelu(bn()(x))
        shortcut = h if self.activate_before_residual else x
        h = conv(self.features, (3, 3), strides=self.stride)(h)
        h = _lrelu(bn()(h))
        h = conv(self.features, (3, 3))(h)
        if x.shape[-1] != self.features:
            shortcut = conv(self.features, (1, 1), strides=self.stride, name="shortcut")(shortcut)
        return shortcut + h


class WideResNet(nn.Module):
    """Wide ResNet with `blocks` blocks per group and widen factor `widen`."""

    num_classes: int
    widen: int = 2
    blocks: int = 4
    dtype: Any = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False):
        h = nn.Conv(16, (3, 3), padding="SAME", use_bias=False, kernel_init=_conv_init,
                    dtype=self.dtype)(jnp.asarray(x, self.dtype))
        for group, width in enumerate((16 * self.widen, 32 * self.widen, 64 * self.widen)):
            for i in range(self.blocks):
                first = i == 0
                h = _Block(width, stride=2 if (first and group > 0) else 1,
                           activate_before_residual=first and group == 0,
                           dtype=self.dtype, name=f"group{group}_block{i}")(h, train)
        h = _lrelu(_BatchNorm(use_running_average=not train, dtype=self.dtype)(h))
        features = jnp.mean(h.astype(jnp.float32), axis=(1, 2))
        logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.xavier_normal(),
                          bias_init=nn.initializers.zeros,
                          name="head")(dropout_before_head(self, features))
        return (logits, features) if return_features else logits


@MODELS.register("wrn28_2")
def wrn28_2(*, num_classes: int, width: int = 0, dtype="float32",
            dropout: float = 0.0) -> WideResNet:
    """WRN-28-k; `width` is the widen factor k (0 = 2, the paper's WRN-28-2); `dtype` of
    the activations; `dropout` rate before the head (0 = the paper's)."""
    check_dropout(dropout)
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width}")
    return WideResNet(num_classes=num_classes, widen=width or 2, dtype=activation_dtype(dtype),
                      dropout=float(dropout))
