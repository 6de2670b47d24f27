"""λ⁺min of many small symmetric matrices, batched on the host.

CRC needs one eigenvalue of each of thousands of (d+1)² or (|L|+G)² matrices. LAPACK's
eigvalsh (no eigenvectors) on the host, one thread per call and one call per chunk of
matrices on each core, beats the alternatives measured on CPU: jnp.linalg.eigvalsh
computes eigenvectors too (2.5× slower at 129²), and OpenBLAS's own threads on matrices
this small oversubscribe the cores (30× slower at 129² on a busy 2-core machine). The
matrices are built chunk by chunk (about 16 MiB each), so memory stays bounded.

Each matrix is float64: float32 eigvalsh would lose the small eigenvalues CRC ranks by.

The rule (docs/design.md "CRC, exactly"). Each matrix M_g = K̃(B ∪ g) has a numerical rank
ρ_g, the number of eigenvalues above rtol·λmax(M_g) (rtol tied to the float resolution of
the kernel, `FEATURE_RTOL` / `kernel_rtol`), and λ⁺(M_g), its smallest eigenvalue above
that tolerance. A batch of groups is scored at r = min(|B ∪ g|, max_g ρ_g), the largest
rank any scored group reaches: s(g) = λ⁺(M_g) if ρ_g = r, else 0 (`at_rank`). Because
ρ_g ≤ r always, that is the r-th largest eigenvalue of M_g with everything below the
tolerance read as 0: a group that repeats an image, or a labeled one, falls short of the
rank the others reach and scores 0 (Proposition 2).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

CHUNK_BYTES = 1 << 24
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def feature_rtol(width: int) -> float:
    """Eigenvalue tolerance of a float64 Gram ZᵀZ (or ZZᵀ) of float32 features Z with
    `width` columns: singular values of Z below width·ε₃₂·σmax are rounding noise
    (ntk.feature_rank's rule), so eigenvalues below (width·ε₃₂)²·λmax are."""
    return float((width * FLOAT32_EPS) ** 2)


def kernel_rtol(side: int) -> float:
    """Eigenvalue tolerance of a side×side kernel whose entries carry float32 rounding
    (per-sample Jacobians contracted in float32; images held in float32): side·ε₃₂, at
    least the Weyl bound ε₃₂·trace ≤ side·ε₃₂·λmax of one rounding of every entry."""
    return float(side * FLOAT32_EPS)


def positive_spectrum(matrices: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """(ρ, λ⁺) of each (…, n, n) symmetric matrix (lower triangle read), float64: ρ the
    number of eigenvalues above rtol·λmax (0 when λmax ≤ 0), λ⁺ the smallest of them
    (0 when ρ = 0)."""
    ev = np.linalg.eigvalsh(matrices)                              # ascending
    n = ev.shape[-1]
    top = ev[..., -1]
    ranks = np.where(top > 0, np.sum(ev > (rtol * np.maximum(top, 0.0))[..., None], axis=-1), 0)
    idx = np.clip(n - ranks, 0, n - 1)
    lam = np.take_along_axis(ev, idx[..., None], axis=-1)[..., 0]
    return ranks.astype(np.int64), np.where(ranks > 0, lam, 0.0)


def attainable_rank(ranks: np.ndarray) -> int:
    """r: the largest rank any scored group reaches (each ρ_g ≤ |B ∪ g|); 0 when none."""
    ranks = np.asarray(ranks)
    return int(ranks.max()) if ranks.size else 0


def at_rank(ranks: np.ndarray, lam_plus: np.ndarray, r: int) -> np.ndarray:
    """Scores at rank r: λ⁺ of the groups whose rank reaches r, 0 for the others."""
    return np.where(np.asarray(ranks) >= r, np.asarray(lam_plus, np.float64), 0.0)


def rth_largest(matrices: np.ndarray, rank: int) -> np.ndarray:
    """The r-th largest eigenvalue of each (…, n, n) symmetric matrix (lower triangle read),
    r = min(n, rank), in float64 (ntk.min_positive_eigenvalue on the host)."""
    n = matrices.shape[-1]
    r = int(np.clip(min(n, rank), 1, n))
    return np.linalg.eigvalsh(matrices)[..., n - r]


def updated(gram_base: np.ndarray, zg: np.ndarray) -> np.ndarray:
    """Z_BᵀZ_B + Z_gᵀZ_g for a chunk zg (b, G, D) of groups: (b, D, D)."""
    return gram_base[None] + np.matmul(np.swapaxes(zg, 1, 2), zg)


def bordered(k_bb: np.ndarray, k_gb: np.ndarray, k_gg: np.ndarray) -> np.ndarray:
    """Lower triangles of [[K_BB, K_Bg], [K_gB, K_gg]] for a chunk: k_gb (b, G, nB), k_gg (b, G, G)."""
    b, g, nb = k_gb.shape
    out = np.empty((b, nb + g, nb + g))
    out[:, :nb, :nb] = k_bb
    out[:, nb:, :nb] = k_gb
    out[:, nb:, nb:] = k_gg
    out[:, :nb, nb:] = 0.0            # never read (UPLO="L"); set so the array is defined
    return out


def score_rows(rows: np.ndarray, side: int, matrices: Callable[[np.ndarray], np.ndarray],
               rtol: float, *, desc: str = "CRC scores") -> tuple[np.ndarray, np.ndarray]:
    """positive_spectrum(matrices(chunk), rtol) over chunks of `rows`, one chunk per core at
    a time: (ρ_g, λ⁺_g) of every row."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    per_chunk = int(np.clip(CHUNK_BYTES // (8 * side * side), 1, 1024))
    chunks = [rows[s:s + per_chunk] for s in range(0, len(rows), per_chunk)]
    workers = min(len(chunks), os.cpu_count() or 1)

    def score(chunk):
        return positive_spectrum(matrices(chunk), rtol)

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(score, chunks), total=len(chunks), desc=desc, leave=False,
                            disable=None if len(chunks) > 20 else True))
    return np.concatenate([r for r, _ in results]), np.concatenate([lam for _, lam in results])
