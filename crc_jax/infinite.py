"""Infinite-width NTKs of the project's MLP and CNN (neural-tangents `stax`), for CRC on the
infinite-width kernel (`crc_infinite`).

Parameterization: **NTK**, with W_std = 1 and no bias (b_std = 0). The Flax models use
LeCun-normal kernels (the *standard* parameterization W = q/√fan_in, q of unit variance);
the same network in NTK parameterization computes the same function and shares its NNGP
kernel, and its NTK has one width-independent limit, which `stax.serial(...)` in "ntk"
mode computes: one kernel per architecture, reusable across widths and seeds. BatchNorm
has no stax counterpart (`drop_batch_norm` builds the BN-free twin). The empirical side of
the comparison (the Flax models' NTK in the same coordinates) lives with the study that
uses it, in experiments/ntk_kernels.py.

Trace NTK: neural-tangents' infinite kernel is per output (C-independent; its
`trace_axes` **averages** over classes), while the paper's class trace **sums**:
K̃_inf = C · kernel_fn(x1, x2, "ntk"). Every kernel here is that class-trace sum.

Where: every kernel here is computed in float64 (`in_float64`) inside `float64_context()`,
which puts the work on the host CPU device when JAX's default backend is a TPU (a TPU has
no native float64: it is emulated there, slowly, and some float64 operations are not
implemented) and leaves it on the default device otherwise (CPU, GPU).

CNN covariances: neural-tangents propagates a CNN's full spatial covariance through each
conv with `lax.conv_general_dilated`, which XLA:CPU compiles, in float64, with its own loop
emitter; on AVX-512 CPUs (jaxlib 0.10.2) that code reads one element before its input
buffer and segfaults when the buffer starts a memory mapping (docs/upstream_segfault.md).
The CNN's `kernel_fn` here computes the same convolution as matrix products
(`covariance_conv`), which compile to dots with no conditional loads.

neural-tangents is imported lazily (through crc_jax.runtime._nt_compat), inside functions.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial, wraps
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


log = logging.getLogger(__name__)

KERNEL_BATCH = 1024       # most rows per neural-tangents kernel call
KERNEL_BYTES = 1 << 28    # intermediates of one neural-tangents kernel call (kernel_batch_size)


# --------------------------------------------------------------------------- stax counterparts

def stax_counterpart(model: nn.Module, *, drop_batch_norm: bool = False):
    """(init_fn, apply_fn, kernel_fn) of the stax network matching a Flax MLP or CNN.

    Same layers, ReLU activations, pooling and head, in NTK parameterization with
    W_std = 1 and no bias (see module docstring). `kernel_fn` ignores the widths (it is
    the infinite-width limit); the CNN's convolves covariances with `covariance_conv`
    (module docstring, "CNN covariances"). `apply_fn` at the stax `init_fn`'s widths
    computes the Flax model's function when the Flax kernels are q/√fan_in (tests check this).
    A CNN with BatchNorm raises unless `drop_batch_norm`, which builds its BN-free twin.
    """
    from crc_jax.runtime._nt_compat import import_neural_tangents
    stax = import_neural_tangents().stax

    from crc_jax.models.cnn import CNN
    from crc_jax.models.mlp import MLP

    def dense(width):
        return stax.Dense(width, W_std=1.0, b_std=None, parameterization="ntk")

    if isinstance(model, MLP):
        layers = [stax.Flatten()]
        for _ in range(model.depth):
            layers += [dense(model.width), stax.Relu()]
        return stax.serial(*layers, dense(model.num_classes))
    if isinstance(model, CNN):
        if model.batch_norm and not drop_batch_norm:
            raise ValueError("BatchNorm has no infinite-width stax counterpart: build the CNN "
                             "with batch_norm=False (or pass drop_batch_norm=True)")

        def conv(channels):
            return stax.Conv(channels, (3, 3), padding="SAME", W_std=1.0, b_std=None,
                             parameterization="ntk")

        init_fn, apply_fn, kernel_fn = stax.serial(
            conv(model.width), stax.Relu(), conv(model.width), stax.Relu(),
            stax.AvgPool((2, 2), strides=(2, 2), padding="VALID"),
            conv(2 * model.width), stax.Relu(), stax.GlobalAvgPool(),
            dense(model.dense_width), stax.Relu(), dense(model.num_classes))
        return init_fn, apply_fn, with_matmul_covariance_conv(kernel_fn)
    raise ValueError(f"no stax counterpart for {type(model).__name__}; known: MLP, CNN")


# --------------------------------------------------------------------------- CNN covariance convolution

PAIR_OPERATOR_MAX = 256   # most spatial pairs H·H' convolved by one (H·H', O·O') matrix


def window_selection(size: int, filter_size: int, stride: int, pad_lo: int, out_size: int) -> np.ndarray:
    """(filter_size, out_size, size) 0/1 array: [a, i, h] = 1 where h = stride·i + a − pad_lo.

    Output position i of a window of `filter_size` taps reads input h through tap a; taps
    that fall in the zero padding select nothing (their row is zero).
    """
    sel = np.zeros((filter_size, out_size, size))
    a, i = np.meshgrid(np.arange(filter_size), np.arange(out_size), indexing="ij")
    h = stride * i + a - pad_lo
    inside = (h >= 0) & (h < size)
    sel[a[inside], i[inside], h[inside]] = 1.0
    return sel


def covariance_conv(lhs, rhs, strides, padding: str):
    """`lax.conv_general_dilated(lhs, rhs, strides, padding)` for one channel (NCHW, OIHW),
    as matrix products: the convolution neural-tangents applies to covariances.

    lhs (B, 1, H1, H2), rhs (1, 1, f1, f2), padding "SAME" or "VALID". With S1, S2 the
    tap selections of each axis (`window_selection`), out_b = Σ_{a,a'} r[a,a'] S1_a L_b S2_a'ᵀ:
    up to PAIR_OPERATOR_MAX spatial pairs as one product with the (H1·H2, O1·O2) operator,
    beyond it as two products, one per axis. Dots only: XLA compiles no conditional load.
    """
    from jax import lax

    b, c, h1, h2 = lhs.shape
    o, i, f1, f2 = rhs.shape
    if (c, o, i) != (1, 1, 1):
        raise ValueError(f"covariance_conv takes one channel, got lhs {lhs.shape}, rhs {rhs.shape}")
    (lo1, hi1), (lo2, hi2) = lax.padtype_to_pads((h1, h2), (f1, f2), strides, padding)
    o1 = (h1 + lo1 + hi1 - f1) // strides[0] + 1
    o2 = (h2 + lo2 + hi2 - f2) // strides[1] + 1
    s1 = jnp.asarray(window_selection(h1, f1, strides[0], lo1, o1), lhs.dtype)
    s2 = jnp.asarray(window_selection(h2, f2, strides[1], lo2, o2), lhs.dtype)
    r = rhs[0, 0].astype(lhs.dtype)
    exact = lax.Precision.HIGHEST
    if h1 * h2 <= PAIR_OPERATOR_MAX:
        op = jnp.einsum("aA,aih,Ajk->hkij", r, s1, s2, precision=exact).reshape(h1 * h2, o1 * o2)
        out = jnp.matmul(lhs.reshape(b, h1 * h2), op, precision=exact)
    else:
        right = jnp.einsum("aA,Ajk->ajk", r, s2, precision=exact).reshape(f1 * o2, h2)
        t = jnp.matmul(lhs.reshape(b * h1, h2), right.T, precision=exact).reshape(b, h1, f1, o2)
        out = jnp.einsum("bhaj,aih->bij", t, s1, precision=exact)
    return out.reshape(b, 1, o1, o2)


@contextlib.contextmanager
def matmul_covariance_conv():
    """neural-tangents' full-spatial covariance convolution through `covariance_conv`
    while the context is open (its kernel functions look the helper up when traced).

    Circular padding keeps neural-tangents' own code (the project's CNN pads "SAME").
    """
    from crc_jax.runtime._nt_compat import import_neural_tangents
    import_neural_tangents()
    from neural_tangents._src.stax import linear

    original = linear._conv_kernel_full_spatial_shared

    def shared(lhs, filter_shape, strides, padding, batch_ndim):
        if lhs is None or lhs.ndim == 0 or padding == linear.Padding.CIRCULAR:
            return original(lhs, filter_shape, strides, padding, batch_ndim)
        return linear._conv_kernel_full_spatial_loop(lhs, filter_shape, strides, padding,
                                                     covariance_conv, lambda channels: 1)

    linear._conv_kernel_full_spatial_shared = shared
    try:
        yield
    finally:
        linear._conv_kernel_full_spatial_shared = original


def with_matmul_covariance_conv(kernel_fn: Callable) -> Callable:
    """`kernel_fn` traced (and run, when not jitted) inside `matmul_covariance_conv()`."""
    @wraps(kernel_fn)
    def kernel(*args, **kwargs):
        with matmul_covariance_conv():
            return kernel_fn(*args, **kwargs)
    return kernel


def kernel_batch_size(model: nn.Module, image_shape, *, budget_bytes: int = KERNEL_BYTES) -> int:
    """Rows b (a power of two) of the (b, b) blocks one kernel call may take within `budget_bytes`.

    The MLP's kernel holds a few (b, b) arrays; the CNN's, whose pooling needs the full
    spatial covariance, a few (b, b, H, W, H, W) float64 arrays (about 4 at once).
    """
    from crc_jax.models.cnn import CNN
    spatial = int(np.prod(image_shape[:-1])) ** 2 if isinstance(model, CNN) else 1
    rows = int(np.clip(np.sqrt(budget_bytes / (4 * 8 * spatial)), 1, KERNEL_BATCH))
    return 1 << (rows.bit_length() - 1)    # a power of two, like the blocks `pad_rows` makes


def infinite_kernel_fn(model: nn.Module, *, drop_batch_norm: bool = False) -> Callable:
    """(x1, x2) -> per-output infinite-width NTK (n1, n2) of `model`'s architecture, jitted."""
    _, _, kernel_fn = stax_counterpart(model, drop_batch_norm=drop_batch_norm)
    return jax.jit(partial(kernel_fn, get="ntk"))


