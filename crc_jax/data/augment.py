"""On-device augmentation: pure JAX, jit- and vmap-able, run inside the train step.

Images are HWC (one image) or NHWC (a batch), float32 with values in [0, 1]; the
strong ops (solarize, posterize, equalize, ...) assume that range, so a data set that
wants mean/std normalisation must apply it after augmentation (e.g. in the model).

weak   = random horizontal flip (when the data set allows it) + reflect-padded random
         translation of up to 4 px at 32x32, scaled with the image side
         (FixMatch, Sohn et al. 2020, §2.3).
strong = weak, then RandAugment with 2 ops drawn uniformly from the 14 below, each with
         a magnitude drawn uniformly from its range (FixMatch's RandAugment variant,
         ranges of its Table 12), then Cutout of half the image side (16 px at 32x32).

Each op reproduces PIL's definition (the reference implementations build RandAugment
on PIL), in float instead of uint8: enhancements blend with a "degenerate" image,
out = degenerate + factor * (image - degenerate), clipped to [0, 1]; geometric ops
sample the input at floor(A (p + 1/2) + c) for output pixel p, as PIL's nearest-
neighbour affine transform does, and fill what falls outside with gray (FILL).

Inputs that are not images (2-D points, shape (N, D)) have no RandAugment: their weak
and strong views are Gaussian noise of a small and a larger standard deviation.
"""

from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp

FILL = 0.5  # gray, for pixels that geometric ops and Cutout leave empty
NUM_OPS = 2  # RandAugment ops per image

# ----------------------------------------------------------------------------- weak


def translate_pad(side: int) -> int:
    """Translation range in pixels: 4 at 32x32, scaled with the image side, at least 1."""
    return max(1, round(side * 4 / 32))


def weak_image(key, image, *, flip: bool, translate: int = 0):
    """One HWC image: maybe flip left-right, then a random reflect-padded translation of
    up to `translate` px (0: translate_pad of the side)."""
    k_flip, k_shift = jax.random.split(key)
    if flip:
        image = jnp.where(jax.random.bernoulli(k_flip), pix.flip_left_right(image), image)
    pad = int(translate) or translate_pad(image.shape[0])
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    dy, dx = jax.random.randint(k_shift, (2,), 0, 2 * pad + 1)
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), image.shape)


# ------------------------------------------------------------------- pixel-value ops


def _levels(image):
    """[0, 1] floats -> integer gray levels 0..255 (what PIL's lookup tables index)."""
    return jnp.clip(jnp.round(image * 255.0), 0, 255).astype(jnp.int32)


