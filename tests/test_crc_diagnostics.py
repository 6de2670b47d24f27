"""CRC's diagnostics (issue 27): the ceiling, chosen and runner-up scores, gap, resolution and
tie of every CRC record, against a float64 brute force that shares no code with crc_jax: the
features and Jacobians (jax.jacrev) of the model recomputed in float64, every candidate
group's kernel decomposed with eigvalsh."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crc_jax.acquisition import Context, from_spec
from crc_jax.acquisition.crc import diagnostics
from crc_jax.acquisition.crc import crc as crc_lib

C = 3
WIDTH = 8            # Φ has 8 columns: the last-layer kernel's rank is ρ = 9
EPS32 = float(np.finfo(np.float32).eps)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, return_features=False):
        h = nn.tanh(nn.Dense(WIDTH)(x))
        logits = nn.Dense(C, name="head")(h)
        return (logits, h) if return_features else logits


MODEL = MLP()
X = np.random.default_rng(0).normal(size=(70, 4)).astype(np.float32)
VARIABLES = MODEL.init(jax.random.PRNGKey(0), X[:1])


def make_ctx(labeled, x=X, labels=None):
    labeled = np.asarray(labeled, np.int64)
    return Context(apply_fn=MODEL.apply, variables=VARIABLES, x=x, labeled=labeled,
                   unlabeled=np.setdiff1d(np.arange(len(x)), labeled), num_classes=C,
                   features_fn=lambda v, xx: MODEL.apply(v, xx, return_features=True)[1],
                   batch_size=32, oracle=None if labels is None else (lambda idx: labels[idx]))


# ------------------------------------------------------------------ the float64 reference

def kernel64(x, subset):
    """The class-trace NTK over the pool, recomputed in float64 from the parameters."""
    with jax.enable_x64(True):
        v64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), VARIABLES)
        x64 = jnp.asarray(x, jnp.float64)
        if subset == "last":           # K̃ = C·(ΦΦᵀ + 1) on the head's input Φ
            phi = np.asarray(MODEL.apply(v64, x64, return_features=True)[1])
            z = np.concatenate([phi, np.ones((len(phi), 1))], axis=1)
            return C * z @ z.T, int(np.linalg.matrix_rank(z, tol=1e-10 * np.linalg.norm(z, 2)))
        jac = jax.jacrev(lambda p: MODEL.apply({"params": p}, x64))(v64["params"])   # (N, C, …)
        flat = np.concatenate([np.asarray(j).reshape(len(x), C, -1)
                               for j in jax.tree_util.tree_leaves(jac)], axis=2)
        return np.einsum("icp,jcp->ij", flat, flat), None


def rth_largest(k, r):
    return np.linalg.eigvalsh(k)[::-1][r - 1]


def reference(x, labeled, groups, subset, k):
    """Every group's score, the ceiling, the cut and runner-up of choosing k groups, and the
    resolution, by brute force."""
    kern, rho = kernel64(x, subset)
    g = groups.shape[1]
    n = len(labeled) + g
    r = n if rho is None else min(n, rho)
    mats = [kern[np.ix_(s, s)] for s in (np.concatenate([labeled, grp]) for grp in groups)]
    scores = np.array([rth_largest(m, r) for m in mats])
    order = np.argsort(-scores, kind="stable")
    cut, runner = order[k - 1], order[k]
    k_ll = kern[np.ix_(labeled, labeled)]
    ceiling = rth_largest(k_ll, r - g) if r > g else None
    traces = np.trace(mats[cut]) + np.trace(mats[runner])
    return dict(scores=scores, ceiling=ceiling, chosen=scores[cut], runner_up=scores[runner],
                resolution=EPS32 * traces / scores[cut], rank_used=r, k_ll=k_ll, rho=rho)


# ------------------------------------------------------------------ against the reference

@pytest.mark.parametrize("subset,n_labeled,group_size,k", [
    ("last", 4, 3, 1),     # |L| + G = 7 ≤ ρ = 9: the ceiling is λmin(K̃(L, L))
    ("last", 7, 3, 2),     # |L| < ρ < |L| + G: r = ρ, the ceiling the (ρ − G)-th eigenvalue
    ("last", 12, 3, 1),    # |L| > ρ: beyond the rank
    ("all", 5, 3, 2),      # full rank: λmin(K̃(L, L))
])
def test_diagnostics_equal_the_float64_brute_force(subset, n_labeled, group_size, k):
    labeled = np.arange(n_labeled)
    ctx = make_ctx(labeled)
    key = jax.random.PRNGKey(n_labeled)
    picked = from_spec(f"crc:group_size={group_size},subset={subset}")(ctx, k * group_size, key)
    diag = json.loads(json.dumps(ctx.record))["crc"]["diagnostics"]
    groups = crc_lib.random_groups(key, ctx.unlabeled, group_size)
    ref = reference(X, labeled, groups, subset, k)
    gap = (ref["chosen"] - ref["runner_up"]) / ref["chosen"]
    assert gap > 1e-3 and ref["ceiling"] > 0                      # a well-posed case
    np.testing.assert_allclose(np.sort(ctx.record["crc"]["all_scores"]), np.sort(ref["scores"]), rtol=1e-4)
    assert diag["rank_used"] == ref["rank_used"] and diag["n_groups"] == len(groups)
    for field in ("ceiling", "chosen", "runner_up", "resolution"):
        assert diag[field] == pytest.approx(ref[field], rel=1e-4), field
    assert diag["gap"] == pytest.approx(gap, rel=1e-3)
    assert diag["tie"] is bool(gap <= ref["resolution"])
    assert {tuple(g) for g in picked.reshape(-1, group_size)} <= {tuple(g) for g in groups}
    # the ceiling bounds every group; beyond the rank λ⁺min(K̃(L, L)) bounds them from below
    assert ref["scores"].max() <= ref["ceiling"] * (1 + 1e-9)
    if ref["rho"] is not None and n_labeled > ref["rho"]:
        lam_plus = rth_largest(ref["k_ll"], ref["rho"])
        assert ref["scores"].min() >= lam_plus * (1 - 1e-9)
        assert ref["scores"].max() > lam_plus                     # so it is no ceiling there


def test_the_ceiling_is_an_upper_bound_in_every_regime():
    """Random PSD kernels of low rank (Z Zᵀ), every base and group size: s(g) ≤ ceiling,
    and λ⁺min(K(L, L)) fails as a bound only beyond the rank."""
    rng = np.random.default_rng(1)
    beyond_rank_violations = 0
    for _ in range(400):
        d, nb, g = rng.integers(2, 9), rng.integers(1, 12), rng.integers(1, 5)
        z = rng.normal(size=(nb + g, d))
        k = z @ z.T
        n = nb + g
        r = min(n, d)
        score = rth_largest(k, r)
        i = diagnostics.ceiling_index(g, r)
        if i is not None:
            assert score <= rth_largest(k[:nb, :nb], i) * (1 + 1e-9) + 1e-12
        lam_plus = rth_largest(k[:nb, :nb], min(nb, d))
        if score > lam_plus * (1 + 1e-9) + 1e-12:
            assert n > d                                 # only beyond the rank
            beyond_rank_violations += 1
    assert beyond_rank_violations > 0


def test_cold_start_has_no_ceiling():
    ctx = make_ctx([])
    from_spec("crc:group_size=3")(ctx, 3, jax.random.PRNGKey(0))
    diag = ctx.record["crc"]["diagnostics"]
    assert diag["ceiling"] is None and diag["rank_used"] == 3 and diag["runner_up"] is not None


def test_every_group_chosen_has_no_runner_up():
    ctx = make_ctx(np.arange(4))
    from_spec("crc:group_size=3,max_groups=2")(ctx, 6, jax.random.PRNGKey(0))
    diag = ctx.record["crc"]["diagnostics"]
    assert diag["runner_up"] is None and diag["gap"] is None and diag["tie"] is False


def test_sequential_rounds_against_the_brute_force():
    labeled = np.arange(4)
    ctx = make_ctx(labeled)
    key = jax.random.PRNGKey(3)
    picked = from_spec("crc:group_size=2,sequential=True")(ctx, 6, key)
    diag = ctx.record["crc"]["diagnostics"]
    groups = crc_lib.random_groups(key, ctx.unlabeled, 2)
    assert len(diag["rounds"]) == 3 and diag["rounds"][0]["chosen"] == diag["chosen"]
    base, remaining = labeled, list(range(len(groups)))
    for rnd, got in zip(picked.reshape(3, 2), diag["rounds"]):
        ref = reference(X, base, groups[remaining], "last", 1)
        assert got["chosen"] == pytest.approx(ref["chosen"], rel=1e-4)
        assert got["runner_up"] == pytest.approx(ref["runner_up"], rel=1e-4)
        remaining = [j for j in remaining if not np.array_equal(groups[j], rnd)]
        base = np.concatenate([base, rnd])
    assert diag["tie"] is any(r["tie"] for r in diag["rounds"])


def test_a_duplicated_best_candidate_is_a_tie():
    """Every image twice: the best single candidate and its copy score the same, so the
    greedy pick between them is a tie; the same pool without copies is not."""
    x = np.concatenate([X[:35], X[:35]])
    for pool, tie in ((x, True), (X, False)):
        ctx = make_ctx(np.arange(5), x=pool)
        from_spec("crc_greedy")(ctx, 1, jax.random.PRNGKey(0))
        diag = ctx.record["crc_greedy"]["diagnostics"]
        assert diag["tie"] is tie, diag
        if tie:
            assert diag["gap"] < 1e-9 < diag["resolution"]
        else:
            assert diag["gap"] > diag["resolution"]


def test_per_class_records_are_collected():
    labels = np.arange(len(X)) % C
    ctx = make_ctx(np.arange(6), labels=labels)
    from_spec("crc_greedy", class_balanced=True)(ctx, 6, jax.random.PRNGKey(0))
    found = dict(diagnostics.collect(ctx.record))
    assert set(found) == {f"per_class/{c}/crc_greedy" for c in range(C)}
    summary = diagnostics.summary(ctx.record)
    assert summary["decisions"] == 6 and summary["records"] == found
    gaps = [r["gap"] for d in found.values() for r in d["rounds"] if r["gap"] is not None]
    assert summary["gap"] == min(gaps)
    assert diagnostics.summary({"entropy": {"scores": [1.0]}}) is None


@pytest.mark.parametrize("backend", ["device", "device_f32"])
@pytest.mark.parametrize("subset", ["last", "all"])
def test_device_backends_record_the_host_diagnostics(backend, subset):
    diags = {}
    for b in ("host", backend):
        ctx = make_ctx(np.arange(6))
        from_spec(f"crc:group_size=3,subset={subset},backend={b},sequential=True")(
            ctx, 6, jax.random.PRNGKey(2))
        diags[b] = ctx.record["crc"]["diagnostics"]
    host, dev = diags["host"], diags[backend]
    # float32 kernel blocks (device_f32, "all") hold K̃(L, L) to float32 precision only
    rtol = 1e-4 if (backend == "device_f32" and subset == "all") else 1e-8
    assert dev["ceiling"] == pytest.approx(host["ceiling"], rel=rtol)
    for a, b in zip(dev["rounds"], host["rounds"]):
        assert a["tie"] == b["tie"]
        for field in ("chosen", "runner_up", "resolution"):
            assert a[field] == pytest.approx(b[field], rel=max(rtol, 1e-6)), field


# ------------------------------------------------------------------ journal, report, figure

def test_journal_report_and_figure_show_the_diagnostics(tmp_path):
    from conftest import run_loop, tiny_digits
    from crc_jax import durable
    from experiments import figures, report

    run = tmp_path / "run"
    run_loop(tiny_digits(strategies=("crc",), trials=1, **{"al.steps": 2}), run)
    entries = durable.Journal(run / "crc" / "trial_0" / "journal.jsonl").entries()
    for e in entries[:2]:
        diag = e["record"]["crc"]["diagnostics"]
        assert {"ceiling", "chosen", "runner_up", "gap", "resolution", "tie", "rank_used",
                "n_groups"} <= set(diag)
        assert diag["ceiling"] >= diag["chosen"] >= diag["runner_up"]
    assert "record" not in entries[2]                       # the last step acquires nothing
    report.write_report([run], out_dir=run)
    md = (run / "report.md").read_text()
    assert "## CRC decisions" in md and "| crc | 0 | 1 |" in md and "| crc | 1 | 1 |" in md
    ties = [e["step"] for e in entries[:2] if e["record"]["crc"]["diagnostics"]["tie"]]
    assert ("Ties: " + ", ".join(f"crc trial_0 step {s}" for s in ties) if ties
            else "No step's choice was a tie") in md
    assert figures.figure3_eigen([run], tmp_path).is_file()


def test_report_names_the_tied_steps():
    from experiments import report

    row = dict(strategy="crc", trial="trial_0", step=1, num_labeled=30, reach=0.99,
               resolution=1e-4, decisions=1)
    md = report.crc_markdown([{**row, "gap": 5e-5, "tie": True},
                              {**row, "trial": "trial_1", "gap": 2e-2, "tie": False}])
    assert "| crc | 1 | 2 | 99% | 1% | 0.005% | 1 of 2 |" in md
    assert "Ties: crc trial_0 step 1." in md
    assert "No step's choice" in report.crc_markdown([{**row, "gap": 2e-2, "tie": False}])
