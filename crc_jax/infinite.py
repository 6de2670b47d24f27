"""Infinite-width NTKs of the project's MLP and CNN (neural-tangents `stax`), and the
empirical NTK of the finite Flax models in the same coordinates, to compare the two.

Parameterization: **NTK**, with W_std = 1 and no bias (b_std = 0).
  The Flax models use LeCun-normal kernels (weights of variance 1/fan_in, a truncated
  normal; the limit depends on the variance only) and zero biases: the *standard*
  parameterization W = q/√fan_in, q of unit variance. The same network in NTK
  parameterization, z = (1/√fan_in)·q·x, computes the same function at every
  parameter point and has the same initial distribution, so the two share their
  infinite-width NNGP kernel. Their NTKs differ: the NTK is taken w.r.t. q, i.e.

      K_ntk = Σ_layers (1/fan_in_l) · J_{W_l} J_{W_l}ᵀ,

  whereas the standard NTK Σ_l J_{W_l} J_{W_l}ᵀ grows ∝ width (neural-tangents'
  "standard" kernel_fn is itself width-dependent: no single limit to converge to).
  We compare in NTK parameterization because (a) it has one width-independent limit,
  which `stax.serial(...)` in "ntk" mode computes and which CRC-on-the-infinite-kernel
  (crc_infinite) needs to be one kernel per architecture, reusable across widths and
  seeds; (b) ‖K_emp − K_inf‖/‖K_inf‖ then falls like width^−½ at initialization
  (Jacot et al. 2018; Lee et al. 2019), the rate tests/test_infinite.py checks.
  The empirical side needs no second Flax model: it is the Flax model's NTK taken
  w.r.t. q = √fan_in·W (`ntk_coordinates`). Zero-initialized biases with b_std = 0
  stay zero and are not differentiated (training in these coordinates leaves them
  at zero too). BatchNorm has no stax counterpart: comparisons use `batch_norm=False`.

Trace NTK: neural-tangents' infinite kernel is per output (C-independent; its
`trace_axes` **averages** over classes), while the paper's class trace **sums**:
K̃_inf = C · kernel_fn(x1, x2, "ntk"). Every kernel here is that class-trace sum.

neural-tangents (which pulls TensorFlow) is imported lazily, inside functions.
"""

from __future__ import annotations

import dataclasses
import logging
from functools import partial
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crc_jax import ntk

log = logging.getLogger(__name__)

KERNEL_BATCH = 1024       # most rows per neural-tangents kernel call
KERNEL_BYTES = 1 << 28    # intermediates of one neural-tangents kernel call (kernel_batch_size)
JACOBIAN_BYTES = 1 << 30  # per-sample Jacobians held at once by the generic empirical NTK


# --------------------------------------------------------------------------- stax counterparts

def stax_counterpart(model: nn.Module, *, drop_batch_norm: bool = False):
    """(init_fn, apply_fn, kernel_fn) of the stax network matching a Flax MLP or CNN.

    Same layers, ReLU activations, pooling and head, in NTK parameterization with
    W_std = 1 and no bias (see module docstring). `kernel_fn` ignores the widths (it is
    the infinite-width limit); `apply_fn` at the stax `init_fn`'s widths computes the
    Flax model's function when the Flax kernels are q/√fan_in (tests check this).
    A CNN with BatchNorm raises unless `drop_batch_norm`, which builds its BN-free twin.
    """
    from crc_jax._nt_compat import import_neural_tangents
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

        return stax.serial(
            conv(model.width), stax.Relu(), conv(model.width), stax.Relu(),
            stax.AvgPool((2, 2), strides=(2, 2), padding="VALID"),
            conv(2 * model.width), stax.Relu(), stax.GlobalAvgPool(),
            dense(model.dense_width), stax.Relu(), dense(model.num_classes))
    raise ValueError(f"no stax counterpart for {type(model).__name__}; known: MLP, CNN")


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
    with jax.enable_x64(True):
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


def in_float64(x):
    """x as a float64 device array (call inside `jax.enable_x64(True)`).

    neural-tangents kernels are computed in float64: the ReLU kernel takes arccos of the
    correlation ρ of two inputs, and in float32 a rounding of an image's correlation
    with itself to 1 − ε (which jit-fused code does for some images) becomes an error of
    √(2ε) ≈ 5e-4 in the angle, about 1e-4 relative on the kernel's diagonal: enough to
    give a duplicated image a positive λmin. In float64 it is below 1e-7.
    """
    return jnp.asarray(np.asarray(x, np.float64))