def _blend(degenerate, image, factor):
    """PIL's Image.blend(degenerate, image, factor), clipped to [0, 1]."""
    return jnp.clip(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _grayscale(image):
    """Luma (H, W, 1) of an RGB image (ITU-R 601, as PIL's "L"); a 1-channel image as is."""
    if image.shape[-1] == 1:
        return image
    return pix.rgb_to_grayscale(image, keep_dims=False)  # (H, W, 1)


def identity(image):
    return image


def autocontrast(image):
    """Stretch each channel so its darkest pixel maps to 0 and its brightest to 1."""
    lo = jnp.min(image, axis=(0, 1), keepdims=True)
    hi = jnp.max(image, axis=(0, 1), keepdims=True)
    span = hi - lo
    stretched = (image - lo) / jnp.where(span > 0, span, 1.0)
    return jnp.where(span > 0, stretched, image)


def _equalize_channel(levels):
    """PIL's ImageOps.equalize lookup for one channel of integer levels (any shape).

    h = histogram, step = (sum(h) - h[last non-empty bin]) // 255,
    lut[i] = (step // 2 + sum_{j < i} h[j]) // step; the identity when step = 0
    (a flat channel, or fewer than 256 pixels outside the top bin).
    """
    flat = levels.reshape(-1)
    hist = jnp.zeros(256, jnp.int32).at[flat].add(1)
    last_bin = 255 - jnp.argmax(hist[::-1] > 0)
    step = (flat.size - hist[last_bin]) // 255
    before = jnp.cumsum(hist) - hist
    lut = jnp.clip((step // 2 + before) // jnp.maximum(step, 1), 0, 255)
    return jnp.where(step > 0, lut[levels], levels)


def equalize(image):
    """Histogram equalization per channel, on 256 gray levels (PIL's ImageOps.equalize)."""
    levels = _levels(image)
    out = jax.vmap(_equalize_channel, in_axes=-1, out_axes=-1)(levels)
    return out.astype(image.dtype) / 255.0


def solarize(image, threshold):
    """Invert (x -> 1 - x) every value at or above `threshold` (dm-pix's solarize)."""
    return pix.solarize(image, threshold)


def posterize(image, bits):
    """Keep the top `bits` bits (1..8) of each 8-bit level (PIL's ImageOps.posterize)."""
    shift = 8 - jnp.asarray(bits, jnp.int32)
    levels = jnp.left_shift(jnp.right_shift(_levels(image), shift), shift)
    return levels.astype(image.dtype) / 255.0


def color(image, factor):
    """Saturation: blend with the grayscale image (PIL's ImageEnhance.Color)."""
    return _blend(_grayscale(image), image, factor)


def contrast(image, factor):
    """Blend with a flat image at the mean luma (PIL's ImageEnhance.Contrast)."""
    return _blend(jnp.mean(_grayscale(image)), image, factor)


def brightness(image, factor):
    """Blend with black (PIL's ImageEnhance.Brightness): factor * image, clipped."""
    return _blend(jnp.zeros_like(image), image, factor)


def sharpness(image, factor):
    """Blend with PIL's SMOOTH-filtered image (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]] / 13,
    border pixels kept as they are). Nine shifted slices: cheaper than a depthwise conv."""
    h, w, _ = image.shape
    window = sum(image[dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3))
    smooth = (window + 4.0 * image[1:h - 1, 1:w - 1]) / 13.0
    return _blend(image.at[1:h - 1, 1:w - 1].set(smooth), image, factor)


# ------------------------------------------------------------------- geometric ops


def affine(image, matrix, *, fill=FILL):
    """PIL's Image.transform(AFFINE, (a, b, c, d, e, f), NEAREST).

    Output pixel (x, y) (column, row) takes the input pixel at
    (floor(a (x+½) + b (y+½) + c), floor(d (x+½) + e (y+½) + f)); outside -> `fill`.
    """
    a, b, c, d, e, f = (matrix[i] for i in range(6))
    h, w, _ = image.shape
    ys, xs = jnp.meshgrid(jnp.arange(h) + 0.5, jnp.arange(w) + 0.5, indexing="ij")
    x_in = jnp.floor(a * xs + b * ys + c).astype(jnp.int32)
    y_in = jnp.floor(d * xs + e * ys + f).astype(jnp.int32)
    inside = (x_in >= 0) & (x_in < w) & (y_in >= 0) & (y_in < h)
    sampled = image[jnp.clip(y_in, 0, h - 1), jnp.clip(x_in, 0, w - 1)]
    return jnp.where(inside[..., None], sampled, jnp.asarray(fill, image.dtype))


def rotate(image, degrees, *, fill=FILL):
    """Rotate counter-clockwise by `degrees` about the image centre (PIL's Image.rotate)."""
    h, w, _ = image.shape
    theta = -jnp.deg2rad(degrees)
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    cx, cy = w / 2.0, h / 2.0
    c = cos * -cx + sin * -cy + cx
    f = -sin * -cx + cos * -cy + cy
    return affine(image, jnp.stack([cos, sin, c, -sin, cos, f]), fill=fill)


def shear_x(image, shear, *, fill=FILL):
    """Output (x, y) <- input (x + shear * y, y)."""
    return affine(image, jnp.stack([1.0, shear, 0.0, 0.0, 1.0, 0.0]), fill=fill)


def shear_y(image, shear, *, fill=FILL):
    """Output (x, y) <- input (x, shear * x + y)."""
    return affine(image, jnp.stack([1.0, 0.0, 0.0, shear, 1.0, 0.0]), fill=fill)


def translate_x(image, pixels, *, fill=FILL):
    """Output (x, y) <- input (x + pixels, y): content moves left by `pixels`."""
    return affine(image, jnp.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0]), fill=fill)


def translate_y(image, pixels, *, fill=FILL):
    """Output (x, y) <- input (x, y + pixels): content moves up by `pixels`."""
    return affine(image, jnp.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels]), fill=fill)


def cutout(image, center, size: int, *, fill=FILL):
    """Fill the size x size square whose top-left corner is center - size // 2 (clipped)."""
    h, w, _ = image.shape
    top, left = center[0] - size // 2, center[1] - size // 2
    rows = (jnp.arange(h) >= top) & (jnp.arange(h) < top + size)
    cols = (jnp.arange(w) >= left) & (jnp.arange(w) < left + size)
    box = rows[:, None] & cols[None, :]
    return jnp.where(box[..., None], jnp.asarray(fill, image.dtype), image)


# -------------------------------------------------------------------- RandAugment


def _signed(level, sign, bound):
    return level * sign * bound


def _pixels(level, sign, side):
    """A translation of up to 30% of the side, rounded to whole pixels."""
    return jnp.round(_signed(level, sign, 0.3 * side))


