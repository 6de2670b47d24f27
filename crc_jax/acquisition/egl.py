"""Expected gradient length (Huang et al., 2016): the samples whose labels would move the model most.

EGL(x) = E_{y ~ p(·|x)} ‖∇θ H(y, f(x))‖². With the per-sample NTK block K̂(x, x) = J Jᵀ
(C×C) and ∇θ H(y, f) = Jᵀ(p − e_y), this is

    Σ_y p_y (p − e_y)ᵀ K̂ (p − e_y) = Σ_y p_y K̂_yy − pᵀ K̂ p,

so one Jacobian per sample gives all C expected gradients. Over all parameters by default.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from crc_jax import ntk
from crc_jax.acquisition.baseline import predict_probs, top_k
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.crc.gram import variables_subset
from crc_jax.acquisition.registry import register


def expected_gradient_length(ctx: Context, indices: np.ndarray, *, subset="all") -> np.ndarray:
    """E_{y~p(·|x)} ‖∇θ H(y, f(x))‖² over `subset` for pool indices."""
    pred = variables_subset(ctx, subset)
    out = []
    for start in range(0, len(indices), ctx.batch_size):
        idx = indices[start:start + ctx.batch_size]
        xb = jnp.asarray(ctx.x[idx])
        k = np.asarray(ntk.ntk_diagonal(ctx.apply_fn, ctx.variables, xb, subset=pred), np.float64)  # (b,C,C)
        p = predict_probs(ctx, idx).astype(np.float64)
        out.append(np.einsum("nc,ncc->n", p, k) - np.einsum("nc,ncd,nd->n", p, k, p))
    return np.concatenate(out) if out else np.zeros(0)


@register("egl")
def make_egl(subset="all"):
    def egl(ctx: Context, budget: int, key) -> np.ndarray:
        del key
        check_budget(ctx, budget)
        unlabeled = np.asarray(ctx.unlabeled)
        return top_k(unlabeled, expected_gradient_length(ctx, unlabeled, subset=subset), budget)

    return egl
