"""Data parallelism (crc_jax.runtime.sharding) and mixed precision.

The 4-device checks need XLA_FLAGS=--xla_force_host_platform_device_count=4 before JAX
starts, so they run in a subprocess: SCRIPT computes one thing on a 1-device mesh and on
a 4-device mesh of the same process (same compiled model, same data) and prints both as
JSON; the tests compare them. One subprocess serves the whole module (fixture `four`).
The heavy parts (FixMatch's RandAugment step, a full AL run through the CLI on 1 and 4
devices) are marked slow.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crc_jax import models
from crc_jax.runtime import sharding
from crc_jax import config as config_lib
from crc_jax.errors import ConfigError
from experiments.configs.base import get_base_config

ROOT = Path(__file__).resolve().parents[1]

# The subprocess: every quantity on the 1-device mesh (devices[:1]) and the 4-device mesh.
SCRIPT = r'''
import json, sys
import jax, numpy as np
from crc_jax import models, ntk, ssl
from crc_jax.runtime import sharding
from crc_jax.acquisition import Context
from crc_jax.acquisition.crc import gram as gram_lib
from crc_jax.train import fit
from experiments.configs.base import get_base_config

assert jax.device_count() == 4, jax.devices()
MESHES = {n: sharding.make_mesh(jax.devices()[:n]) for n in (1, 4)}
which = set(sys.argv[1].split(","))
out = {}
rng = np.random.default_rng(0)
leaves = jax.tree_util.tree_leaves


def tree_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(leaves(a), leaves(b)))


def algorithm(name, model, train=None, **ssl_options):
    c = get_base_config()
    c.ssl.name, c.ssl.unlabeled_ratio, c.train.batch_size = name, 2, 8
    c.train.ema_decay = 0.9
    for k, v in (train or {}).items():
        c.train[k] = v
    for k, v in ssl_options.items():
        c.ssl[k] = v
    return ssl.create(c, model, num_train_steps=20, flip=True), c


ALGORITHMS = {}


def train_steps(name, model, shape, steps=3, train=None, **ssl_options):
    """`steps` steps from one init on each mesh: losses, parameters, where leaves live."""
    alg, c = ALGORITHMS[name] = algorithm(name, model, train, **ssl_options)
    x_l = rng.random((8, *shape), np.float32)
    batch = {"x_l": x_l, "y_l": rng.integers(0, 3, 8).astype(np.int32),
             "x_u": rng.random((16, *shape), np.float32)}
    init = alg.init_state(jax.random.PRNGKey(0), x_l[:1])
    init_params = jax.tree_util.tree_map(np.asarray, init.params)
    res = {}
    for n, mesh in MESHES.items():
        state = sharding.replicate(mesh, alg.init_state(jax.random.PRNGKey(0), x_l[:1]))
        step = sharding.data_parallel(alg.train_step, mesh)
        losses = []
        for i in range(steps):
            placed = sharding.shard_batch(mesh, batch)
            state, metrics = step(state, placed, jax.random.PRNGKey(10 + i))
            losses.append(float(metrics["loss"]))
        res[n] = dict(losses=losses, state=jax.tree_util.tree_map(np.asarray, state))
        if n > 1:   # where the batch and the state live (on one device the batch stays NumPy)
            res[n].update(batch_devices=len(placed["x_u"].sharding.device_set),
                          batch_shard_rows=placed["x_u"].addressable_shards[0].data.shape[0],
                          state_devices=sorted({len(l.sharding.device_set) for l in leaves(state)}),
                          state_replicated=all(l.sharding.is_fully_replicated for l in leaves(state)))
    return {"losses_1": res[1]["losses"], "losses_4": res[4]["losses"],
            "params_diff": tree_diff(res[1]["state"].params, res[4]["state"].params),
            "ema_diff": tree_diff(res[1]["state"].ema_params, res[4]["state"].ema_params),
            "stats_diff": (tree_diff(res[1]["state"].batch_stats, res[4]["state"].batch_stats)
                           if leaves(res[1]["state"].batch_stats) else 0.0),
            "params_moved": tree_diff(init_params, res[1]["state"].params),
            "batch_devices": res[4]["batch_devices"], "batch_shard_rows": res[4]["batch_shard_rows"],
            "state_devices": res[4]["state_devices"], "state_replicated": res[4]["state_replicated"]}


cnn = models.get("cnn", num_classes=3, width=2, dense_width=4)
if "mean_teacher" in which:
    out["mean_teacher"] = train_steps("mean_teacher", cnn, (8, 8, 1))
if "fixmatch_points" in which:
    out["fixmatch_points"] = train_steps("fixmatch", models.get("mlp", num_classes=3, width=8),
                                         (2,), threshold=0.3)
if "fixmatch" in which:
    out["fixmatch"] = train_steps("fixmatch", cnn, (8, 8, 1), threshold=0.3)
if "wrn_step" in which:      # WRN-28 (width 1): the paper's architecture, its step and evaluation
    from crc_jax.train import evaluate, make_eval_step

    wrn = models.get("wrn28_2", num_classes=3, width=1)
    # SGD: Adam's first update is lr·sign(g), so an element whose gradient is rounding
    # noise flips by 2·lr between any two summation orders; SGD's update is smooth in g
    out["wrn_step"] = train_steps("mean_teacher", wrn, (8, 8, 3), steps=2,
                                  train={"optimizer": "sgd", "lr": 0.05})
    variables = wrn.init(jax.random.PRNGKey(5), np.zeros((1, 8, 8, 3), np.float32))
    eval_step = make_eval_step(lambda v, xx: wrn.apply(v, xx))
    x = rng.random((10, 8, 8, 3), np.float32)
    y = rng.integers(0, 3, 10).astype(np.int32)
    out["wrn_eval"] = {n: evaluate(eval_step, variables, x, y, batch_size=6, mesh=mesh)
                       for n, mesh in MESHES.items()}

if "fit" in which:   # the Mean Teacher algorithm above: its compiled steps are reused
    alg, c = ALGORITHMS["mean_teacher"]
    c.train.steps_per_epoch, c.train.max_epochs, c.train.patience = 2, 2, 0
    c.train.progress, c.train.eval_batch_size = False, 7     # 7: padded up to 8 on 4 devices
    x = rng.random((40, 8, 8, 1), np.float32)
    y = rng.integers(0, 3, 40).astype(np.int32)
    results = {n: fit(alg, x_labeled=x[:12], y_labeled=y[:12], x_unlabeled=x[12:30],
                      watch=(x[30:], y[30:]), test=(x[30:], y[30:]), train_config=c.train,
                      key=jax.random.PRNGKey(3), eval_apply=lambda v, xx: cnn.apply(v, xx),
                      mesh=mesh) for n, mesh in MESHES.items()}
    out["fit"] = {f"history_{n}": r.history for n, r in results.items()}
    out["fit"]["test_1"] = [results[1].test_accuracy, results[1].test_loss]
    out["fit"]["test_4"] = [results[4].test_accuracy, results[4].test_loss]
    out["fit"]["variables_diff"] = tree_diff(results[1].variables, results[4].variables)
    c.train.steps_per_dispatch = 2    # both epochs' steps in one lax.scan chunk (crc_jax.multistep)
    chunked = fit(alg, x_labeled=x[:12], y_labeled=y[:12], x_unlabeled=x[12:30],
                  watch=(x[30:], y[30:]), test=(x[30:], y[30:]), train_config=c.train,
                  key=jax.random.PRNGKey(3), eval_apply=lambda v, xx: cnn.apply(v, xx),
                  mesh=MESHES[4])
    c.train.steps_per_dispatch = 1
    out["fit"]["history_4_chunked"] = chunked.history
    out["fit"]["chunked_variables_diff"] = tree_diff(results[1].variables, chunked.variables)

if "crc" in which:
    model = models.get("cnn", num_classes=3, width=3, dense_width=6)
    x = 3 * rng.normal(size=(43, 6, 6, 2)).astype(np.float32)   # 43: chunks that do not split evenly
    variables = model.init(jax.random.PRNGKey(1), x[:1])
    params = jax.tree_util.tree_map(lambda a: a, variables["params"])
    params["Dense_0"]["bias"] = params["Dense_0"]["bias"] + 1.0  # no dead ReLU: [Φ, 1] of full rank
    variables = {"params": params,                               # running statistics in use
                 "batch_stats": jax.tree_util.tree_map(lambda s: 0.8 * s + 0.1, variables["batch_stats"])}
    labeled = np.arange(7)
    ctx = Context(apply_fn=lambda v, xx: model.apply(v, xx), variables=variables, x=x,
                  labeled=labeled, unlabeled=np.arange(7, 43), num_classes=3,
                  features_fn=lambda v, xx: model.apply(v, xx, return_features=True)[1],
                  batch_size=10)
    groups = np.arange(7, 43).reshape(12, 3)
    # the last layer: an MLP on points, whose [Φ, 1] is well conditioned (float32 kernels)
    mlp = models.get("mlp", num_classes=3, width=6)
    points = rng.normal(size=(43, 4)).astype(np.float32)
    mlp_params = {k: {**v, "bias": v["bias"] + (1.0 if k != "head" else 0.0)}   # no dead ReLU
                  for k, v in mlp.init(jax.random.PRNGKey(2), points)["params"].items()}
    mlp_ctx = Context(apply_fn=lambda v, xx: mlp.apply(v, xx), variables={"params": mlp_params},
                      x=points, labeled=labeled, unlabeled=np.arange(7, 43), num_classes=3,
                      features_fn=lambda v, xx: mlp.apply(v, xx, return_features=True)[1], batch_size=10)
    scores = {}
    for n, mesh in MESHES.items():
        scores[f"features_{n}"] = gram_lib.FeatureGram(ctx, groups, mesh=mesh).score()
        scores[f"mlp_features_{n}"] = gram_lib.FeatureGram(mlp_ctx, groups, mesh=mesh).score()
        scores[f"mlp_jacobians_last_{n}"] = gram_lib.JacobianGram(mlp_ctx, groups, subset="last",
                                                                  mesh=mesh).score()
        # a budget of 4 samples: one row per device, base blocks recomputed, candidates streamed,
        # padded chunks
        small = gram_lib.JacobianGram(ctx, groups, subset="all", mesh=mesh,
                                      budget_bytes=4 * 3 * ntk.count_parameters(variables["params"]) * 4)
        assert small.batch == 4 and small.cand_jac is None, (small.batch, small.cand_jac is None)
        scores[f"jacobians_all_{n}"] = small.score()
        seq = gram_lib.JacobianGram(ctx, groups, subset="all", mesh=mesh)
        seq.extend_base([4])
        scores[f"extended_{n}"] = seq.score(np.array([0, 1, 2]))
    # brute force: the trace NTK over L ∪ g, its (|L| + G)-th largest eigenvalue
    subset = gram_lib.variables_subset(ctx, "all")
    brute = []
    for g in groups[:4]:
        members = np.concatenate([labeled, g])
        k = np.asarray(ntk.empirical_ntk(ctx.apply_fn, variables, x[members], subset=subset), np.float64)
        brute.append(float(np.linalg.eigvalsh(k)[0]))
    scores["brute_all_first4"] = brute
    # max_ij |K̃_ij| = max_i K̃_ii (Cauchy-Schwarz): the scale of float32 rounding in the kernels
    scores["kmax_all"] = float(np.max(ntk.ntk_diagonal(ctx.apply_fn, variables, x, trace=True,
                                                         subset=subset)))
    for name, c in (("mlp_last", mlp_ctx), ("cnn_last", ctx)):
        z = gram_lib.FeatureGram(c, groups).z
        scores[f"kmax_{name}"] = float(3 * np.max(np.sum(z * z, axis=1)))
    out["crc"] = {k: np.asarray(v, np.float64).tolist() for k, v in scores.items()}

if "wrn_crc" in which:     # WRN-28 (width 1): Jacobians one row per device, then contracted
    model = models.get("wrn28_2", num_classes=4, width=1)
    x = rng.random((24, 8, 8, 3), np.float32)
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    labeled, unlabeled = np.arange(8), np.arange(8, 24)
    ctx = Context(apply_fn=lambda v, xx: model.apply(v, xx), variables=variables, x=x,
                  labeled=labeled, unlabeled=unlabeled, num_classes=4)
    groups = unlabeled.reshape(4, 4)
    budget = 4 * 4 * ntk.count_parameters(variables["params"]) * 4
    scores = {n: gram_lib.JacobianGram(ctx, groups, subset="all", mesh=mesh, budget_bytes=budget).score()
              for n, mesh in MESHES.items()}
    subset = gram_lib.variables_subset(ctx, "all")
    brute = [float(np.linalg.eigvalsh(np.asarray(ntk.empirical_ntk(
        ctx.apply_fn, variables, x[np.concatenate([labeled, g])], subset=subset), np.float64))[0])
        for g in groups]
    kmax = float(np.max(ntk.ntk_diagonal(ctx.apply_fn, variables, x, trace=True, subset=subset)))
    out["wrn_crc"] = {"scores_1": scores[1].tolist(), "scores_4": scores[4].tolist(),
                      "brute": brute, "kmax": kmax}

if "config" in which:
    from crc_jax import config as config_lib
    from crc_jax.errors import ConfigError

    c = get_base_config()
    c.train.batch_size = 30
    try:
        config_lib.validate(c)
        out["config_batch"] = [c.train.batch_size, c.train.requested_batch_size]
    except ConfigError as err:
        out["config_error"] = str(err)

print("JSON" + json.dumps(out))
'''


def run_four(which: str, timeout: int = 300, *, optimize: bool = False) -> dict:
    """Run SCRIPT with 4 forced host devices; return its JSON.

    optimize=True drops conftest's --xla_backend_optimization_level=0: at that level the
    single-device float32 gradients of WRN-28 on CPU are off by up to 4% (relative to a
    float64 reference, in some BatchNorm and conv leaves), at the default level by 3e-6.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if optimize:
        flags = " ".join(f for f in flags.split() if "xla_backend_optimization_level" not in f)
    env = dict(os.environ, XLA_FLAGS=f"{flags} --xla_force_host_platform_device_count=4".strip(),
               JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, which], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")][-1]
    return json.loads(line[4:])


