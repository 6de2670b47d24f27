"""λ⁺min of many small symmetric matrices on the accelerator: jitted, batched eigvalsh.

The device twin of `spectra` (host NumPy/LAPACK). The (d+1)² feature-side matrices
Z_BᵀZ_B + Z_gᵀZ_g, the (|B|+G)² bordered kernel-side ones and the Jacobian-side ones are
assembled and decomposed on the device, a fixed-size chunk of groups per jitted call
(one compile; the chunk bounded by the device's memory), and the scores stay on the device
until the caller has chosen its groups: one transfer per acquisition.

Each chunk returns, per group, what the rank rule needs (crc_jax.acquisition.crc.spectra):
the numerical rank ρ_g, λ⁺_g, the eigenvalue at one probed index, and the trace; the
caller (backend_gram) takes r = max ρ_g and the scores on the device (`attained`).

Precision. Where the device computes float64 (CPU, GPU) everything runs in float64 inside
`jax.enable_x64`, as the host backend does. A TPU has no float64: its float32 scores are a
prefilter. Its ranks count only eigenvalues certainly above the float64 tolerance
(`prefilter_slack`), so they are lower bounds; when one reaches the largest rank possible,
r is known and the probed eigenvalue is each group's float32 score. `finalists` keeps every
group that float32 error could lift above the cut (the bound is `rel_error(side)·trace(M)`,
a generous multiple of the eigenvalue perturbation bound n·ε₃₂·‖M‖₂) and at least the top
4·k, and the caller rescores those on the host in float64, so the chosen groups are those of
the float64 reference.

Backends: "host" (spectra), "device" (float64 where supported, else the float32 prefilter),
"device_f32" (the prefilter forced: what a TPU runs, testable on any machine), "auto"
(host on a CPU, device on a GPU/TPU).
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from crc_jax import ntk
from crc_jax.runtime import sharding

BACKENDS = ("auto", "host", "device", "device_f32")
CHUNK_BYTES_MAX = 1 << 30          # matrices of one chunk, before eigvalsh's workspace
CHUNK_BYTES_UNKNOWN = 1 << 26      # where the device reports no memory size (a CPU)
WORKSPACE_FACTOR = 4               # eigvalsh holds a few copies of its input
FINALIST_FACTOR = 4                # rescore at least the top 4·k groups on the host
HIGHEST = ntk.HIGHEST


def check_backend(backend) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"crc backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def resolve(backend: str, platform: str) -> str:
    """"auto" -> "host" on a CPU platform, "device" on a GPU/TPU; other names unchanged."""
    check_backend(backend)
    if backend != "auto":
        return backend
    return "host" if platform == "cpu" else "device"


def supports_float64(platform: str) -> bool:
    """Whether the platform's devices compute float64 natively (a TPU's do not)."""
    return platform != "tpu"


@dataclasses.dataclass(frozen=True)
class Spectra:
    """Where CRC's eigenvalues are computed, and in which precision: the value the Grams
    take (crc_jax.acquisition.crc.gram), built from a backend name by `spectra_for`.

    on_device: False for NumPy/LAPACK in float64 on the host CPU (crc_jax.acquisition.crc.spectra);
               True for jitted, batched eigvalsh on the accelerator.
    dtype:     "float64", or "float32" for the device prefilter (a TPU: float32 scores,
               the finalists rescored on the host in float64).
    """

    on_device: bool
    dtype: str

    @property
    def prefilter(self) -> bool:
        """Float32 device scores whose finalists the host rescores in float64."""
        return self.on_device and self.dtype == "float32"

    @property
    def device_float64(self) -> bool:
        return self.on_device and self.dtype == "float64"

    def precision(self):
        """The context device work runs in (float64 on the device needs jax.enable_x64)."""
        return jax.enable_x64(self.device_float64)

    def describe(self) -> dict:
        """What ran, for the journal: {"backend": "host"|"device", "dtype": ...}."""
        return {"backend": "device" if self.on_device else "host", "dtype": self.dtype}


HOST = Spectra(on_device=False, dtype="float64")


def spectra_for(backend: str | Spectra = "auto", platform: str | None = None) -> Spectra:
    """The Spectra of a backend name (see the module docstring), on `platform` (default
    JAX's default backend, asked here once): "auto" is the host on a CPU, the device
    elsewhere. CRC's strategies call it once, when they are built; a Spectra passes
    through unchanged."""
    if isinstance(backend, Spectra):
        return backend
    platform = jax.default_backend() if platform is None else platform
    resolved = resolve(backend, platform)
    if resolved == "host":
        return HOST
    f32 = resolved == "device_f32" or not supports_float64(platform)
    return Spectra(on_device=True, dtype="float32" if f32 else "float64")


def rows_per_chunk(side: int, n_rows: int, itemsize: int = 8) -> int:
    """Matrices per jitted call: bounded by CHUNK_BYTES_MAX and 1/16 of device memory
    (CHUNK_BYTES_UNKNOWN where the device does not say), a power of two (few compiles) no
    larger than needed for `n_rows`."""
    limit = sharding.device_bytes_limit()
    budget = min(CHUNK_BYTES_MAX, limit // 16) if limit else CHUNK_BYTES_UNKNOWN
    fit = max(1, budget // (WORKSPACE_FACTOR * itemsize * side * side))
    want = 1 << max(0, int(np.ceil(np.log2(max(1, n_rows)))))
    return int(max(1, min(want, 1 << int(np.floor(np.log2(fit))))))


def prefilter_slack(side: int, group_size: int, rtol: float) -> float:
    """Multiple of trace(M) an eigenvalue of the float32 prefilter must exceed to be
    certainly above the float64 tolerance rtol·λmax: rel_error covers float32 error, and
    λmax ≤ trace(M)."""
    return rel_error(side, group_size) + 2.0 * rtol


def rel_error(side: int, group_size: int) -> float:
    """Bound on |λ₃₂ − λ| / trace(M) for float32 assembly and eigvalsh of a PSD matrix."""
    return 4.0 * (side + group_size) * ntk.FLOAT32_EPS


# --------------------------------------------------------------------------- matrices

def _summary(m, rtol, slack, u_idx):
    """Per (b, n, n) symmetric matrix: (ρ, λ⁺, the u_idx-th smallest eigenvalue, trace).

    ρ counts the eigenvalues above rtol·λmax + slack·|trace| (spectra.positive_spectrum's
    rule for slack = 0; on the float32 prefilter slack covers float32 error, so ρ is a
    lower bound on the float64 rank), λ⁺ is the smallest of them (0 when ρ = 0).
    """
    ev = jnp.linalg.eigvalsh(m, symmetrize_input=False)            # ascending
    n = ev.shape[1]
    tr = _trace(m)
    top = ev[:, -1]
    thr = rtol * jnp.maximum(top, 0) + slack * jnp.abs(tr)
    rank = jnp.where(top > 0, jnp.sum(ev > thr[:, None], axis=1), 0)
    lam = jnp.take_along_axis(ev, jnp.clip(n - rank, 0, n - 1)[:, None], axis=1)[:, 0]
    at_u = jax.lax.dynamic_index_in_dim(ev, u_idx, axis=1, keepdims=False)
    return rank, jnp.where(rank > 0, lam, 0), at_u, tr


def _trace(m):
    return jnp.trace(m, axis1=1, axis2=2)


def _bordered(k_bb, k_gb, k_gg):
    """[[K_BB, K_Bg], [K_gB, K_gg]] (full, symmetric) for k_gb (b, G, nB), k_gg (b, G, G)."""
    b = k_gb.shape[0]
    top = jnp.concatenate([jnp.broadcast_to(k_bb, (b, *k_bb.shape)), jnp.swapaxes(k_gb, 1, 2)], 2)
    return jnp.concatenate([top, jnp.concatenate([k_gb, k_gg], axis=2)], axis=1)


@jax.jit
def feature_side(z, gram_base, groups, rtol, slack, u_idx):
    """_summary of Z_BᵀZ_B + Z_gᵀZ_g for a chunk of groups (b, G) of rows of z."""
    zg = z[groups]
    m = gram_base[None] + jnp.einsum("bgi,bgj->bij", zg, zg, precision=HIGHEST)
    return _summary(m, rtol, slack, u_idx)


@jax.jit
def kernel_side(z, z_b, k_bb, groups, rtol, slack, u_idx):
    """_summary of the bordered Z_S Z_Sᵀ, S = B ∪ g, for a chunk of groups (b, G)."""
    zg = z[groups]
    k_gb = jnp.einsum("bgd,nd->bgn", zg, z_b, precision=HIGHEST)
    k_gg = jnp.einsum("bgd,bhd->bgh", zg, zg, precision=HIGHEST)
    return _summary(_bordered(k_bb, k_gb, k_gg), rtol, slack, u_idx)


@jax.jit
def jacobian_side(k_bb, k_bc, k_gg, rows, rtol, slack, u_idx):
    """_summary of the bordered trace NTK for a chunk of group rows, from K̃(B, B),
    K̃(B, candidates) (nB, n_groups·G) and within-group blocks (n_groups, G, G)."""
    g = k_gg.shape[1]
    pos = rows[:, None] * g + jnp.arange(g)
    k_gb = jnp.moveaxis(k_bc[:, pos], 0, 2)
    return _summary(_bordered(k_bb, k_gb, k_gg[rows]), rtol, slack, u_idx)


@partial(jax.jit, static_argnames=("bias",))
def gram_of(phi, *, bias: bool):
    """(Z, ZᵀZ or ZZᵀ, the smaller) with Z = [Φ, 1] (Φ without bias), in the dtype of phi."""
    z = jnp.concatenate([phi, jnp.ones((phi.shape[0], 1), phi.dtype)], axis=1) if bias else phi
    return z, ntk.device_gram(z)


@jax.jit
def rank_from_gram(gram, rtol):
    """ntk.feature_rank's count on the device: eigenvalues of ZᵀZ (or ZZᵀ) above rtol²·λmax."""
    ev = jnp.linalg.eigvalsh(gram)
    return jnp.where(ev[-1] > 0, jnp.sum(ev > rtol ** 2 * ev[-1]), 0)


@dataclasses.dataclass(frozen=True)
class Summaries:
    """Per-group spectra summaries on the device, padded to a whole number of chunks
    (the padding repeats row 0): rank ρ_g, λ⁺_g, the eigenvalue at the probed index, and
    trace K̃(B ∪ g); `n` real rows."""

    rank: jax.Array
    lam: jax.Array
    at_u: jax.Array
    trace: jax.Array
    n: int


def score_chunks(kernel, args: tuple, rows: np.ndarray, per_chunk: int, *, rtol: float,
                 slack: float, u_idx) -> Summaries:
    """kernel(*args, chunk_rows, rtol, slack, u_idx) over fixed-size chunks of `rows` (the
    last padded with rows[0]). Padded lengths change rarely, so the sequential variants
    (one row fewer each round) reuse compiled code. No host synchronization."""
    rows = np.asarray(rows)
    n = len(rows)
    padded = np.concatenate([rows, np.repeat(rows[:1], -n % per_chunk, axis=0)])
    chunks = jnp.asarray(padded.reshape(-1, per_chunk, *rows.shape[1:]))
    outs = [kernel(*args, chunks[i], rtol, slack, u_idx) for i in range(chunks.shape[0])]
    rank, lam, at_u, trace = (jnp.concatenate([o[i] for o in outs]) for i in range(4))
    return Summaries(rank, lam, at_u, trace, n)


@jax.jit
def attained(rank, lam, n):
    """(r, ranks, scores) of padded summaries: r the largest rank of the n real rows,
    scores λ⁺ where the rank reaches r, 0 elsewhere, -inf on the padding (spectra.at_rank)."""
    valid = jnp.arange(rank.shape[0]) < n
    rank = jnp.where(valid, rank, 0)
    r = jnp.max(rank)
    scores = jnp.where(rank >= r, lam, jnp.zeros_like(lam))
    return r, rank, jnp.where(valid, scores, -jnp.inf)


@jax.jit
def masked(scores, n):
    """scores with the padding (positions ≥ n) set to -inf."""
    return jnp.where(jnp.arange(scores.shape[0]) < n, scores, -jnp.inf)


# --------------------------------------------------------------------------- selection

@partial(jax.jit, static_argnames=("k",))
def top_rows(scores, *, k: int):
    """Positions of the k highest scores, ties to the earlier position (as crc.top_groups)."""
    return jnp.argsort(-scores, stable=True)[:k]


@partial(jax.jit, static_argnames=("k",))
def finalists(scores, traces, rel, *, k: int):
    """Mask of the groups whose float64 score could be among the top k given float32
    scores: the top FINALIST_FACTOR·k, and every group whose score plus its error bound
    reaches the cut (the k-th score) minus the largest error bound of the top k."""
    err = rel * jnp.abs(traces)
    order = jnp.argsort(-scores, stable=True)
    cut = scores[order[k - 1]]
    keep = scores + err >= cut - jnp.max(err[order[:k]])
    top = jnp.zeros(scores.shape, bool).at[order[:FINALIST_FACTOR * k]].set(True)
    return keep | top
