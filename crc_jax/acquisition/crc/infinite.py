"""CRC scored with the infinite-width NTK of an architecture (strategy "crc_infinite").

Algorithm 1 of the paper with K̃ = C·K_inf, the class-trace infinite-width NTK of the
MLP or CNN (crc_jax.infinite, NTK parameterization): a random partition of the
unlabeled pool into groups of G (or `max_groups` of them), s(g) = λmin(K̃(L ∪ g, L ∪ g)),
the top budget/G groups labeled. The kernel depends on the architecture and the
images only, not on a trained model, so the labeled set it builds can be reused across
models and seeds (the transferability question of Appendix B.2). It needs the `infinite`
extra (neural-tangents): without it, building the strategy raises one `MissingExtra` line.

Rank. CRC's rank rule (crc_jax.acquisition.crc.spectra): the groups are scored at the largest
numerical rank r any of them reaches. The infinite ReLU NTK is full rank on distinct
inputs that are not positive multiples of one another, so r = |L ∪ g| and s(g) = λmin.
The kernel is computed in float64 (crc_jax.infinite.in_float64) from float32 images, on
the host CPU when the default device is a TPU (crc_jax.infinite.float64_context); an
eigenvalue below the float32 floor n·ε_float32·λmax (spectra.kernel_rtol) is numerically
zero, so a group repeating an image, or a labeled one, scores 0 (Proposition 2), as in crc.

Cost and memory. Each group needs K̃(L, L), K̃(L, g) and K̃(g, g). `KernelRows` keeps
K̃(i, j) for pool indices i (labeled images and the candidates scored so far) against
labeled indices j, filled on demand and reused at later steps: a step computes only
the rows of new candidates and the columns of newly labeled images. Within-group blocks
are computed per group (batched with vmap). Storage is |rows|·|L| float64 values,
never pool × pool; `max_groups` bounds |rows| on a large pool. The MLP kernel costs
microseconds per pair; the CNN's (full spatial covariances, needed by its pooling)
about 1 ms per pair of 8×8 images on a 2-core CPU, and memory ∝ (H·W)² per pair, so
32×32 images (SVHN, CIFAR) call for arch="mlp". Measured on the digits pool (1347
images, L = 20 → 40, G = 5, 2 busy CPU cores): arch mlp 17 s for the first step
(neural-tangents import and compiles included), then 2–4 s; the CNN 60 s, then
30–45 s per step.
"""

from __future__ import annotations

import logging
import time
from functools import partial

import jax
import numpy as np

from crc_jax import infinite
from crc_jax.runtime import extras
from crc_jax.acquisition.crc import crc as crc_lib
from crc_jax.acquisition.crc import spectra
from crc_jax.acquisition.crc.backend_gram import BackendGram
from crc_jax.acquisition.context import Context, check_budget
from crc_jax.acquisition.registry import register

log = logging.getLogger(__name__)

ARCHS = ("mlp", "cnn")
GROUP_INPUT_VALUES = 1 << 22   # image values per within-group kernel call (32 MiB in float64)


class KernelRows:
    """K̃_inf(i, j) between pool images x[i] and x[j], computed once per pair of indices.

    `block(rows, cols)` returns the (len(rows), len(cols)) float64 block, computing only
    the entries not held yet, `batch_size` rows at a time. Held entries form one dense
    float64 array over the rows and columns asked for so far (8·rows·columns bytes).
    """

    def __init__(self, kernel_fn, x: np.ndarray, *, num_classes: int, batch_size: int):
        self.kernel_fn, self.x = kernel_fn, x
        self.num_classes, self.batch_size = num_classes, batch_size
        self.row_of: dict[int, int] = {}
        self.col_of: dict[int, int] = {}
        self.values = np.zeros((0, 0))
        self.evaluations = 0          # kernel entries computed so far

    def _compute(self, rows, cols) -> np.ndarray:
        """K̃(x[rows], x[cols]), gathering `batch_size` row images at a time."""
        x_cols = self.x[cols]
        out = np.empty((len(rows), len(cols)))
        for s in range(0, len(rows), self.batch_size):
            out[s:s + self.batch_size] = infinite.infinite_trace_ntk(
                self.kernel_fn, self.x[rows[s:s + self.batch_size]], x_cols,
                num_classes=self.num_classes, batch_size=self.batch_size)
        return out

    def _grow(self, rows, cols) -> None:
        new_rows = [int(i) for i in dict.fromkeys(np.asarray(rows).tolist()) if i not in self.row_of]
        new_cols = [int(j) for j in dict.fromkeys(np.asarray(cols).tolist()) if j not in self.col_of]
        if not new_rows and not new_cols:
            return
        old_r, old_c = self.values.shape
        values = np.empty((old_r + len(new_rows), old_c + len(new_cols)))
        values[:old_r, :old_c] = self.values
        for i in new_rows:
            self.row_of[i] = len(self.row_of)
        for j in new_cols:
            self.col_of[j] = len(self.col_of)
        all_cols = np.fromiter(self.col_of, dtype=np.int64)
        if new_cols and old_r:
            values[:old_r, old_c:] = self._compute(np.fromiter(self.row_of, np.int64)[:old_r],
                                                   np.asarray(new_cols))
        if new_rows and len(all_cols):
            values[old_r:, :] = self._compute(np.asarray(new_rows), all_cols)
        self.evaluations += old_r * len(new_cols) + len(new_rows) * len(all_cols)
        self.values = values

    def block(self, rows, cols) -> np.ndarray:
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        self._grow(rows, cols)
        r = np.asarray([self.row_of[int(i)] for i in rows], np.int64)
        c = np.asarray([self.col_of[int(j)] for j in cols], np.int64)
        return self.values[np.ix_(r, c)]