def infinite_trace_ntk(kernel_fn: Callable, x1, x2=None, *, num_classes: int,
                       batch_size: int = 256) -> np.ndarray:
    """K̃_inf(x1, x2) = C · kernel_fn(x1, x2), built in (batch, batch) blocks.

    `kernel_fn` is `infinite_kernel_fn(model)`; x2=None means x1 (one triangle computed).
    Computed in float64 (`in_float64`). The default batch suits the MLP; give a CNN
    `kernel_batch_size(model, image_shape)`.
    """
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = len(x1), len(x2)
    out = np.empty((n1, n2))
    with float64_context():
        for i in range(0, n1, batch_size):
            for j in range(0, n2, batch_size):
                if symmetric and j < i:
                    out[i:i + batch_size, j:j + batch_size] = out[j:j + batch_size, i:i + batch_size].T
                    continue
                a, b = x1[i:i + batch_size], x2[j:j + batch_size]
                block = kernel_fn(in_float64(pad_rows(a, batch_size)), in_float64(pad_rows(b, batch_size)))
                out[i:i + len(a), j:j + len(b)] = np.asarray(block)[:len(a), :len(b)]
    return num_classes * out


def pad_rows(x, cap: int):
    """x with its first row repeated up to the next power of two (at most `cap`) rows.

    Kernel calls then take one of a few shapes, so jit compiles each once (a CNN
    kernel's compile costs seconds), for at most 2× the pairs.
    """
    n = len(x)
    target = min(max(cap, n), 1 << max(0, (n - 1).bit_length()))
    return x if target == n else np.concatenate([x, np.repeat(x[:1], target - n, axis=0)])