@pytest.fixture(scope="module")
def four():
    return run_four("mean_teacher,fixmatch_points,fit,crc,config")


# ------------------------------------------------------------------ 4 forced devices


def check_step_equal(r, *, tol=2e-6):
    assert r["batch_devices"] == 4 and r["batch_shard_rows"] == 16 // 4  # really split
    assert r["state_devices"] == [4] and r["state_replicated"]
    np.testing.assert_allclose(r["losses_4"], r["losses_1"], rtol=1e-6, atol=1e-7)
    assert r["params_moved"] > 1e-3                                   # the steps did train
    assert r["params_diff"] < tol and r["ema_diff"] < tol and r["stats_diff"] < tol


def test_mean_teacher_step_on_4_devices_equals_1_device(four):
    """CNN with BatchNorm: batch statistics over the global batch, as on one device."""
    check_step_equal(four["mean_teacher"])


def test_fixmatch_step_on_4_devices_equals_1_device_points(four):
    check_step_equal(four["fixmatch_points"])


@pytest.mark.slow
def test_fixmatch_step_on_4_devices_equals_1_device_images():
    """The image FixMatch step (RandAugment + Cutout, CNN with BatchNorm): slow to compile."""
    check_step_equal(run_four("fixmatch")["fixmatch"])


@pytest.mark.slow
def test_wrn_step_and_evaluation_on_4_devices_equal_1_device():
    r = run_four("wrn_step", timeout=900, optimize=True)
    check_step_equal(r["wrn_step"], tol=1e-5)
    one, four = r["wrn_eval"]["1"], r["wrn_eval"]["4"]
    assert one["accuracy"] == four["accuracy"]
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-5)


