"""Convergence Rate Control (paper Algorithm 1): label the groups that best condition the NTK.

A random partition of the unlabeled pool into groups of G (or `max_groups` of them);
each group g scores s(g) = λ⁺min(K̃(L ∪ g, L ∪ g)), the smallest positive eigenvalue of
the trained model's class-trace NTK over `subset` ("last" dense layer by default, "all" as
in Table 2) at the largest numerical rank r any scored group reaches (groups short of r
score 0); the top budget/G groups are labeled. Groups are disjoint, so the batch holds
distinct indices; by Proposition 2 a group that repeats an image, or one already labeled,
scores 0 whenever another group reaches |L ∪ g|, the full rank.

Algorithm 1 scores groups independently, so two chosen groups may hold copies of one
image. `sequential=True` picks the groups one at a time and rescores the rest against
L ∪ picked: budget/G scoring rounds instead of one (the cost is logged; wall times stay
out of ctx.record so that identical runs write identical journals). `class_balanced=True`
is the pseudo-AL setting of Table 3: every group holds budget/C samples of each class (read
from the oracle) and G = budget.

`backend` picks where the eigenvalues are computed (crc_jax.acquisition.crc.device_spectra):
"auto" (the host CPU on a CPU machine, the accelerator on a GPU/TPU), "host", "device",
or "device_f32" (float32 prefilter + float64 finalists, what a TPU runs). The scores, and
so the chosen groups, are the same; the journal records which one ran.
"""

from __future__ import annotations

import logging
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from crc_jax.acquisition.crc import device_spectra, diagnostics
from crc_jax.acquisition.crc import gram as gram_lib
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import register

log = logging.getLogger(__name__)

ALL_SCORES_MAX = 2000            # record every candidate score up to this many groups
QUANTILES = np.linspace(0.0, 1.0, 101)


def check_subset(subset) -> None:
    if not (subset in ("last", "all") or callable(subset)):
        raise ValueError(f"subset must be 'last', 'all' or a predicate on parameter paths, got {subset!r}")


def random_groups(key, unlabeled: np.ndarray, group_size: int,
                  max_groups: int | None = None) -> np.ndarray:
    """A random partition of `unlabeled` into ⌊U/G⌋ groups of G (the rest left out), or
    the first `max_groups` of them: an (n_groups, G) index array."""
    unlabeled = np.asarray(unlabeled)
    perm = unlabeled[np.asarray(jax.random.permutation(key, len(unlabeled)))]
    n = len(unlabeled) // group_size
    if max_groups is not None:
        n = min(n, max_groups)
    return perm[:n * group_size].reshape(n, group_size)