# --------------------------------------------------------------------------- empirical, NTK coordinates

def _is_kernel(path: tuple) -> bool:
    return bool(path) and path[-1] == "kernel"


def _fan_in(kernel) -> int:
    """LeCun fan-in of a Flax kernel: all axes but the last (Dense (in, out), Conv (h, w, in, out))."""
    return int(np.prod(kernel.shape[:-1]))


def _scale_kernels(tree, power: float):
    def leaf(path, v):
        names = tuple(ntk._key_name(k) for k in path)
        return v * _fan_in(v) ** power if _is_kernel(names) else v
    return jax.tree_util.tree_map_with_path(leaf, tree)


def ntk_coordinates(params):
    """q: the Flax params with every kernel multiplied by √fan_in (biases as they are).

    The Flax function of `standard_coordinates(q)` is the NTK-parameterized network of q.
    """
    return _scale_kernels(params, 0.5)


def standard_coordinates(q):
    """The Flax params of NTK coordinates q: kernels divided by √fan_in."""
    return _scale_kernels(q, -0.5)


def kernels_only(tree):
    """`tree` with every non-kernel leaf (biases) zeroed: gradients for b_std = 0."""
    return jax.tree_util.tree_map_with_path(
        lambda p, v: v if _is_kernel(tuple(ntk._key_name(k) for k in p)) else jnp.zeros_like(v), tree)


def empirical_trace_ntk(model: nn.Module, params, x1, x2=None, *,
                        parameterization: str = "ntk",
                        jacobian_bytes: int = JACOBIAN_BYTES) -> np.ndarray:
    """Class-trace empirical NTK K̃ = Σ_c K̂_cc (float64) of a Flax model without BatchNorm.

    parameterization "ntk": w.r.t. the kernels in NTK coordinates (module docstring);
    "standard": w.r.t. all Flax parameters as they are (kernels and biases).
    Dense-only models (the MLP) take the per-layer factorized path, n1·n2·C·Σwidths
    flops instead of the Jacobian contraction's n1·n2·C·P; other models use
    `crc_jax.ntk.empirical_ntk` with Jacobian batches of up to `jacobian_bytes` (the
    fewer batches, the fewer Jacobians it recomputes).
    """
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    x1 = jnp.asarray(x1)
    layers = _dense_layers(model, params, x1[:1])
    if layers is not None:
        biased = None if parameterization == "ntk" else tuple(n for n, b in layers.items() if b)
        k = _dense_trace_ntk(model, params, x1, None if x2 is None else jnp.asarray(x2),
                             biased=biased)
        return np.asarray(k, np.float64)
    x2 = None if x2 is None else jnp.asarray(x2)
    if parameterization == "standard":
        f, p, subset = FlaxApply(model), params, "all"
    else:
        f, p, subset = FlaxApply(model, ntk_coordinates=True), ntk_coordinates(params), _is_kernel
    batch = ntk.jacobian_batch_size(f, p, x1, subset=subset, budget_bytes=jacobian_bytes)
    return np.asarray(ntk.empirical_ntk(f, p, x1, x2, subset=subset, batch_size=batch), np.float64)


@dataclasses.dataclass(frozen=True)
class FlaxApply:
    """(params, x) -> logits of a Flax model; with ntk_coordinates, params are q.

    A hashable value (not a closure), so jitted kernels compiled for one model are
    reused by every later call with an equal model.
    """

    model: nn.Module
    ntk_coordinates: bool = False

    def __call__(self, params, x):
        p = standard_coordinates(params) if self.ntk_coordinates else params
        return self.model.apply({"params": p}, x)


# --------------------------------------------------------------------------- Dense-only fast path

