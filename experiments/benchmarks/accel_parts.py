"""The measurements of `experiments.benchmarks.accel`, one function per part.

Each appends rows {"part", "what", "value", "unit", "detail"} (plus extras) to `rows` as
it measures them (the caller saves each one, so a part cut short by its time limit keeps
what it measured); `accel` runs every part in its own process, so each part's peak memory
is its own.
Sizes come from `Sizes` (the full accelerator run, or `--quick` for a CPU). Nothing here
imports TensorFlow or TFDS: images are synthetic, of the reference shapes.
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial

import jax
import numpy as np

from crc_jax import models, ntk, ssl
from crc_jax.acquisition import Context
from crc_jax.acquisition.crc import gram as gram_lib
from crc_jax.train import evaluate, fit, make_eval_step
from experiments.benchmarks.train_step import reference_config, time_step
from experiments.configs.base import get_base_config


@dataclasses.dataclass(frozen=True)
class Sizes:
    model: str = "wrn28_2"
    image: int = 32
    batch: int = 64
    mu: int = 7
    steps: int = 20                   # timed train steps
    epoch_steps: int = 50             # steps in one fit epoch
    epoch_watch: int = 2000           # images evaluated after each epoch
    pool: int = 73_257                # SVHN's training set
    labeled: tuple = (200, 1000)
    group: int = 20
    top: int = 10                     # chosen groups compared between backends
    ntk_images: int = 64


FULL = Sizes()
QUICK = Sizes(model="cnn", image=16, batch=8, mu=2, steps=2, epoch_steps=20, epoch_watch=64,
              pool=2048, labeled=(50, 150), group=10, top=4, ntk_images=8)
NUM_CLASSES = 10


def row(part, what, value, unit, detail="", **extra) -> dict:
    return {"part": part, "what": what, "value": float(value), "unit": unit, "detail": detail,
            **extra}


def _model(s: Sizes, dtype="float32"):
    return models.get(s.model, num_classes=NUM_CLASSES, dtype=dtype)


def _algorithm(name: str, s: Sizes, dtype="float32", steps=1 << 20):
    if name == "fixmatch":
        c = reference_config("fixmatch", batch_size=s.batch, mu=s.mu)
    else:
        c = get_base_config()
        c.ssl.name, c.ssl.unlabeled_ratio, c.train.batch_size = name, s.mu, s.batch
    c.train.dtype = dtype
    return c, ssl.create(c, _model(s, dtype), num_train_steps=steps, flip=False)


# --------------------------------------------------------------------------- train steps

def part_step(s: Sizes, rows: list) -> list:
    """Train-step images/s with the batch already on the device (the step alone)."""
    for name, dtype in (("fixmatch", "float32"), ("fixmatch", "bfloat16"),
                        ("mean_teacher", "float32")):
        _, alg = _algorithm(name, s, dtype)
        r = time_step(alg, image_shape=(s.image, s.image, 3), num_classes=NUM_CLASSES,
                      steps=s.steps)
        rows.append(row("step", f"{name} step, {dtype}", r["images_per_s"], "images/s",
                        f"B={s.batch}, mu={s.mu}, {r['images_per_step']} images/step, "
                        f"{1e3 * r['step_s']:.1f} ms/step, compile {r['compile_s']:.1f} s"))
    return rows


def part_epoch(s: Sizes, rows: list) -> list:
    """A whole fit epoch (feeding, augmentation, steps, evaluation) against the step alone.

    Per-epoch time = (fit with 3 epochs − fit with 1 epoch) / 2, so initialization, the
    compile and the final test evaluation cancel out; the best of two such differences,
    the two feeds measured alternately so that both see the same load.
    """
    c, alg = _algorithm("fixmatch", s)
    c.train.steps_per_epoch, c.train.patience, c.train.progress = s.epoch_steps, 0, False
    c.train.eval_batch_size = 1024
    rng = np.random.default_rng(0)
    shape = (s.image, s.image, 3)
    x_pool = rng.random((s.pool, *shape), np.float32)
    y_pool = rng.integers(0, NUM_CLASSES, s.pool).astype(np.int32)
    watch = (x_pool[:s.epoch_watch], y_pool[:s.epoch_watch])
    model = _model(s)
    eval_apply = lambda v, x: model.apply(v, x, train=False)  # noqa: E731
    images = alg.labeled_batch + 2 * alg.unlabeled_batch
    step = time_step(alg, image_shape=shape, num_classes=NUM_CLASSES, steps=s.steps)
    rows.append(row("epoch", "fixmatch step alone", step["images_per_s"], "images/s",
                    f"{1e3 * step['step_s']:.1f} ms/step"))

    def run(epochs, feed):
        cfg = c.train.copy_and_resolve_references()
        cfg.max_epochs = epochs
        start = time.perf_counter()
        fit(alg, x_labeled=x_pool[:250], y_labeled=y_pool[:250], x_unlabeled=x_pool,
            watch=watch, test=watch, train_config=cfg, key=jax.random.PRNGKey(0),
            eval_apply=eval_apply, feed=feed)
        return time.perf_counter() - start

    eval_step = make_eval_step(eval_apply)
    variables = alg.eval_variables(alg.init_state(jax.random.PRNGKey(0), x_pool[:1]))
    evaluate(eval_step, variables, *watch, batch_size=1024)
    start = time.perf_counter()
    evaluate(eval_step, variables, *watch, batch_size=1024)
    eval_s = time.perf_counter() - start
    for feed in ("device", "host"):
        run(1, feed)                                     # compile, warm caches
    epochs = {"device": [], "host": []}
    for _ in range(2):                                   # alternate, keep the best of two
        for feed in epochs:
            epochs[feed].append((run(3, feed) - run(1, feed)) / 2)
    for feed in ("device", "host"):
        epoch_s = min(epochs[feed])
        steps_s = s.epoch_steps * step["step_s"]
        feed_share = max(0.0, epoch_s - steps_s - eval_s) / epoch_s
        rows.append(row("epoch", f"fit epoch, feed={feed}", s.epoch_steps * images / epoch_s,
                        "images/s", f"{epoch_s:.2f} s/epoch: steps {steps_s:.2f} s, evaluation of "
                        f"{s.epoch_watch} images {eval_s:.2f} s, feeding and the rest "
                        f"{100 * feed_share:.1f}%", epoch_s=epoch_s, feed_share=feed_share))
    return rows


# --------------------------------------------------------------------------- CRC

def part_crc(s: Sizes, rows: list) -> list:
    """CRC group scores at SVHN scale, host vs device backend, same features."""
    model = _model(s)
    rng = np.random.default_rng(1)
    x = rng.random((s.pool, s.image, s.image, 3), np.float32)
    variables = model.init(jax.random.PRNGKey(0), x[:1])
    for n_labeled in s.labeled:
        labeled = np.arange(n_labeled)
        unlabeled = np.arange(n_labeled, s.pool)
        groups = unlabeled[:len(unlabeled) // s.group * s.group].reshape(-1, s.group)
        ctx = Context(apply_fn=lambda v, xx: model.apply(v, xx), variables=variables, x=x,
                      labeled=labeled, unlabeled=unlabeled, num_classes=NUM_CLASSES,
                      features_fn=lambda v, xx: model.apply(v, xx, return_features=True)[1],
                      batch_size=1024)
        result = {}
        for backend in ("host", "device"):
            start = time.perf_counter()
            gram = gram_lib.build(ctx, groups, backend=backend)
            features_s = time.perf_counter() - start
            gram.top(None, s.top)                      # compile (device), warm caches
            start = time.perf_counter()
            chosen, _, scores = gram.top(None, s.top)
            result[backend] = dict(seconds=time.perf_counter() - start, features_s=features_s,
                                   chosen=chosen, scores=scores, rank=gram.rank)
        h, d = result["host"], result["device"]
        rel = float(np.max(np.abs(d["scores"] - h["scores"]) / np.abs(h["scores"]).max()))
        same = bool(np.array_equal(d["chosen"], h["chosen"]))
        setting = f"pool {s.pool}, |L|={n_labeled}, G={s.group}, {len(groups)} groups"
        for backend in ("host", "device"):
            r = result[backend]
            rows.append(row("crc", f"CRC scores |L|={n_labeled}, {backend}",
                            len(groups) / r["seconds"], "groups/s",
                            f"{setting}, rank {r['rank']}; pool features {r['features_s']:.2f} s"
                            + ("" if backend == "host" else
                               f"; vs host: {h['seconds'] / r['seconds']:.1f}x, max |Δs|/max s "
                               f"{rel:.1e}, same top {s.top} groups: {same}"),
                            speedup=h["seconds"] / r["seconds"] if backend == "device" else 1.0,
                            max_rel_diff=rel, same_groups=same))
    return rows


# --------------------------------------------------------------------------- NTK

def part_ntk(s: Sizes, rows: list) -> list:
    """Empirical NTK over all parameters vs neural-tangents' implementations (×C)."""
    from crc_jax.runtime._nt_compat import import_neural_tangents

    nt = import_neural_tangents()
    model = _model(s)
    x = jax.random.uniform(jax.random.PRNGKey(0), (s.ntk_images, s.image, s.image, 3))
    variables = model.init(jax.random.PRNGKey(1), x[:1])
    stats = variables.get("batch_stats", {})
    f = lambda p, xx: model.apply({"params": p, "batch_stats": stats}, xx)  # noqa: E731
    params = variables["params"]
    fns = {"crc_jax.ntk.empirical_ntk": jax.jit(partial(ntk.empirical_ntk, f, subset="all",
                                                        batch_size=s.ntk_images))}
    for impl in ("JACOBIAN_CONTRACTION", "STRUCTURED_DERIVATIVES", "NTK_VECTOR_PRODUCTS"):
        k = jax.jit(nt.empirical_ntk_fn(f, trace_axes=(-1,), vmap_axes=0,
                                        implementation=getattr(nt.NtkImplementation, impl)))
        fns[f"nt {impl}"] = (lambda kk: lambda p, xx: NUM_CLASSES * kk(xx, None, p))(k)
    setting = f"{s.model}, {s.ntk_images} images, {ntk.count_parameters(params)} parameters"
    seconds, ref = {}, None
    for name, fn in fns.items():            # ours first: every row compares with it
        try:
            jax.block_until_ready(fn(params, x))         # compile
            start = time.perf_counter()
            value = np.asarray(jax.block_until_ready(fn(params, x)))
            seconds[name] = time.perf_counter() - start
        except Exception as err:  # noqa: BLE001 -- a mode that fails is reported, not fatal
            rows.append(row("ntk", name, float("nan"), "ms",
                            f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"))
            continue
        ours = seconds.get("crc_jax.ntk.empirical_ntk")
        ref = value if ref is None else ref
        diff = float(np.max(np.abs(value - ref)) / np.max(np.abs(ref)))
        rows.append(row("ntk", name, 1e3 * seconds[name], "ms",
                        f"{setting}; {seconds[name] / ours:.2f}x ours, max |ΔK|/max K {diff:.1e}"
                        if ours else setting))
    ours = seconds.get("crc_jax.ntk.empirical_ntk")
    fastest_nt = min((v for k, v in seconds.items() if k.startswith("nt ")), default=None)
    if ours and fastest_nt:
        rows.append(row("ntk", "fastest neural-tangents / ours", fastest_nt / ours, "x", setting))
    return rows


PARTS = {"step": part_step, "epoch": part_epoch, "crc": part_crc, "ntk": part_ntk}


def peak_memory() -> tuple[float, str]:
    """(peak MiB, what): the device allocator's peak, or the process's peak RSS on a CPU."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001
        stats = {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2 ** 20, "device"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host RSS"

