"""What the CRC Grams share: the rank rule, the eigenvalue backend they run on, the top-k
choice, and the diagnostics of that choice (the ceiling on every score, the traces behind
the tie check).

Scoring a batch of groups (crc_jax.acquisition.crc.spectra, docs/design.md "CRC, exactly"):
every group g gets its numerical rank ρ_g and λ⁺_g (its smallest eigenvalue above the
Gram's float-resolution tolerance); the batch is scored at r = the largest ρ_g, and
s(g) = λ⁺_g where ρ_g = r, else 0. After each scoring the Gram holds `rank_used` (r) and
`group_ranks` (ρ_g of the rows scored) for the diagnostics.

`top(rows, k)` returns the k best groups with one device-to-host transfer on the float64
device backend. On the float32 device path (TPU, or backend="device_f32") the float32
ranks are lower bounds: when one of them reaches `_rank_bound()` (no group's rank can
exceed it) r is certain, the float32 scores at r pick the finalists that float32 error
could promote, and the host rescores them in float64, so the chosen groups are those of
the float64 reference (crc_jax.acquisition.crc.device_spectra); otherwise every group is
scored on the host in float64.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax.acquisition.crc import device_spectra as dev
from crc_jax.acquisition.crc import diagnostics, spectra
from crc_jax.acquisition.crc.device_spectra import Spectra

log = logging.getLogger(__name__)


class BackendGram:
    """Backend bookkeeping, the rank rule and the choice of the top groups, shared by the Grams.

    Subclasses set `spectra` (crc_jax.acquisition.crc.device_spectra.Spectra), `groups`, `base`
    and `_rank` (the pool's rank, reported only), and provide `_side()` (matrix side,
    |B| + G), `_rtol()` (the rank tolerance), `_host_spectra(rows)` -> (ρ_g, λ⁺_g) in
    float64 NumPy and, on a device spectra, `_device_spectra(rows, slack, u_idx)` ->
    device_spectra.Summaries; for the diagnostics, `_base_matrix()` (K̃(B, B), or a matrix
    with the same non-zero spectrum, as the backend holds it), `_base_trace()` and
    `_group_traces(rows)` (trace K̃(g, g) per row).
    """

    groups: np.ndarray
    base: np.ndarray
    spectra: Spectra = dev.HOST
    _rank: int | None = None
    rank_used: int | None = None            # r of the last scoring
    group_ranks: np.ndarray | None = None   # ρ_g of the rows of the last scoring

    @property
    def rank(self) -> int | None:
        """ρ of the kernel over the whole pool (journal only; None where not computed)."""
        r = self._rank
        return None if r is None else int(r)

    def _side(self) -> tuple[int, int]:
        raise NotImplementedError

    def _rtol(self) -> float:
        raise NotImplementedError

    def _rank_bound(self) -> int:
        """No group's numerical rank exceeds this (default: the matrix side)."""
        return self._side()[0]

    def ceiling(self) -> float | None:
        """An upper bound on every group's score against the current base B: the (r − G)-th
        largest eigenvalue of K̃(B, B) (Cauchy interlacing), r the rank of the last scoring
        (λ⁺min(K̃(B, B)) while r = |B| + G, a larger eigenvalue beyond the rank), or None
        when r ≤ G. See crc_jax.acquisition.crc.diagnostics. One eigendecomposition of
        K̃(B, B) (or of the (d+1)² feature Gram when smaller), on the device on a float64
        device, else on the host in float64."""
        if self.rank_used is None:
            raise RuntimeError("ceiling() needs a scoring first (score or top): r comes from it")
        i = diagnostics.ceiling_index(self.groups.shape[1], self.rank_used)
        if i is None:
            return None
        with self.spectra.precision():
            m = self._base_matrix()
            if self.spectra.device_float64:
                ev = np.asarray(jax.device_get(jnp.linalg.eigvalsh(m)), dtype=np.float64)
            else:
                ev = np.linalg.eigvalsh(np.asarray(m, dtype=np.float64))
        ev = ev[::-1]                       # descending; entries past the matrix side are 0
        return float(ev[i - 1]) if i <= len(ev) else 0.0

    def _base_matrix(self):
        raise NotImplementedError

    def _host_spectra(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _device_spectra(self, rows: np.ndarray, slack: float, u_idx: int) -> dev.Summaries:
        raise NotImplementedError

    def _rel_error(self) -> float:
        return dev.rel_error(self._side()[0], self.groups.shape[1])

    def _base_trace(self) -> float:
        raise NotImplementedError

    def _group_traces(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def traces(self, rows) -> np.ndarray:
        """trace K̃(B ∪ g, B ∪ g) of each row g, float64 (the scale of float32 rounding)."""
        rows = np.asarray(rows)
        with self.spectra.precision():
            return float(self._base_trace()) + np.asarray(self._group_traces(rows), np.float64)

    def describe(self) -> dict:
        """What ran, for the journal: {"backend": ..., "dtype": ...} (no timings)."""
        return self.spectra.describe()

    def _rows(self, rows) -> np.ndarray:
        return np.arange(len(self.groups)) if rows is None else np.asarray(rows)

    def _host_scored(self, rows: np.ndarray, r: int | None = None):
        """(scores, ranks, r) of `rows` in float64 on the host, at rank r (default: the
        largest rank among them)."""
        ranks, lam = self._host_spectra(rows)
        r = spectra.attainable_rank(ranks) if r is None else int(r)
        return spectra.at_rank(ranks, lam, r), ranks, r

    def _scored(self, rows: np.ndarray, k: int | None):
        """(picked positions or None, scores, ranks, r) of `rows`; the k best when k is given."""
        if not self.spectra.on_device:
            scores, ranks, r = self._host_scored(rows)
            pick = None if k is None else np.argsort(-scores, kind="stable")[:k]
            return pick, scores, ranks, r
        n = len(rows)
        if self.spectra.device_float64:
            with self.spectra.precision():
                summ = self._device_spectra(rows, 0.0, 0)
                r, ranks, s = dev.attained(summ.rank, summ.lam, summ.n)
                pick = None if k is None else dev.top_rows(s, k=k)
                pick, s, ranks, r = jax.device_get((pick, s, ranks, r))
            return pick, np.asarray(s, np.float64)[:n], np.asarray(ranks, np.int64)[:n], int(r)
        bound = self._rank_bound()
        side = self._side()[0]
        slack = dev.prefilter_slack(side, self.groups.shape[1], self._rtol())
        summ = self._device_spectra(rows, slack, side - bound)
        low = np.asarray(jax.device_get(summ.rank), np.int64)[:n]
        if n == 0 or low.max() < bound:
            log.info("float32 prefilter: no group certainly reaches rank %d; all %d groups "
                     "scored in float64 on the host", bound, n)
            scores, ranks, r = self._host_scored(rows)
            pick = None if k is None else np.argsort(-scores, kind="stable")[:k]
            return pick, scores, ranks, r
        s32 = dev.masked(summ.at_u, n)
        if k is None:
            return None, np.asarray(s32, np.float64)[:n], low, bound
        keep = dev.finalists(s32, summ.trace, self._rel_error(), k=k)
        scores, keep = jax.device_get((s32, keep))
        scores = np.asarray(scores, dtype=np.float64)[:n]
        fin = np.flatnonzero(keep[:n])
        scores[fin], low[fin], _ = self._host_scored(rows[fin], bound)
        pick = fin[np.argsort(-scores[fin], kind="stable")[:k]]
        log.debug("float32 prefilter: %d of %d groups rescored in float64", len(fin), n)
        return pick, scores, low, bound

    def score(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Scores of `rows` (default all groups) as float64 NumPy, r taken over these rows.
        On the float32 device path these are the float32 prefilter scores where r is
        certain (`top` rescores its finalists), else the host's."""
        rows = self._rows(rows)
        if len(rows) == 0:
            return np.zeros(0)
        _, scores, self.group_ranks, self.rank_used = self._scored(rows, None)
        return scores

    def top(self, rows: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the k best rows, their scores, the scores of all `rows`), best first, ties to the
        earlier row; one device-to-host transfer on the float64 device backend."""
        rows = self._rows(rows)
        pick, scores, self.group_ranks, self.rank_used = self._scored(rows, k)
        pick = np.asarray(pick)
        return rows[pick], scores[pick], scores