def default_platform() -> str:
    """JAX's default backend ("cpu", "gpu", "tpu"): what `float64_device` decides on."""
    return jax.default_backend()


def float64_device():
    """The device float64 kernels run on: the host CPU's first device when the default
    backend is a TPU, else None (the default device). None too, with a warning, on a TPU
    whose process started JAX without its CPU backend (JAX_PLATFORMS=tpu)."""
    if default_platform() != "tpu":
        return None
    try:
        return jax.devices("cpu")[0]
    except RuntimeError as err:
        log.warning("float64 kernels stay on the TPU (emulated float64): no CPU backend (%s)", err)
        return None


@contextlib.contextmanager
def float64_context():
    """`jax.enable_x64(True)` on `float64_device()`: arrays made inside (`in_float64`) and
    the jitted kernels that take them run there."""
    device = float64_device()
    placed = contextlib.nullcontext() if device is None else jax.default_device(device)
    with jax.enable_x64(True), placed:
        yield


def in_float64(x):
    """x as a float64 array on the default device (call inside `float64_context()`).

    neural-tangents kernels are computed in float64: the ReLU kernel takes arccos of the
    correlation ρ of two inputs, and in float32 a rounding of an image's correlation
    with itself to 1 − ε (which jit-fused code does for some images) becomes an error of
    √(2ε) ≈ 5e-4 in the angle, about 1e-4 relative on the kernel's diagonal: enough to
    give a duplicated image a positive λmin. In float64 it is below 1e-7.
    """
    return jnp.asarray(np.asarray(x, np.float64))
