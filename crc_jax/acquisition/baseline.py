"""Myopic baselines: random sampling and the uncertainty scores of Wang & Shang (2014).

entropy:     max_x H(p(·|x));
confidence:  least confidence, min_x max_y p(y|x);
margin:      min_x p(y₁|x) − p(y₂|x), the gap between the two most probable classes.
Ties go to the lower pool index.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import register


def predict_probs(ctx: Context, indices: np.ndarray) -> np.ndarray:
    """Softmax predictions of the trained model on pool indices, in batches."""
    apply = jax.jit(ctx.apply_fn)
    out = []
    for start in range(0, len(indices), ctx.batch_size):
        logits = apply(ctx.variables, jnp.asarray(ctx.x[indices[start:start + ctx.batch_size]]))
        out.append(np.asarray(jax.nn.softmax(logits, axis=-1)))
    return np.concatenate(out) if out else np.zeros((0, ctx.num_classes), np.float32)


def top_k(indices: np.ndarray, scores: np.ndarray, budget: int) -> np.ndarray:
    """The `budget` indices with the highest scores; ties broken by the lower index."""
    order = np.lexsort((indices, -scores))
    return indices[order[:budget]]


@register("random", cold_start=True)
def make_random():
    def random_strategy(ctx: Context, budget: int, key) -> np.ndarray:
        check_budget(ctx, budget)
        perm = np.asarray(jax.random.permutation(key, len(ctx.unlabeled)))
        return np.asarray(ctx.unlabeled)[perm[:budget]]

    return random_strategy


@register("entropy")
def make_entropy():
    def entropy_strategy(ctx: Context, budget: int, key) -> np.ndarray:
        del key
        check_budget(ctx, budget)
        p = predict_probs(ctx, ctx.unlabeled)
        h = -np.sum(p * np.log(np.clip(p, 1e-12, 1.0)), axis=-1)
        return top_k(np.asarray(ctx.unlabeled), h, budget)

    return entropy_strategy


@register("confidence")
def make_confidence():
    def confidence_strategy(ctx: Context, budget: int, key) -> np.ndarray:
        del key
        check_budget(ctx, budget)
        p = predict_probs(ctx, ctx.unlabeled)
        return top_k(np.asarray(ctx.unlabeled), -p.max(axis=-1), budget)

    return confidence_strategy


@register("margin")
def make_margin():
    def margin_strategy(ctx: Context, budget: int, key) -> np.ndarray:
        del key
        check_budget(ctx, budget)
        p = np.sort(predict_probs(ctx, ctx.unlabeled), axis=-1)
        return top_k(np.asarray(ctx.unlabeled), -(p[:, -1] - p[:, -2]), budget)

    return margin_strategy
