"""On-device augmentation: every op against PIL (what the reference RandAugment uses) or a
hand-computed result, and the weak/strong batch functions under jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from crc_jax.data import augment as A

GRAY = 128 / 255  # PIL fills with integer levels; ours is FILL = 0.5 by default
# Enhancements: PIL rounds its degenerate image to integer levels and truncates the blend;
# ours stays in float. Within 1.5 gray levels; a wrong formula is off by tens of levels.
ENHANCE_ATOL = 1.5


@pytest.fixture(scope="module")
def rgb():
    """A 7x9 RGB image (non-square, so rows and columns cannot be swapped unnoticed)."""
    return np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)


def as_float(img):
    return jnp.asarray(img, jnp.float32) / 255.0


def levels(x):
    return np.asarray(x, np.float64) * 255.0


def pil_rgb(img):
    return Image.fromarray(img)


# ------------------------------------------------------------------ pixel-value ops


def test_autocontrast_matches_pil(rgb):
    ours = levels(A.autocontrast(as_float(rgb)))
    ref = np.asarray(ImageOps.autocontrast(pil_rgb(rgb)), np.float64)
    np.testing.assert_allclose(ours, ref, atol=1.0)  # PIL truncates to integer levels
    assert ours.min() == 0.0 and ours.max() == 255.0


def test_autocontrast_leaves_a_flat_channel_alone():
    img = jnp.full((4, 4, 1), 0.3)
    np.testing.assert_allclose(A.autocontrast(img), img)


def test_equalize_matches_pil_exactly():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    img[..., 1] //= 3  # a skewed channel, so equalize really moves it
    ours = levels(A.equalize(as_float(img)))
    ref = np.asarray(ImageOps.equalize(pil_rgb(img)), np.float64)
    np.testing.assert_allclose(ours, ref, atol=1e-3)
    assert np.abs(ours - img).max() > 50


def test_equalize_is_identity_below_256_pixels():
    """PIL's step = (pixels - top bin) // 255 is 0 on an 8x8 image: the lookup is the identity."""
    img = np.random.default_rng(2).integers(0, 256, (8, 8, 1), dtype=np.uint8)
    np.testing.assert_allclose(levels(A.equalize(as_float(img))), img, atol=1e-3)


@pytest.mark.parametrize("threshold", [0, 100, 200])
def test_solarize_matches_pil(rgb, threshold):
    ours = levels(A.solarize(as_float(rgb), threshold / 255.0))
    ref = np.asarray(ImageOps.solarize(pil_rgb(rgb), threshold), np.float64)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


@pytest.mark.parametrize("bits", [1, 3, 4, 8])
def test_posterize_matches_pil(rgb, bits):
    ours = levels(A.posterize(as_float(rgb), bits))
    ref = np.asarray(ImageOps.posterize(pil_rgb(rgb), bits), np.float64)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_posterize_hand_computed():
    """200 = 0b11001000: 2 bits keep 0b11000000 = 192."""
    out = A.posterize(jnp.full((1, 1, 1), 200 / 255), 2)
    assert abs(float(out[0, 0, 0]) * 255 - 192) < 1e-3


@pytest.mark.parametrize("op, enhancer", [
    (A.color, ImageEnhance.Color), (A.contrast, ImageEnhance.Contrast),
    (A.brightness, ImageEnhance.Brightness), (A.sharpness, ImageEnhance.Sharpness)])
@pytest.mark.parametrize("factor", [0.05, 0.6, 1.7])
def test_enhancements_match_pil(rgb, op, enhancer, factor):
    ours = levels(op(as_float(rgb), factor))
    ref = np.asarray(enhancer(pil_rgb(rgb)).enhance(factor), np.float64)
    np.testing.assert_allclose(ours, ref, atol=ENHANCE_ATOL)


@pytest.mark.parametrize("op, enhancer", [
    (A.color, ImageEnhance.Color), (A.contrast, ImageEnhance.Contrast),
    (A.brightness, ImageEnhance.Brightness), (A.sharpness, ImageEnhance.Sharpness)])
