"""BALD with MC dropout (Houlsby et al. 2011; Gal, Islam & Ghahramani, ICML 2017).

The mutual information between the label and the model parameters, estimated from T
stochastic forward passes with dropout on (p_t = softmax of pass t):

    BALD(x) = H( (1/T) Σ_t p_t(·|x) ) − (1/T) Σ_t H( p_t(·|x) )

and the `budget` highest-scoring unlabeled points are taken (ties: lower pool index).
Needs `ctx.stochastic_apply_fn` (a model with dropout > 0). Pass t of the batch starting
at position s draws its dropout masks from fold_in(fold_in(key, t), s): explicit keys,
so a selection is reproducible from the strategy's key.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax.acquisition.baseline import top_k
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import register


def _entropy(p):
    return -jnp.sum(p * jnp.log(jnp.clip(p, 1e-12, 1.0)), axis=-1)


def bald_from_probs(probs):
    """(T, N, C) MC-dropout probabilities -> (N,) BALD scores."""
    return _entropy(jnp.mean(probs, axis=0)) - jnp.mean(_entropy(probs), axis=0)


@functools.lru_cache(maxsize=8)
def _batch_scores_fn(apply, samples: int):
    """(variables, xb, key, start) -> BALD scores of a batch, jitted once per apply."""

    @jax.jit
    def batch_scores(variables, xb, key, start):
        probs = jnp.stack([jax.nn.softmax(apply(variables, xb, jax.random.fold_in(
            jax.random.fold_in(key, t), start)), axis=-1) for t in range(samples)])
        return bald_from_probs(probs)

    return batch_scores


def bald_scores(ctx: Context, indices: np.ndarray, key, *, samples: int) -> np.ndarray:
    """BALD scores of pool indices from `samples` MC-dropout passes, in batches.

    The passes of one batch run in one jitted function: the part of the network before
    the first dropout layer is the same computation in every pass, and XLA's common
    subexpression elimination computes it once (a model with dropout before the head
    then costs about one forward pass, not `samples`).
    """
    if ctx.stochastic_apply_fn is None:
        raise ValueError("bald needs a model with dropout (config model.dropout > 0): "
                         "the Context has no stochastic_apply_fn")
    batch_scores = _batch_scores_fn(ctx.stochastic_apply_fn, samples)
    out = []
    for start in range(0, len(indices), ctx.batch_size):
        xb = jnp.asarray(ctx.x[indices[start:start + ctx.batch_size]])
        out.append(np.asarray(batch_scores(ctx.variables, xb, key, start), np.float64))
    return np.concatenate(out) if out else np.zeros(0)


@register("bald", needs_dropout=True)
def make_bald(samples: int = 20):
    if samples < 2:
        raise ValueError(f"bald needs samples >= 2 MC-dropout passes, got {samples}")

    def bald(ctx: Context, budget: int, key) -> np.ndarray:
        check_budget(ctx, budget)
        unlabeled = np.asarray(ctx.unlabeled)
        return top_k(unlabeled, bald_scores(ctx, unlabeled, key, samples=samples), budget)

    return bald