def class_balanced_groups(ctx: Context, key, budget: int,
                          max_groups: int | None = None) -> np.ndarray:
    """Groups of size `budget` holding budget/C unlabeled samples of every class (Table 3)."""
    if ctx.oracle is None:
        raise ValueError("class_balanced CRC needs ctx.oracle: pseudo-AL groups are built from labels")
    c = ctx.num_classes
    if budget % c:
        raise ValueError(f"class_balanced CRC needs a budget divisible by the {c} classes, got {budget}")
    per_class = budget // c
    unlabeled = np.asarray(ctx.unlabeled)
    labels = np.asarray(ctx.oracle(unlabeled))
    chunks = []
    for k in range(c):
        members = unlabeled[labels == k]
        members = members[np.asarray(jax.random.permutation(jax.random.fold_in(key, k), len(members)))]
        chunks.append(members)
    n = min(len(m) // per_class for m in chunks)
    if n == 0:
        short = [k for k, m in enumerate(chunks) if len(m) < per_class]
        raise ValueError(f"class_balanced CRC needs {per_class} unlabeled samples per class; "
                         f"classes {short} have fewer")
    groups = np.stack([np.concatenate([m[j * per_class:(j + 1) * per_class] for m in chunks])
                       for j in range(n)])
    if max_groups is not None and max_groups < n:
        keep = np.asarray(jax.random.permutation(jax.random.fold_in(key, c), n))[:max_groups]
        groups = groups[np.sort(keep)]
    return groups


def score_groups(ctx: Context, groups, *, subset="last",
                 backend: str | device_spectra.Spectra = "auto") -> np.ndarray:
    """s(g) = λ⁺min(K̃(L ∪ g, L ∪ g)) for each row g of an (n_groups, G) array of pool indices."""
    check_subset(subset)
    groups = np.asarray(groups, dtype=np.int64)
    if groups.ndim != 2:
        raise ValueError(f"groups must be an (n_groups, G) index array, got shape {groups.shape}")
    return gram_lib.build(ctx, groups, subset=subset, backend=backend).score()


def top_groups(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k highest scores; ties go to the earlier row (the partition is random)."""
    return np.argsort(-np.asarray(scores), kind="stable")[:k]


def pick_sequentially(gram, rounds: int, *, desc: str) -> tuple[list[int], list[float], np.ndarray, dict]:
    """Pick `rounds` rows one at a time, each the best against base ∪ rows picked so far.

    Returns (rows, their scores when picked, all first-round scores, the diagnostics:
    crc_jax.acquisition.crc.diagnostics, with every round's decision).
    """
    remaining = np.arange(len(gram.groups))
    rows, chosen, first, decisions = [], [], None, []
    ceiling = first_ranks = None
    for _ in tqdm(range(rounds), desc=desc, disable=None if rounds > 1 else True, leave=False):
        best, score, scores = gram.top(remaining, 1)
        if first is None:     # against L alone: the ceiling, at the first round's rank
            first, first_ranks, ceiling = scores, gram.group_ranks, gram.ceiling()
        decisions.append(diagnostics.decision(gram, remaining, scores, best))
        rows.append(int(best[0]))
        chosen.append(float(score[0]))
        gram.extend_base(best)
        remaining = remaining[remaining != best[0]]
    diag = diagnostics.acquisition(decisions[0], ceiling=ceiling, n_groups=len(gram.groups),
                                   later=decisions[1:])
    assert first is not None       # rounds ≥ 1 (the budget is positive)
    gram.group_ranks = first_ranks
    return rows, chosen, first, diag


def choose(gram, k: int, *, sequential: bool, desc: str) -> tuple[list[int], list[float], np.ndarray, dict]:
    """The k groups to label: the top k at once (Algorithm 1), or one at a time against the
    growing base (`sequential`). Returns (rows, their scores, the first-round scores of all
    groups, the diagnostics of the choice); `gram.group_ranks` then holds the first round's
    rank of every group."""
    if sequential:
        return pick_sequentially(gram, k, desc=desc)
    picked, chosen_scores, scores = gram.top(None, k)
    first = diagnostics.decision(gram, np.arange(len(gram.groups)), scores, picked)
    diag = diagnostics.acquisition(first, ceiling=gram.ceiling(), n_groups=len(gram.groups))
    return [int(r) for r in picked], [float(s) for s in chosen_scores], scores, diag


def summarize(scores: np.ndarray, ranks: np.ndarray | None = None) -> dict:
    """JSON-friendly candidate scores and numerical ranks (the groups' ρ_g, row by row):
    all of them, or the scores' percentiles when many (the ranks' counts are always in the
    diagnostics)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = {"n_groups": int(len(scores)),
           "score_quantiles": [float(q) for q in np.quantile(scores, QUANTILES)]}
    if len(scores) <= ALL_SCORES_MAX:
        out["all_scores"] = [float(s) for s in scores]
        if ranks is not None:
            out["all_ranks"] = [int(r) for r in ranks]
    return out


@register("crc", group_size=True, class_balanced=True, cold_start=True)
def make_crc(group_size: int | None = None, subset="last", max_groups: int | None = None,
             class_balanced: bool = False, sequential: bool = False, backend: str = "auto"):
    """CRC (Algorithm 1). group_size=None means G = budget (one group is the whole batch).
    The options are checked by acquisition.from_spec (group_size, max_groups) and here;
    a budget reaches the strategy checked against them (Strategy.check_budget), and the
    eigenvalue backend is resolved once, now."""
    check_subset(subset)
    spectra = device_spectra.spectra_for(backend)

    def crc(ctx: Context, budget: int, key) -> np.ndarray:
        check_budget(ctx, budget)
        g = budget if group_size is None else int(group_size)
        need = budget // g
        start = time.perf_counter()
        groups = (class_balanced_groups(ctx, key, budget, max_groups) if class_balanced
                  else random_groups(key, ctx.unlabeled, g, max_groups))
        if len(groups) < need:
            raise ValueError(f"crc needs {need} groups of {g} but max_groups={max_groups} "
                             f"leaves {len(groups)}")
        gram = gram_lib.build(ctx, groups, subset=subset, backend=spectra)
        rows, chosen, scores, diag = choose(gram, need, sequential=sequential, desc="CRC rounds")
        seconds = time.perf_counter() - start
        ctx.record["crc"] = {"group_size": g, "subset": subset if isinstance(subset, str) else "custom",
                             "sequential": bool(sequential), "rank": gram.rank, **gram.describe(),
                             "chosen_scores": chosen, **summarize(scores, gram.group_ranks),
                             "diagnostics": diag}
        log.info("crc: %d groups of %d scored in %.2fs, chosen scores %s", len(groups), g, seconds,
                 np.round(chosen, 6).tolist())
        return groups[np.asarray(rows)].ravel()

    crc.score_groups = (  # type: ignore[attr-defined]
        lambda ctx, groups: score_groups(ctx, groups, subset=subset, backend=spectra))
    return crc