def test_enhancements_match_pil_on_grayscale(op, enhancer):
    img = np.random.default_rng(3).integers(0, 256, (6, 5), dtype=np.uint8)
    ours = levels(op(as_float(img)[..., None], 0.4))[..., 0]
    ref = np.asarray(enhancer(Image.fromarray(img)).enhance(0.4), np.float64)
    np.testing.assert_allclose(ours, ref, atol=ENHANCE_ATOL)


def test_brightness_and_contrast_hand_computed():
    img = jnp.array([[[0.2], [0.6]]])  # one row, two pixels, mean 0.4
    np.testing.assert_allclose(A.brightness(img, 0.5)[..., 0], [[0.1, 0.3]], atol=1e-6)
    np.testing.assert_allclose(A.contrast(img, 0.5)[..., 0], [[0.3, 0.5]], atol=1e-6)
    np.testing.assert_allclose(A.brightness(img, 2.0)[..., 0], [[0.4, 1.0]], atol=1e-6)  # clipped


def test_sharpness_hand_computed_center_pixel():
    """A single bright pixel in a 3x3 image: SMOOTH gives 5/13 at the centre, borders stay."""
    img = jnp.zeros((3, 3, 1)).at[1, 1, 0].set(1.0)
    out = A.sharpness(img, 0.0)  # factor 0 = the smoothed image itself
    expected = np.zeros((3, 3))
    expected[1, 1] = 5 / 13
    np.testing.assert_allclose(out[..., 0], expected, atol=1e-6)


# ------------------------------------------------------------------- geometric ops


@pytest.mark.parametrize("degrees", [90, 17, -23, 30])
def test_rotate_matches_pil(rgb, degrees):
    ours = levels(A.rotate(as_float(rgb), degrees, fill=GRAY))
    ref = np.asarray(pil_rgb(rgb).rotate(degrees, fillcolor=(128, 128, 128)), np.float64)
    np.testing.assert_allclose(ours, ref, atol=1e-3)


def test_rotate_square_by_90_is_rot90():
    img = jnp.arange(16.0).reshape(4, 4, 1) / 16
    np.testing.assert_allclose(A.rotate(img, 90.0), jnp.rot90(img, k=1, axes=(0, 1)), atol=1e-6)


# Shear 0.2 is avoided: it puts sample points exactly on pixel edges, where PIL's
# fixed-point arithmetic rounds differently from float.
@pytest.mark.parametrize("shear", [0.3, -0.3, 0.17])
def test_shear_matches_pil(rgb, shear):
    pil = pil_rgb(rgb)
    for op, matrix in ((A.shear_x, (1, shear, 0, 0, 1, 0)), (A.shear_y, (1, 0, 0, shear, 1, 0))):
        ours = levels(op(as_float(rgb), shear, fill=GRAY))
        ref = pil.transform(pil.size, Image.AFFINE, matrix, fillcolor=(128, 128, 128))
        np.testing.assert_allclose(ours, np.asarray(ref, np.float64), atol=1e-3)


@pytest.mark.parametrize("pixels", [2, -3])
def test_translate_matches_pil_and_hand(rgb, pixels):
    pil, x = pil_rgb(rgb), as_float(rgb)
    tx = levels(A.translate_x(x, pixels, fill=GRAY))
    ty = levels(A.translate_y(x, pixels, fill=GRAY))
    ref_x = pil.transform(pil.size, Image.AFFINE, (1, 0, pixels, 0, 1, 0), fillcolor=(128,) * 3)
    ref_y = pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, pixels), fillcolor=(128,) * 3)
    np.testing.assert_allclose(tx, np.asarray(ref_x, np.float64), atol=1e-3)
    np.testing.assert_allclose(ty, np.asarray(ref_y, np.float64), atol=1e-3)
    # By hand: output column j holds input column j + pixels, gray where that is outside.
    hand = np.full(rgb.shape, 128.0)
    for j in range(rgb.shape[1]):
        if 0 <= j + pixels < rgb.shape[1]:
            hand[:, j] = rgb[:, j + pixels]
    np.testing.assert_allclose(tx, hand, atol=1e-3)


def test_cutout_hand_computed():
    img = jnp.zeros((6, 6, 1))
    out = A.cutout(img, jnp.array([1, 4]), 4, fill=1.0)  # rows -1..2 -> 0..2, cols 2..5
    expected = np.zeros((6, 6))
    expected[0:3, 2:6] = 1.0
    np.testing.assert_allclose(out[..., 0], expected)