@pytest.mark.slow
def test_wrn_crc_scores_subset_all_on_4_devices_equal_1_device():
    """WRN-28 Jacobians (the case where GSPMD-partitioned contractions went wrong)."""
    r = run_four("wrn_crc")["wrn_crc"]
    atol = 12 * 2 * np.finfo(np.float32).eps * r["kmax"]          # n = |L| + G = 12
    assert min(r["brute"]) > 10 * atol
    np.testing.assert_allclose(r["scores_1"], r["brute"], rtol=0, atol=atol)
    np.testing.assert_allclose(r["scores_4"], r["brute"], rtol=0, atol=atol)


def test_fit_and_evaluate_on_4_devices_equal_1_device(four):
    r = four["fit"]
    h1, h4 = r["history_1"], r["history_4"]
    assert [e["epoch"] for e in h1] == [e["epoch"] for e in h4] == [1, 2]
    for e1, e4 in zip(h1, h4):
        assert e1["watch_accuracy"] == e4["watch_accuracy"]
        np.testing.assert_allclose([e4["loss"], e4["test_loss"]], [e1["loss"], e1["test_loss"]],
                                   rtol=1e-5)
    assert r["test_1"][0] == r["test_4"][0]
    np.testing.assert_allclose(r["test_4"][1], r["test_1"][1], rtol=1e-5)
    assert r["variables_diff"] < 2e-6