def _run_dense(model, params, x, eps=None):
    """Forward pass recording each nn.Dense call: (logits, inputs, outputs, calls).

    `eps` (name -> array) is added to the Dense outputs: the gradient w.r.t. it is
    ∂f/∂(layer output). Names are the module paths joined by "/"; `calls` lists
    (name, has_bias) in call order.
    """
    inputs, outputs, calls = {}, {}, []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, nn.Dense):
            name = "/".join(context.module.path)
            calls.append((name, bool(context.module.use_bias)))
            inputs[name] = args[0]
            if eps is not None:
                out = out + eps[name]
            outputs[name] = out
        return out

    with nn.intercept_methods(interceptor):
        logits = model.apply({"params": params}, x)
    return logits, inputs, outputs, calls


def _dense_layers(model, params, x) -> Optional[dict]:
    """{Dense layer name: has bias} when every parameter belongs to a Dense layer called
    once per forward pass on (n, d) inputs (the fast path's premise), else None."""
    calls = []

    def run():
        _, inputs, _, found = _run_dense(model, params, x)
        calls.extend(found)
        return inputs

    inputs = jax.eval_shape(run)
    names = [name for name, _ in calls]
    owners = {"/".join(p[:-1]) for p in ntk.parameter_paths(params)}
    if len(set(names)) != len(names) or owners != set(names) or any(v.ndim != 2 for v in inputs.values()):
        return None
    return dict(calls)


@partial(jax.jit, static_argnums=(0,), static_argnames=("biased",))
def _dense_trace_ntk(model, params, x1, x2, *, biased: Optional[tuple]):
    """Σ_l s_l (A1_l A2_lᵀ [+ 1]) ∘ Σ_c Δ1_lc Δ2_lcᵀ over Dense layers l (x2=None: x1).

    A_l: the layer's inputs (n, fan_in); Δ_lc = ∂f_c/∂(layer output), (n, out), one
    sample at a time since samples do not interact (no BatchNorm). ∂f_c/∂W = a ⊗ δ_c,
    so K_W(x, x') = (a·a')(Σ_c δ_c·δ'_c), and a bias adds Σ_c δ_c·δ'_c. biased=None:
    NTK coordinates, W's term scaled by s_l = 1/fan_in and biases not differentiated
    (module docstring); else the standard parameterization, the +1 for the layers
    named in `biased`.
    """
    inputs1, deltas1 = _taps(model, params, x1)
    inputs2, deltas2 = (inputs1, deltas1) if x2 is None else _taps(model, params, x2)
    k = 0.0
    for name in inputs1:
        a = jnp.matmul(inputs1[name], inputs2[name].T, precision=ntk.HIGHEST)
        d = jnp.einsum("cno,cmo->nm", deltas1[name], deltas2[name], precision=ntk.HIGHEST)
        if biased is None:
            k = k + a / inputs1[name].shape[1] * d
        else:
            k = k + (a + 1.0 if name in biased else a) * d
    return k


def _taps(model, params, x):
    """Inputs of every Dense layer and the C output-gradients Δ (C, n, out) at its output."""
    shapes = jax.eval_shape(lambda: _run_dense(model, params, x)[2])
    eps = {k: jnp.zeros(v.shape, v.dtype) for k, v in shapes.items()}
    logits, vjp, inputs = jax.vjp(lambda e: _run_dense(model, params, x, e)[:2], eps, has_aux=True)
    num_classes = logits.shape[-1]
    cotangents = jnp.broadcast_to(jnp.eye(num_classes)[:, None, :], (num_classes,) + logits.shape)
    deltas = jax.vmap(lambda ct: vjp(ct)[0])(cotangents)
    return inputs, deltas


# --------------------------------------------------------------------------- comparisons

def relative_distance(k, k_ref) -> float:
    """‖K − K_ref‖_F / ‖K_ref‖_F."""
    k, k_ref = np.asarray(k, np.float64), np.asarray(k_ref, np.float64)
    return float(np.linalg.norm(k - k_ref) / np.linalg.norm(k_ref))


def spectrum_summary(k, *, rank: Optional[int] = None) -> dict:
    """λmin, λ⁺min (r-th largest eigenvalue, r = the float32-aware rank unless given) and λmax."""
    k = np.asarray(k, np.float64)
    k = (k + k.T) / 2
    ev = np.linalg.eigvalsh(k)
    r = ntk.kernel_rank(k) if rank is None else rank
    return {"lambda_min": float(ev[0]), "lambda_plus_min": float(ev[len(ev) - max(1, min(r, len(ev)))]),
            "lambda_max": float(ev[-1]), "rank": int(r)}