def test_sizes_scale_with_the_image_side():
    assert (A.translate_pad(32), A.cutout_size(32)) == (4, 16)
    assert (A.translate_pad(8), A.cutout_size(8)) == (1, 4)


# -------------------------------------------------------------------- RandAugment


def test_there_are_the_14_standard_ops():
    assert sorted(A.OP_NAMES) == sorted([
        "identity", "autocontrast", "equalize", "rotate", "solarize", "color", "posterize",
        "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
        "translate_y"])


def test_apply_ops_dispatches_to_the_named_op_with_its_magnitude(rgb):
    """Level m maps to the op's range: rotate 30m degrees, enhancements 0.05 + 0.9m, ..."""
    x = as_float(rgb)
    idx = {name: i for i, name in enumerate(A.OP_NAMES)}
    cases = {
        "rotate": A.rotate(x, -15.0),                  # level 0.5, sign -1
        "brightness": A.brightness(x, 0.5),
        "posterize": A.posterize(x, 6),
        "solarize": A.solarize(x, 0.5),
        "translate_x": A.translate_x(x, -1.0),         # round(-0.5 * 0.3 * 9) = -1
        "shear_y": A.shear_y(x, -0.15),
        "identity": x,
    }
    for name, expected in cases.items():
        out = A.apply_ops(x, jnp.array([idx[name]]), jnp.array([0.5]), jnp.array([-1.0]))
        np.testing.assert_allclose(out, expected, atol=1e-6, err_msg=name)


def test_sample_ops_covers_every_op_and_the_magnitude_range():
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    ops, lv, signs = jax.vmap(A.sample_ops)(keys)
    assert ops.shape == (400, A.NUM_OPS)
    assert set(np.asarray(ops).ravel().tolist()) == set(range(len(A.OP_NAMES)))
    assert 0.0 <= float(lv.min()) < 0.05 and 0.95 < float(lv.max()) < 1.0
    assert set(np.asarray(signs).ravel().tolist()) == {-1.0, 1.0}


# --------------------------------------------------------------- batch functions


def test_weak_translation_is_a_reflect_padded_shift():
    img = jnp.arange(64.0).reshape(1, 8, 8, 1) / 64
    out = A.weak_fn(flip=False)(jax.random.PRNGKey(3), img)[0, ..., 0]
    padded = np.pad(np.asarray(img[0, ..., 0]), 1, mode="reflect")
    windows = [padded[dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)]
    assert any(np.allclose(out, w) for w in windows)


def test_weak_flip_only_when_allowed():
    img = jnp.tile(jnp.arange(32.0)[None, :, None], (32, 1, 1))[None] / 32  # a ramp in x
    batch = jnp.repeat(img, 64, axis=0)
    for flip in (False, True):
        out = A.weak_fn(flip=flip)(jax.random.PRNGKey(0), batch)
        decreasing = np.asarray(out[:, 16, 10, 0] > out[:, 16, 20, 0])
        assert decreasing.any() == flip


def test_strong_fn_jits_vmaps_and_keeps_shape_and_range():
    x = jax.random.uniform(jax.random.PRNGKey(0), (5, 12, 12, 3))
    fn = jax.jit(A.strong_fn(flip=True))
    out = fn(jax.random.PRNGKey(1), x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # Each image has a Cutout square of FILL (6x6, at least its 3x3 quarter when the centre
    # is in a corner), and the images differ from their inputs.
    assert all(np.sum(np.all(np.asarray(o) == A.FILL, axis=-1)) >= 9 for o in out)
    assert not np.allclose(out, x)
    # Same key, same views; another key, other views.
    np.testing.assert_array_equal(out, fn(jax.random.PRNGKey(1), x))
    assert not np.allclose(out, fn(jax.random.PRNGKey(2), x))


def test_point_views_are_gaussian_noise_of_the_given_std():
    x = jnp.zeros((20000, 2))
    weak = A.weak_fn(flip=False, noise_std=0.1)(jax.random.PRNGKey(0), x)
    strong = A.strong_fn(flip=False, noise_std=0.3)(jax.random.PRNGKey(0), x)
    assert abs(float(jnp.std(weak)) - 0.1) < 0.005
    assert abs(float(jnp.std(strong)) - 0.3) < 0.01
