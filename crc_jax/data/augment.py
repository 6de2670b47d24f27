"""On-device augmentation: pure JAX, jit- and vmap-able, run inside the train step.

weak = random horizontal flip (when the data set allows it) + reflect-padded random
translation of up to 4 px at 32x32 (scaled with the image side). Inputs that are not
images (2-D points, shape (N, D)) get small Gaussian noise instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def translate_pad(side: int) -> int:
    """Translation range in pixels: 4 at 32x32, scaled with the image side, at least 1."""
    return max(1, round(side * 4 / 32))


def weak_image(key, image, *, flip: bool):
    """One HWC image: maybe flip left-right, then a random reflect-padded translation."""
    k_flip, k_shift = jax.random.split(key)
    if flip:
        image = jnp.where(jax.random.bernoulli(k_flip), image[:, ::-1, :], image)
    pad = translate_pad(image.shape[0])
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy, dx = jax.random.randint(k_shift, (2,), 0, 2 * pad + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), image.shape)


def weak_fn(*, flip: bool, noise_std: float = 0.05):
    """(key, batch) -> weakly augmented batch; images (N,H,W,C) or points (N,D)."""

    def apply(key, x):
        if x.ndim == 2:
            return x + noise_std * jax.random.normal(key, x.shape, x.dtype)
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(lambda k, im: weak_image(k, im, flip=flip))(keys, x)

    return apply
