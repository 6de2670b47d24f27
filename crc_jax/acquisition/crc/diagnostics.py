"""How decisive a CRC acquisition was: the ceiling, the chosen and runner-up scores, their gap.

Every CRC journal step records, under record[strategy]["diagnostics"]:

  ceiling     an upper bound on every group's score at this acquisition, from K̃(L, L) alone
              (below); null when no such bound exists (r ≤ G, e.g. a cold start)
  chosen      the score at the cut: the lowest score among the groups chosen (with one
              group per acquisition, the chosen group's score)
  runner_up   the best score among the groups not chosen (null when every group is chosen)
  gap         (chosen − runner_up) / chosen, the relative margin of the choice (null when
              chosen ≤ 0 or there is no runner-up)
  resolution  ε_float32·(trace K̃(L ∪ g_chosen) + trace K̃(L ∪ g_runner_up)) / chosen: how far
              rounding the two kernels' entries to float32 could move the two scores
              (below), on the scale of `gap`
  tie         true when some decision of the acquisition had chosen − runner_up within that
              resolution: float32 rounding (another machine, another XLA) could have picked
              the other group
  rank_used   r = min(|L| + G, max_g ρ_g), the largest numerical rank any scored group's
              kernel K̃(L ∪ g) reaches: a group scores its r-th largest eigenvalue if its own
              rank ρ_g reaches r, else 0 (docs/design.md "CRC, exactly")
  rank_counts {ρ: number of groups of numerical rank ρ} (each group's rank, row by row, is in
              the record's all_ranks when all_scores is). On the float32 prefilter the ranks
              of groups not rescored in float64 are float32 lower bounds
  n_groups    the number of candidate groups scored (the first round's, for sequential picks)
  rounds      sequential picks only: {chosen, runner_up, gap, resolution, tie, rank_used,
              rank_counts} of each round, the base grown by the groups picked before it (the
              top-level fields are round 1's)

No timings: identical runs write identical journals.

The ceiling. A group's score is s(g) = μ_r, the r-th largest eigenvalue of M = K̃(L ∪ g)
(or 0 ≤ μ_r when its rank falls short of r), r the rank_used above. K̃(L, L) is a principal
submatrix of M, G rows and columns smaller, so Cauchy interlacing gives α_i ≥ μ_{i+G} for
its eigenvalues α_1 ≥ … ≥ α_|L|. With i = r − G:

    s(g) ≤ α_{r−G}:  the (r − G)-th largest eigenvalue of K̃(L, L), for every group.

  * r = |L| + G (some group's kernel over L ∪ g is full rank): r − G = |L|, so the ceiling
    is λmin(K̃(L, L)): adding points can only lower the smallest eigenvalue.
  * r < |L| + G (beyond the rank): r − G, a larger eigenvalue of K̃(L, L) than its λ⁺min.
    Here λ⁺min(K̃(L, L)) is no ceiling: for the last-layer kernel C·ZZᵀ (the one whose rank
    can be below |L| + G), once Z_L spans what the groups reach the non-zero spectrum of
    K̃(L ∪ g) is C times that of Z_LᵀZ_L + Z_gᵀZ_g ⪰ Z_LᵀZ_L, so every group scores at least
    λ⁺min(K̃(L, L)).
  * r ≤ G (fewer labeled points than the group adds, below the rank: a cold start): no
    bound from K̃(L, L); the ceiling is null.

The bound is tight in general (interlacing admits M with equality). It is computed once per
acquisition from the Gram's K̃(L, L) (BackendGram.ceiling).

The resolution. Rounding every entry of a PSD matrix M to float32 perturbs it by E with
|E_ij| ≤ ε₃₂·|M_ij| ≤ ε₃₂·√(M_ii·M_jj); a matrix dominated entrywise by the rank-one vvᵀ
(v_i = √M_ii) has ‖E‖₂ ≤ ε₃₂·‖v‖² = ε₃₂·trace M, and by Weyl no eigenvalue moves further.
Two scores closer than the sum of their two bounds cannot be ordered at float32 precision:
the model's features and Jacobians come out of float32 arithmetic (crc_infinite's kernel is
float64, but of images held in float32), so the choice is a tie. The bound is a worst case
for one rounding of the entries; a float32 forward pass accumulates more than one rounding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def ceiling_index(group_size: int, rank_used: int) -> int | None:
    """i = r − G, the eigenvalue of K̃(B, B) (1 = the largest) that bounds every score (i ≤ |B|
    since r ≤ |B| + G); None when r ≤ G (no bound from K̃(B, B))."""
    i = int(rank_used) - int(group_size)
    return i if i >= 1 else None


def decision(gram, rows: np.ndarray, scores: np.ndarray, chosen_rows: np.ndarray) -> dict:
    """The margin of one choice among `rows` (scored `scores`, the chosen ones `chosen_rows`,
    best first): {chosen, runner_up, gap, resolution, tie} as in the module docstring.
    Traces come from `gram` against its current base; r and the groups' ranks from its
    last scoring (of `rows`)."""
    rows = np.asarray(rows)
    scores = np.asarray(scores, dtype=np.float64)
    chosen_rows = np.asarray(chosen_rows)
    is_chosen = np.isin(rows, chosen_rows)
    cut_row = int(chosen_rows[-1])
    cut = float(scores[np.flatnonzero(rows == cut_row)[0]])
    out: dict = {"chosen": cut, "runner_up": None, "gap": None, "resolution": None, "tie": False,
                 "rank_used": int(gram.rank_used), "rank_counts": rank_counts(gram.group_ranks)}
    if is_chosen.all():
        return out
    others = np.flatnonzero(~is_chosen)
    runner_pos = others[int(np.argmax(scores[others]))]          # ties to the earlier row
    runner = float(scores[runner_pos])
    traces = np.asarray(gram.traces(np.array([cut_row, rows[runner_pos]])), dtype=np.float64)
    spread = FLOAT32_EPS * float(np.abs(traces).sum())
    out.update(runner_up=runner, tie=bool(cut - runner <= spread))
    if cut > 0:
        out.update(gap=(cut - runner) / cut, resolution=spread / cut)
    return out


def rank_counts(ranks) -> dict:
    """{str(ρ): number of groups of rank ρ}, ranks ascending (JSON keys are strings)."""
    values, counts = np.unique(np.asarray(ranks, np.int64), return_counts=True)
    return {str(int(v)): int(c) for v, c in zip(values, counts)}


def acquisition(first: dict, *, ceiling: float | None, n_groups: int,
                later: list | None = None) -> dict:
    """The diagnostics of one acquisition: the first decision (against L, with its rank r),
    its ceiling, the groups scored, and the later rounds of a sequential pick."""
    out = {"ceiling": ceiling, **first, "n_groups": int(n_groups)}
    if later:
        rounds = [first, *later]
        out["rounds"] = rounds
        out["tie"] = any(r["tie"] for r in rounds)
    return out


def collect(record: dict | None, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(where, diagnostics) of every CRC record in a journal step's `record`: "crc",
    "crc_greedy", …, and "per_class/3/crc_greedy" for the pseudo-AL wrapper's classes."""
    for name, value in (record or {}).items():
        if not isinstance(value, dict):
            continue
        where = f"{prefix}{name}"
        if isinstance(value.get("diagnostics"), dict):
            yield where, value["diagnostics"]
        elif name == "per_class":
            for cls, sub in value.items():
                yield from collect(sub, f"{where}/{cls}/")


def summary(record: dict | None) -> dict | None:
    """A step's CRC diagnostics at a glance, over every CRC record in it (several under the
    pseudo-AL wrapper): the smallest relative gap of any decision and its resolution,
    whether any decision tied, the smallest chosen/ceiling ("reach": how close the best
    group came to the bound), the number of decisions, and the records themselves
    {where: diagnostics}. None when the step holds no CRC record."""
    found = dict(collect(record))
    if not found:
        return None
    decisions = [r for d in found.values() for r in d.get("rounds", [d])]
    gaps = [r for r in decisions if r.get("gap") is not None]
    tightest = min(gaps, key=lambda r: r["gap"]) if gaps else {}
    reach = [d["chosen"] / d["ceiling"] for d in found.values() if (d.get("ceiling") or 0.0) > 0]
    return {"gap": tightest.get("gap"), "resolution": tightest.get("resolution"),
            "tie": any(bool(d.get("tie")) for d in found.values()),
            "reach": min(reach) if reach else None, "decisions": len(decisions),
            "records": found}
