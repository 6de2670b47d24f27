"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings.

The embedding of x is the gradient of the cross-entropy under the predicted label
ŷ = argmax p(·|x) with respect to the head's kernel W (d × C):

    g(x) = (p(x) − e_ŷ) ⊗ φ(x)   ∈ R^{C·d},   ‖g‖ = ‖p − e_ŷ‖ · ‖φ‖

Its norm is large where the model is uncertain, and its direction follows the features,
so k-means++ seeding picks points that are uncertain and diverse. As in the authors'
code, the first pick is the point of largest ‖g‖, then each next pick is drawn with
probability ∝ D²(x), the squared distance to the nearest pick so far (k-means++ D²
sampling; picked points have D² = 0 and cannot be drawn again).

The C·d embeddings are never formed; with a = p − e_ŷ,

    ‖g_i − g_j‖² = ‖a_i‖²‖φ_i‖² + ‖a_j‖²‖φ_j‖² − 2 (a_i·a_j)(φ_i·φ_j),

so memory is O(N·(C + d)). Draws use `jax.random.categorical` with the key folded with
the pick number, so a selection is reproducible from the strategy's key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax.acquisition.baseline import predict_probs
from crc_jax.acquisition import distances
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import register


def gradient_factors(probs: np.ndarray) -> np.ndarray:
    """a = p − e_ŷ with ŷ = argmax p (first on ties), shape (N, C)."""
    a = np.array(probs, np.float32, copy=True)
    a[np.arange(len(a)), np.argmax(probs, axis=1)] -= 1.0
    return a


@jax.jit
def _sq_dist_to_pick(a, phi, i):
    """‖g_n − g_i‖² for all n, from the factors a (N, C) and φ (N, d)."""
    sq = jnp.sum(a * a, axis=1) * jnp.sum(phi * phi, axis=1)
    cross = (a @ a[i]) * (phi @ phi[i])
    return jnp.maximum(sq + sq[i] - 2.0 * cross, 0.0)


@jax.jit
def _draw(key, d2):
    """An index drawn with probability d2 / Σ d2."""
    return jax.random.categorical(key, jnp.log(d2))


def kmeans_pp_seeds(a: np.ndarray | jax.Array, phi: np.ndarray | jax.Array, budget: int,
                    key) -> np.ndarray:
    """Positions of `budget` BADGE seeds: the largest-norm point, then D² sampling."""
    a, phi = jnp.asarray(a), jnp.asarray(phi)
    norms = jnp.sum(a * a, axis=1) * jnp.sum(phi * phi, axis=1)
    first = int(jnp.argmax(norms))
    picks = [first]
    d2 = _sq_dist_to_pick(a, phi, first).at[first].set(0.0)
    for t in range(1, budget):
        if float(jnp.sum(d2)) <= 0.0:  # every point coincides with a pick: no D² mass left
            remaining = np.setdiff1d(np.arange(len(norms)), picks)
            picks += remaining[:budget - len(picks)].tolist()
            break
        i = int(_draw(jax.random.fold_in(key, t), d2))
        picks.append(i)
        d2 = jnp.minimum(d2, _sq_dist_to_pick(a, phi, i)).at[i].set(0.0)
    return np.asarray(picks, np.int64)


@register("badge")
def make_badge():
    def badge(ctx: Context, budget: int, key) -> np.ndarray:
        check_budget(ctx, budget)
        unlabeled = np.sort(np.asarray(ctx.unlabeled))
        a = gradient_factors(predict_probs(ctx, unlabeled))
        phi = distances.context_features(ctx, unlabeled)
        return unlabeled[kmeans_pp_seeds(a, phi, budget, key)]

    return badge
