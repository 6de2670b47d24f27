"""What the CRC Grams share: the eigenvalue backend they run on, the top-k choice, and the
diagnostics of that choice (the ceiling on every score, the traces behind the tie check).

`top(rows, k)` returns the k best groups with one device-to-host transfer on the device
backend; on the float32 device path (TPU, or backend="device_f32") it rescores the
finalists that float32 error could promote in float64 on the host, so the chosen groups
are those of the float64 reference (crc_jax.acquisition.device_spectra).
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax.acquisition import device_spectra as dev
from crc_jax.acquisition import diagnostics
from crc_jax.acquisition.device_spectra import Spectra

log = logging.getLogger(__name__)


class BackendGram:
    """Backend bookkeeping and the choice of the top groups, shared by both Grams.

    Subclasses set `spectra` (crc_jax.acquisition.device_spectra.Spectra), `groups`, `base`
    and `_rank`, and provide `_host_scores(rows)` (float64 NumPy) and, on a device spectra,
    `_device_scores(rows)` -> (scores, traces) device arrays; for the diagnostics,
    `_base_matrix()` (K̃(B, B), or a matrix with the same non-zero spectrum, as the backend
    holds it), `_base_trace()` and `_group_traces(rows)` (trace K̃(g, g) per row).
    """

    groups: np.ndarray
    base: np.ndarray
    spectra: Spectra = dev.HOST
    _rank: int | None = None

    @property
    def rank(self) -> int | None:
        """ρ, the numerical rank of the kernel over the pool; None: full rank (r = |B| + G)."""
        r = self._rank
        return None if r is None else int(r)

    @property
    def rank_used(self) -> int:
        """r = min(|B| + G, ρ): a group scores the r-th largest eigenvalue of K̃(B ∪ g)."""
        n = len(self.base) + self.groups.shape[1]
        return n if self.rank is None else min(n, self.rank)

    def ceiling(self) -> float | None:
        """An upper bound on every group's score against the current base B: the (r − G)-th
        largest eigenvalue of K̃(B, B) (Cauchy interlacing; λ⁺min(K̃(B, B)) while |B| + G ≤ ρ,
        a larger eigenvalue beyond the rank), or None when r ≤ G. See
        crc_jax.acquisition.diagnostics. One eigendecomposition of K̃(B, B) (or of the
        (d+1)² feature Gram when smaller), on the device on a float64 device, else on the
        host in float64."""
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

    def _host_scores(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _device_scores(self, rows: np.ndarray) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def _rel_error(self) -> float:
        raise NotImplementedError

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

    def score(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Scores of `rows` (default all groups) as float64 NumPy. On the float32 device
        path these are the float32 prefilter scores; `top` rescores its finalists."""
        rows = self._rows(rows)
        if len(rows) == 0:
            return np.zeros(0)
        if not self.spectra.on_device:
            return self._host_scores(rows)
        with self.spectra.precision():
            return np.asarray(self._device_scores(rows)[0], dtype=np.float64)[:len(rows)]

    def top(self, rows: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the k best rows, their scores, the scores of all `rows`), best first, ties to the
        earlier row; one device-to-host transfer on the device backend."""
        rows = self._rows(rows)
        if not self.spectra.on_device:
            scores = self._host_scores(rows)
            pick = np.argsort(-scores, kind="stable")[:k]
        elif self.spectra.device_float64:
            with self.spectra.precision():
                s, _ = self._device_scores(rows)
                pick, scores = jax.device_get((dev.top_rows(s, k=k), s))
            scores = np.asarray(scores, dtype=np.float64)[:len(rows)]
        else:
            s, traces = self._device_scores(rows)
            keep = dev.finalists(s, traces, self._rel_error(), k=k)
            scores, keep = jax.device_get((s, keep))
            scores = np.asarray(scores, dtype=np.float64)[:len(rows)]
            fin = np.flatnonzero(keep[:len(rows)])
            scores[fin] = self._host_scores(rows[fin])
            pick = fin[np.argsort(-scores[fin], kind="stable")[:k]]
            log.debug("float32 prefilter: %d of %d groups rescored in float64", len(fin), len(rows))
        pick = np.asarray(pick)
        return rows[pick], scores[pick], scores
