"""Greedy CRC, the alternative paper §3.2 contrasts with Algorithm 1.

`budget` rounds; each adds the single candidate x maximizing λ⁺min(K̃(S ∪ {x})) with
S = L ∪ picked so far (CRC's rank rule: the rank r the best candidates reach, a candidate
short of it scores 0): O(U·Q) eigendecompositions instead of Algorithm 1's O(U/G).
`max_candidates` limits the search to a random subset of the unlabeled pool; `backend`
is CRC's (crc_jax.acquisition.crc.device_spectra: "auto", "host", "device", "device_f32").
"""

from __future__ import annotations

import logging
import time

import jax
import numpy as np

from crc_jax.acquisition.crc import device_spectra
from crc_jax.acquisition.crc import gram as gram_lib
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.crc.crc import check_subset, pick_sequentially, summarize
from crc_jax.acquisition.registry import register

log = logging.getLogger(__name__)


@register("crc_greedy")
def make_crc_greedy(subset="last", max_candidates: int | None = None, backend: str = "auto"):
    check_subset(subset)
    spectra = device_spectra.spectra_for(backend)   # resolved once, when built
    if max_candidates is not None and max_candidates <= 0:
        raise ValueError(f"crc_greedy max_candidates must be positive, got {max_candidates!r}")

    def crc_greedy(ctx: Context, budget: int, key) -> np.ndarray:
        check_budget(ctx, budget)
        unlabeled = np.asarray(ctx.unlabeled)
        cand = unlabeled
        if max_candidates is not None and max_candidates < len(unlabeled):
            if max_candidates < budget:
                raise ValueError(f"crc_greedy max_candidates={max_candidates} is below the budget {budget}")
            keep = np.asarray(jax.random.permutation(key, len(unlabeled)))[:max_candidates]
            cand = unlabeled[np.sort(keep)]
        start = time.perf_counter()
        gram = gram_lib.build(ctx, cand[:, None], subset=subset, backend=spectra)
        rows, chosen, first, diag = pick_sequentially(gram, budget, desc="greedy CRC")
        ctx.record["crc_greedy"] = {"chosen_scores": chosen, "rank": gram.rank, **gram.describe(),
                                    **summarize(first, gram.group_ranks),
                                    "diagnostics": diag}
        log.info("crc_greedy: %d picks from %d candidates in %.2fs", budget, len(cand),
                 time.perf_counter() - start)
        return cand[np.asarray(rows)]

    return crc_greedy
