"""The empirical NTK of the finite Flax models in NTK coordinates, and the comparisons with
the infinite-width kernels of crc_jax.infinite (used by experiments/ntk_compare.py).

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

"""

from __future__ import annotations

import dataclasses
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crc_jax import ntk

JACOBIAN_BYTES = 1 << 30  # per-sample Jacobians held at once by the generic empirical NTK


# --------------------------------------------------------------------------- empirical, NTK coordinates

def _is_kernel(path: tuple) -> bool:
    return bool(path) and path[-1] == "kernel"


def _fan_in(kernel) -> int:
    """LeCun fan-in of a Flax kernel: all axes but the last (Dense (in, out), Conv (h, w, in, out))."""
    return int(np.prod(kernel.shape[:-1]))


def _scale_kernels(tree, power: float):
    def leaf(path, v):
        names = tuple(ntk.key_name(k) for k in path)
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
        lambda p, v: v if _is_kernel(tuple(ntk.key_name(k) for k in p)) else jnp.zeros_like(v), tree)


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
    layers = dense_layers(model, params, x1[:1])
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


def dense_layers(model, params, x) -> dict | None:
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
def _dense_trace_ntk(model, params, x1, x2, *, biased: tuple | None):
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


def spectrum_summary(k, *, rank: int | None = None) -> dict:
    """λmin, λ⁺min (r-th largest eigenvalue, r = the float32-aware rank unless given) and λmax."""
    k = np.asarray(k, np.float64)
    k = (k + k.T) / 2
    ev = np.linalg.eigvalsh(k)
    r = ntk.kernel_rank(k) if rank is None else rank
    return {"lambda_min": float(ev[0]), "lambda_plus_min": float(ev[len(ev) - max(1, min(r, len(ev)))]),
            "lambda_max": float(ev[-1]), "rank": int(r)}