def test_chunks_of_steps_on_4_devices_equal_one_step_per_call_on_1(four):
    """train.steps_per_dispatch=2 on 4 devices: the batch axis of the stacked chunk is split."""
    r = four["fit"]
    for e1, e4 in zip(r["history_1"], r["history_4_chunked"], strict=True):
        assert e1["watch_accuracy"] == e4["watch_accuracy"]
        np.testing.assert_allclose(e4["loss"], e1["loss"], rtol=1e-5)
    assert r["chunked_variables_diff"] < 2e-6


def test_crc_scores_on_4_devices_equal_1_device(four):
    """Features and per-sample Jacobians split over 4 devices give the same scores.

    XLA compiles a different loop for 3 rows per device than for 12, so float32 features
    and Jacobians may differ in their last bits. Feature scores (float64 Gram of float32
    features): rtol 1e-4 (seen: 2e-6). Jacobian scores come from float32 kernels: an
    eigenvalue moves by at most ||ΔK||₂ <= n · max|ΔK_ij|, so they are compared to
    n · 2 ε₃₂ · max|K_ij| (n = |L| + G = 10, max|K_ij| = max_i K_ii).
    """
    s = {k: np.asarray(v) for k, v in four["crc"].items()}
    for name in ("features", "mlp_features"):
        assert np.all(s[f"{name}_1"] > 1e-5), name                   # not trivially zeros
        np.testing.assert_allclose(s[f"{name}_4"], s[f"{name}_1"], rtol=1e-4, err_msg=name)
    eps = 10 * 2 * np.finfo(np.float32).eps
    for name, kmax in (("mlp_jacobians_last", s["kmax_mlp_last"]),
                       ("jacobians_all", s["kmax_all"]), ("extended", s["kmax_all"])):
        assert np.all(s[f"{name}_1"] > 3 * eps * kmax), name
        np.testing.assert_allclose(s[f"{name}_4"], s[f"{name}_1"], rtol=0, atol=eps * kmax,
                                   err_msg=name)
    np.testing.assert_allclose(s["mlp_jacobians_last_4"], s["mlp_features_1"], rtol=0,
                               atol=eps * s["kmax_mlp_last"])
    # the streamed path (small Jacobian budget) against brute force on L ∪ g
    for n in (1, 4):
        np.testing.assert_allclose(s[f"jacobians_all_{n}"][:4], s["brute_all_first4"], rtol=0,
                                   atol=eps * s["kmax_all"])