# (name, fn(image, level in [0, 1], sign in {-1, +1}) -> image), magnitude ranges from
# FixMatch's Table 12: enhancement factors in [0.05, 0.95], posterize to 4..8 bits,
# rotate ±30°, shear ±0.3, solarize threshold in [0, 1], translate ±30% of the side.
RAND_AUGMENT_OPS = (
    ("identity", lambda im, m, s: identity(im)),
    ("autocontrast", lambda im, m, s: autocontrast(im)),
    ("equalize", lambda im, m, s: equalize(im)),
    ("rotate", lambda im, m, s: rotate(im, _signed(m, s, 30.0))),
    ("solarize", lambda im, m, s: solarize(im, m)),
    ("color", lambda im, m, s: color(im, 0.05 + 0.9 * m)),
    ("posterize", lambda im, m, s: posterize(im, 4 + jnp.round(4 * m).astype(jnp.int32))),
    ("contrast", lambda im, m, s: contrast(im, 0.05 + 0.9 * m)),
    ("brightness", lambda im, m, s: brightness(im, 0.05 + 0.9 * m)),
    ("sharpness", lambda im, m, s: sharpness(im, 0.05 + 0.9 * m)),
    ("shear_x", lambda im, m, s: shear_x(im, _signed(m, s, 0.3))),
    ("shear_y", lambda im, m, s: shear_y(im, _signed(m, s, 0.3))),
    ("translate_x", lambda im, m, s: translate_x(im, _pixels(m, s, im.shape[1]))),
    ("translate_y", lambda im, m, s: translate_y(im, _pixels(m, s, im.shape[0]))),
)
OP_NAMES = tuple(name for name, _ in RAND_AUGMENT_OPS)


def sample_ops(key, num_ops: int = NUM_OPS):
    """Draw `num_ops` (op index, level in [0, 1), sign in {-1, +1}) triples, uniformly."""
    k_op, k_level, k_sign = jax.random.split(key, 3)
    ops = jax.random.randint(k_op, (num_ops,), 0, len(RAND_AUGMENT_OPS))
    levels = jax.random.uniform(k_level, (num_ops,))
    signs = jnp.where(jax.random.bernoulli(k_sign, shape=(num_ops,)), 1.0, -1.0)
    return ops, levels, signs


def apply_ops(image, ops, levels, signs):
    """Apply the drawn ops in order; `lax.switch` picks each op's branch.

    A scan over the ops, so the 14 branches are compiled once, not once per op.
    """
    branches = [fn for _, fn in RAND_AUGMENT_OPS]

    def body(im, op):
        return jax.lax.switch(op[0], branches, im, op[1], op[2]), None

    image, _ = jax.lax.scan(body, image, (ops, levels, signs))
    return jnp.clip(image, 0.0, 1.0)


def rand_augment(key, image, *, num_ops: int = NUM_OPS):
    """RandAugment on one HWC image: `num_ops` uniformly drawn ops, random magnitudes."""
    return apply_ops(image, *sample_ops(key, num_ops))


def cutout_size(side: int) -> int:
    """Cutout square side: half the image side (16 px at 32x32), at least 1."""
    return max(1, side // 2)


def strong_image(key, image, *, flip: bool, num_ops: int = NUM_OPS):
    """One HWC image: weak, then RandAugment, then Cutout at a uniformly drawn centre."""
    k_weak, k_ra, k_cut = jax.random.split(key, 3)
    image = weak_image(k_weak, image, flip=flip)
    image = rand_augment(k_ra, image, num_ops=num_ops)
    h, w, _ = image.shape
    center = jax.random.randint(k_cut, (2,), 0, jnp.array([h, w]))
    return cutout(image, center, cutout_size(min(h, w)))


# ---------------------------------------------------------------- batch functions


def _noise(key, x, std):
    return x + std * jax.random.normal(key, x.shape, x.dtype)


def weak_fn(*, flip: bool, noise_std: float = 0.05, translate: int = 0):
    """(key, batch) -> weakly augmented batch; images (N,H,W,C) or points (N,D).
    `translate`: largest shift in pixels (0: 4 px at 32x32, scaled with the side)."""

    def apply(key, x):
        if x.ndim == 2:
            return _noise(key, x, noise_std)
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(lambda k, im: weak_image(k, im, flip=flip, translate=translate))(keys, x)

    return apply


def strong_fn(*, flip: bool, noise_std: float = 0.2, num_ops: int = NUM_OPS):
    """(key, batch) -> strongly augmented batch; points get Gaussian noise of `noise_std`."""

    def apply(key, x):
        if x.ndim == 2:
            return _noise(key, x, noise_std)
        keys = jax.random.split(key, x.shape[0])
        return jax.vmap(lambda k, im: strong_image(k, im, flip=flip, num_ops=num_ops))(keys, x)

    return apply


def identity_fn(key, x):
    """(key, batch) -> batch: no augmentation."""
    del key
    return x