@partial(jax.jit, static_argnums=(0,))
def _within_groups(kernel_fn, xg):
    """(k, G, G) per-output kernel blocks within each group of images xg (k, G, ...)."""
    return jax.vmap(lambda a: kernel_fn(a, None))(xg)


class InfiniteGram(BackendGram):
    """Scores of candidate groups against a base set B (the labeled set, grown by
    `extend_base` in the sequential variant), with the Gram interface of
    crc_jax.acquisition.crc.gram (score, top, extend_base, rank, describe), on the host."""

    def __init__(self, rows: KernelRows, groups: np.ndarray, base: np.ndarray):
        """K̃(B, B), K̃(candidates, B) from `rows`; the within-group blocks K̃(g, g) fresh,
        as many groups per kernel call as `rows.batch_size`² pairs and GROUP_INPUT_VALUES
        input values allow."""
        self.rows, self.groups = rows, np.asarray(groups, np.int64)
        self.base = np.asarray(base, np.int64)
        self.cand = self.groups.ravel()
        self._rank = None   # full rank: r = |B ∪ g|
        self.k_bb = rows.block(self.base, self.base)
        self.k_cb = rows.block(self.cand, self.base)           # (candidates, B)
        g = self.groups.shape[1]
        image_size = int(np.prod(rows.x.shape[1:]))
        group_batch = max(1, min(rows.batch_size ** 2 // g ** 2, GROUP_INPUT_VALUES // (g * image_size)))
        blocks = []
        with infinite.float64_context():   # on the host CPU when the default device is a TPU
            for s in range(0, len(self.groups), group_batch):
                chunk = self.groups[s:s + group_batch]
                xg = infinite.pad_rows(rows.x[chunk], group_batch)
                within = _within_groups(rows.kernel_fn, infinite.in_float64(xg))
                blocks.append(np.asarray(within)[:len(chunk)])
        self.k_gg = (rows.num_classes * np.concatenate(blocks) if blocks
                     else np.zeros((0, g, g)))

    def extend_base(self, picked) -> None:
        new = self.groups[np.asarray(picked)].ravel()
        k_nb = self.rows.block(new, self.base)
        k_nn = self.rows.block(new, new)
        self.k_bb = np.block([[self.k_bb, k_nb.T], [k_nb, k_nn]])
        self.k_cb = np.concatenate([self.k_cb, self.rows.block(self.cand, new)], axis=1)
        self.base = np.concatenate([self.base, new])

    def _base_matrix(self) -> np.ndarray:
        return self.k_bb

    def _base_trace(self) -> float:
        return float(np.trace(self.k_bb))

    def _group_traces(self, rows: np.ndarray) -> np.ndarray:
        return np.trace(self.k_gg[rows], axis1=1, axis2=2)

    def _side(self) -> tuple[int, int]:
        n = len(self.base) + self.groups.shape[1]
        return n, n

    def _rtol(self) -> float:
        return spectra.kernel_rtol(self._side()[0])

    def _host_spectra(self, which: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rank, λ⁺) of K̃(B ∪ g) per group, eigenvalues below n·ε_float32·λmax read as 0."""
        g = self.groups.shape[1]

        def matrices(r):
            pos = r[:, None] * g + np.arange(g)                        # (b, G)
            return spectra.bordered(self.k_bb, self.k_cb[pos], self.k_gg[r])

        return spectra.score_rows(which, self._side()[0], matrices, self._rtol(),
                                  desc="CRC-infinite scores")


def architecture(ctx: Context, arch: str | None, depth: int | None):
    """The Flax module whose infinite-width NTK scores groups: ctx.model's, or `arch`'s."""
    from crc_jax import models
    from crc_jax.models.cnn import CNN
    from crc_jax.models.mlp import MLP

    if arch is None:
        model = ctx.model
        if not isinstance(model, (MLP, CNN)):
            raise ValueError(f"crc_infinite: no infinite-width counterpart for "
                             f"{type(model).__name__}; pass arch='mlp' or arch='cnn'")
        if isinstance(model, CNN) and model.batch_norm:
            log.info("crc_infinite: scoring with the BatchNorm-free CNN's infinite NTK")
            model = model.clone(batch_norm=False)
        return model
    options = {"depth": depth} if depth else {}
    if arch == "cnn":
        options["batch_norm"] = False
    return models.get(arch, num_classes=ctx.num_classes, **options)


@register("crc_infinite", group_size=True)
def make_crc_infinite(group_size: int | None = None, max_groups: int | None = None,
                      arch: str | None = None, depth: int | None = None,
                      sequential: bool = False, kernel_batch: int | None = None):
    """CRC on the infinite-width NTK. group_size=None means G = budget; arch=None uses
    ctx.model's architecture ("mlp" or "cnn" pick one, `depth` for the MLP);
    kernel_batch: rows per kernel call (None: infinite.kernel_batch_size). group_size and
    max_groups are checked by acquisition.from_spec, a budget by Strategy.check_budget."""
    if arch is not None and arch not in ARCHS:
        raise ValueError(f"crc_infinite arch must be one of {ARCHS} or None, got {arch!r}")
    if kernel_batch is not None and (not isinstance(kernel_batch, (int, np.integer)) or kernel_batch < 1):
        raise ValueError(f"crc_infinite kernel_batch must be a positive integer, got {kernel_batch!r}")
    if depth is not None and (arch != "mlp" or not isinstance(depth, (int, np.integer)) or depth < 1):
        raise ValueError(f"crc_infinite depth must be a positive integer, with arch='mlp'; "
                         f"got depth={depth!r}, arch={arch!r}")
    extras.require("infinite", "strategy 'crc_infinite'")   # before any work: the config check
    held: dict = {}   # the kernel rows of this strategy's pool, kept across steps

    def kernel_rows(ctx: Context) -> KernelRows:
        model = architecture(ctx, arch, depth)
        key = (model, ctx.num_classes)
        rows = held.get("rows")
        if rows is None or rows.x is not ctx.x or held.get("key") != key:
            batch = kernel_batch or infinite.kernel_batch_size(model, ctx.x.shape[1:])
            rows = KernelRows(infinite.infinite_kernel_fn(model), ctx.x,
                              num_classes=ctx.num_classes, batch_size=batch)
            held.update(rows=rows, key=key)
        return rows

    def crc_infinite(ctx: Context, budget: int, key) -> np.ndarray:
        check_budget(ctx, budget)
        g = budget if group_size is None else int(group_size)
        need = budget // g
        start = time.perf_counter()
        groups = crc_lib.random_groups(key, ctx.unlabeled, g, max_groups)
        if len(groups) < need:
            raise ValueError(f"crc_infinite needs {need} groups of {g} but max_groups={max_groups} "
                             f"leaves {len(groups)}")
        rows = kernel_rows(ctx)
        before = rows.evaluations
        gram = InfiniteGram(rows, groups, np.asarray(ctx.labeled))
        picked, chosen, scores, diag = crc_lib.choose(gram, need, sequential=sequential,
                                                      desc="CRC-infinite rounds")
        # the journal record holds what identical runs reproduce; timings and cache counters
        # (which depend on what an earlier step of this process computed) go to the log
        ctx.record["crc_infinite"] = {
            "group_size": g, "sequential": bool(sequential), "chosen_scores": chosen,
            **crc_lib.summarize(scores), "diagnostics": diag}
        log.info("crc_infinite: %d groups of %d scored in %.2fs (%d new kernel entries, %d rows held)",
                 len(groups), g, time.perf_counter() - start, rows.evaluations - before,
                 len(rows.row_of))
        return groups[np.asarray(picked)].ravel()

    crc_infinite.kernel_rows = kernel_rows  # type: ignore[attr-defined]  # tests check reuse
    crc_infinite.score_groups = lambda ctx, groups: InfiniteGram(  # type: ignore[attr-defined]
        kernel_rows(ctx), np.asarray(groups, np.int64), np.asarray(ctx.labeled)).score()
    return crc_infinite