def test_batch_size_not_divisible_by_the_devices_moves_to_the_nearest_multiple(four):
    assert four.get("config_batch") == [32, 30], four.get("config_error")   # 30 recorded


# -------------------------------------------------------------- one device, in process


def test_helpers_are_the_identity_on_one_device():
    mesh = sharding.make_mesh(jax.devices()[:1])
    tree = {"x": np.arange(6.0).reshape(3, 2), "y": np.arange(3)}
    assert sharding.shard_batch(mesh, tree) is tree
    assert sharding.replicate(mesh, tree) is tree
    step = lambda s, b, k: (s, {})  # noqa: E731
    assert sharding.data_parallel(step, mesh) is step
    assert sharding.num_devices(sharding.make_mesh()) == jax.device_count()


def test_indivisible_batch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"size 6 must be divisible by the 4 devices"):
        sharding.check_divisible(6, _FakeMesh(4), what="labeled batch size")
    sharding.check_divisible(8, _FakeMesh(4))


class _FakeMesh:
    def __init__(self, n):
        self.devices = np.empty(n, object)


def test_pad_rows_and_map_batches_match_direct_application(np_rng):
    x = np_rng.normal(size=(11, 3)).astype(np.float32)
    padded, n = sharding.pad_rows(x, 4)
    assert n == 11 and padded.shape == (12, 3) and np.array_equal(padded[11], x[0])
    fn = jax.jit(lambda v, a: (a @ v["w"], jnp.sum(a, axis=1)))
    v = {"w": np_rng.normal(size=(3, 2)).astype(np.float32)}
    got = sharding.map_batches(fn, v, x, batch_size=4, indices=np.arange(11)[::-1])
    np.testing.assert_allclose(got[0], x[::-1] @ v["w"], rtol=1e-6)
    np.testing.assert_allclose(got[1], x[::-1].sum(1), rtol=1e-6)


@pytest.mark.parametrize("name,shape", [("cnn", (2, 8, 8, 1)), ("mlp", (2, 5)),
                                        pytest.param("wrn28_2", (2, 8, 8, 3), marks=pytest.mark.slow)])
