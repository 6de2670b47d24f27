"""λ⁺min of many small symmetric matrices, batched on the host.

CRC needs one eigenvalue of each of thousands of (d+1)² or (|L|+G)² matrices. LAPACK's
eigvalsh (no eigenvectors) on the host, one thread per call and one call per chunk of
matrices on each core, beats the alternatives measured on CPU: jnp.linalg.eigvalsh
computes eigenvectors too (2.5× slower at 129²), and OpenBLAS's own threads on matrices
this small oversubscribe the cores (30× slower at 129² on a busy 2-core machine). The
matrices are built chunk by chunk (about 16 MiB each), so memory stays bounded.

Each matrix is float64: float32 eigvalsh would lose the small eigenvalues CRC ranks by.
`ntk.min_positive_eigenvalue` is the jit-able definition; `rth_largest` is its host twin.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

CHUNK_BYTES = 1 << 24


def rth_largest(matrices: np.ndarray, rank: int) -> np.ndarray:
    """The r-th largest eigenvalue of each (…, n, n) symmetric matrix (lower triangle read),
    r = min(n, rank): ntk.min_positive_eigenvalue on the host, in float64."""
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


def score_rows(rows: np.ndarray, side: int, matrices: Callable[[np.ndarray], np.ndarray], rank: int,
               *, desc: str = "CRC scores") -> np.ndarray:
    """rth_largest(matrices(chunk), rank) over chunks of `rows`, one chunk per core at a time."""
    rows = np.asarray(rows)
    if len(rows) == 0:
        return np.zeros(0)
    per_chunk = int(np.clip(CHUNK_BYTES // (8 * side * side), 1, 1024))
    chunks = [rows[s:s + per_chunk] for s in range(0, len(rows), per_chunk)]
    workers = min(len(chunks), os.cpu_count() or 1)

    def score(chunk):
        return rth_largest(matrices(chunk), rank)

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        results = list(tqdm(pool.map(score, chunks), total=len(chunks), desc=desc, leave=False,
                            disable=None if len(chunks) > 20 else True))
    return np.concatenate(results)
