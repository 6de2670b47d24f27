"""Myopic baselines: random sampling and the uncertainty scores of Wang & Shang (2014).

entropy:     max_x H(p(·|x));
confidence:  least confidence, min_x max_y p(y|x);
margin:      min_x p(y₁|x) − p(y₂|x), the gap between the two most probable classes.
Ties go to the lower pool index.

Each of the three records how decisive its pick was, under record[name]["decision"]
(the fields of CRC's diagnostics, crc_jax.acquisition.crc.diagnostics):

  chosen      the score at the cut: the lowest score among the images chosen
  runner_up   the best score among the images not chosen (null when every one is chosen)
  gap         (chosen − runner_up) / |chosen| (null when chosen is 0 or there is no runner-up)
  resolution  (b(cut) + b(runner-up)) / |chosen|: how far rounding each image's predicted
              probabilities to float32 (relative ε₃₂ each) could move the two scores, with
              b the score's first-order bound: ε₃₂·Σ_c p_c·|1 + log p_c| for the entropy,
              ε₃₂·p₁ for the confidence, ε₃₂·(p₁ + p₂) for the margin
  tie         chosen − runner_up within b(cut) + b(runner-up): float32 rounding (another
              machine, another device count) could have picked the other image

Like CRC's, the bound is a worst case for one rounding; a float32 forward pass and its
training accumulate more than one.
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


FLOAT32_EPS = float(np.finfo(np.float32).eps)


def decision(order: np.ndarray, scores: np.ndarray, bounds: np.ndarray, budget: int) -> dict:
    """{chosen, runner_up, gap, resolution, tie} of taking the first `budget` of `order`
    (positions, best score first) (module docstring); `bounds[i]`: how far float32
    rounding could move scores[i]."""
    scores = np.asarray(scores, np.float64)
    cut = int(order[budget - 1])
    out: dict = {"chosen": float(scores[cut]), "runner_up": None, "gap": None,
                 "resolution": None, "tie": False}
    if budget >= len(order):
        return out
    runner = int(order[budget])
    spread = float(bounds[cut] + bounds[runner])
    margin = float(scores[cut] - scores[runner])
    out.update(runner_up=float(scores[runner]), tie=bool(margin <= spread))
    if scores[cut] != 0:
        out.update(gap=margin / abs(float(scores[cut])), resolution=spread / abs(float(scores[cut])))
    return out


def pick(ctx: Context, name: str, scores: np.ndarray, bounds: np.ndarray,
         budget: int) -> np.ndarray:
    """top_k of the unlabeled pool by `scores`, its decision recorded under record[name]."""
    indices = np.asarray(ctx.unlabeled)
    order = np.lexsort((indices, -scores))
    ctx.record[name] = {"decision": decision(order, scores, bounds, budget)}
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
        log_p = np.log(np.clip(p, 1e-12, 1.0))
        h = -np.sum(p * log_p, axis=-1)
        bounds = FLOAT32_EPS * np.sum(p * np.abs(1.0 + log_p.astype(np.float64)), axis=-1)
        return pick(ctx, "entropy", h, bounds, budget)

    return entropy_strategy


@register("confidence")
def make_confidence():
    def confidence_strategy(ctx: Context, budget: int, key) -> np.ndarray:
        del key
        check_budget(ctx, budget)
        p = predict_probs(ctx, ctx.unlabeled).max(axis=-1)
        return pick(ctx, "confidence", -p, FLOAT32_EPS * p.astype(np.float64), budget)

    return confidence_strategy


@register("margin")
def make_margin():
    def margin_strategy(ctx: Context, budget: int, key) -> np.ndarray:
        del key
        check_budget(ctx, budget)
        p = np.sort(predict_probs(ctx, ctx.unlabeled), axis=-1)
        return pick(ctx, "margin", -(p[:, -1] - p[:, -2]),
                    FLOAT32_EPS * (p[:, -1] + p[:, -2]).astype(np.float64), budget)

    return margin_strategy