def test_bfloat16_activations_keep_float32_params_and_outputs(name, shape, np_rng):
    options = {"width": 1} if name == "wrn28_2" else {}
    f32 = models.get(name, num_classes=3, **options)
    bf16 = models.get(name, num_classes=3, dtype="bfloat16", **options)
    x = np_rng.random(shape).astype(np.float32)
    variables = f32.init(jax.random.PRNGKey(0), x)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(bf16.init(jax.random.PRNGKey(0), x))} \
        == {jnp.dtype(jnp.float32)}
    logits, features = bf16.apply(variables, x, return_features=True)
    ref_logits, ref_features = f32.apply(variables, x, return_features=True)
    assert logits.dtype == features.dtype == jnp.float32
    # bfloat16 keeps 8 bits of mantissa: close to float32, but not equal (it did run in bf16)
    scale = float(jnp.max(jnp.abs(ref_logits))) + 1e-3
    diff = float(jnp.max(jnp.abs(logits - ref_logits)))
    assert 0 < diff < 0.1 * scale
    (_, updates) = bf16.apply(variables, x, train=True, mutable=["batch_stats"])
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(updates))


def test_unknown_activation_dtype_is_rejected():
    with pytest.raises(ValueError, match="float32, bfloat16"):
        models.get("cnn", num_classes=3, dtype="float16")


def test_config_validation_of_dtype_and_distributed_fields():
    c = get_base_config()
    config_lib.validate(c)
    for field, value in [("train.dtype", "float16"), ("distributed.num_processes", -1),
                         ("distributed.process_id", -2)]:
        bad = get_base_config()
        parent, leaf = field.split(".")
        bad[parent][leaf] = value
        with pytest.raises(ConfigError, match=field):
            config_lib.validate(bad)


def test_distributed_initialize_passes_only_the_given_fields(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    d = get_base_config().distributed
    sharding.initialize_distributed(d)
    assert calls == []                                   # disabled: nothing
    d.enabled = True
    sharding.initialize_distributed(d)                   # TPU pod: auto-detect everything
    d.coordinator_address, d.num_processes, d.process_id = "10.0.0.1:1234", 2, 1
    sharding.initialize_distributed(d)
    assert calls == [{}, {"coordinator_address": "10.0.0.1:1234", "num_processes": 2,
                          "process_id": 1}]


# ----------------------------------------------------------- a full AL run, 1 vs 4 devices

TINY = ["--config=digits", "--config.trials=1", "--config.al.steps=2",
        "--config.train.max_epochs=2", "--config.train.steps_per_epoch=3",
        "--config.train.patience=0", "--config.train.progress=False",
        "--config.dataset.train_size=300", "--config.dataset.test_size=101",
        "--config.strategies=('random','entropy','crc')"]


def run_cli(workdir: Path, devices: int):
    flags = os.environ.get("XLA_FLAGS", "")
    if devices > 1:
        flags = f"{flags} --xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "experiments.main", *TINY, f"--workdir={workdir}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"devices: {devices} cpu device(s)" in proc.stderr
    return {p.relative_to(workdir).as_posix(): [json.loads(line) for line in p.read_text().splitlines()]
            for p in sorted(workdir.glob("*/trial_*/journal.jsonl"))}


def _assert_same_entry(a, b, path="", *, rtol=1e-5):
    """Equal, except floats: to `rtol` (float32 losses summed in another order on 4 devices)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            if k not in ("seconds", "crc32"):
                # CRC's candidate scores are small eigenvalues of float32 features: the
                # features' last-bit differences move them by up to ~1e-4 relative
                _assert_same_entry(a[k], b[k], f"{path}.{k}", rtol=1e-3 if k == "record" else rtol)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_entry(x, y, f"{path}[{i}]", rtol=rtol)
    elif isinstance(a, float):
        assert np.isclose(a, b, rtol=rtol, atol=1e-12), f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.mark.slow
def test_full_al_run_on_4_devices_gives_the_same_journal(tmp_path):
    one = run_cli(tmp_path / "one", 1)
    four = run_cli(tmp_path / "four", 4)
    assert set(one) == set(four) and len(one) == 3               # random, entropy, crc
    for path in one:
        assert len(one[path]) == len(four[path]) == 3
        for e1, e4 in zip(one[path], four[path]):
            assert e1.get("acquired") == e4.get("acquired")      # indices and labels exactly
            assert e1.get("labels") == e4.get("labels")
            for key in ("test_accuracy", "watch_accuracy"):
                assert abs(e1[key] - e4[key]) <= 1e-6, (path, key)
            _assert_same_entry(e1, e4, path)
