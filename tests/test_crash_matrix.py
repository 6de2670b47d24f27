"""The crash matrix: every registered strategy on every registered model, the infinite-width
kernel of every model, and experiments.ntk_compare for every architecture crc_infinite
knows, each cell on a tiny digits pool, in child processes.

A cell's code may die by a signal (a segfault in code XLA generated kills the whole
process), so cells run in children: one child per model (its strategies, then its infinite
kernel) and one for ntk_compare. Each child notes a cell before and after running it, so
when a child dies the cell that was running fails by name, with the signal, and a fresh
child runs the cells after it. Children run with XLA's default backend optimization level
(the level users run; the suite's conftest lowers it for compile speed, and at the lower
levels LLVM does not vectorize the loops whose AVX-512 code segfaulted).

Refusals by design are asserted to be the documented one-line errors: crc_infinite and the
infinite kernel on a model with no infinite-width counterpart (infinite.stax_counterpart
refuses it); every architecture in crc_infinite.ARCHS must run. A strategy that needs MC
dropout gets a model with dropout, as a config must give it (run.config_check refuses it
otherwise).

Cost: compiles at the default optimization level dominate. Children run two at a time,
the largest model's first; a strategy option named in SMALL_OPTIONS (whatever strategy takes
it) is set to its smallest useful value, which shrinks the program, not its kind.

Run a child by hand: PYTHONPATH=. python tests/test_crash_matrix.py RESULTS.jsonl CELL ...
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from crc_jax import acquisition, models
from crc_jax.acquisition.crc.infinite import ARCHS

ROOT = Path(__file__).resolve().parents[1]
POOL, LABELED, BUDGET, GROUP = 40, 10, 4, 2    # tiny pool; CNN kernel blocks still 32 x 16 images
SMALL_OPTIONS = {"samples": 2}                 # MC-dropout passes (bald): 2 unrolled, not 20
LANES = 2                                      # children at a time
CHILD_TIMEOUT = 1800                           # a hang guard only: cells take seconds
# The one refusal by design: no infinite-width counterpart (crc_infinite.architecture's
# and infinite.stax_counterpart's one-line ValueErrors).
REFUSALS = {"crc_infinite": "no infinite-width counterpart", "infinite": "no stax counterpart"}


def cells() -> dict[str, list[str]]:
    """{child: [cell, ...]}; a cell is "strategy|model", "infinite|model" or
    "ntk_compare|arch", its names read from the registries."""
    groups = {m: [f"{s}|{m}" for s in acquisition.names()] + [f"infinite|{m}"]
              for m in models.names()}
    groups["ntk_compare"] = [f"ntk_compare|{arch}" for arch in ARCHS]
    return groups


CELLS = [c for group in cells().values() for c in group]


# --------------------------------------------------------------------------- the child's side

@functools.cache
def pool():
    """(images (N, 8, 8, 1), vectors (N, 64), labels) of the first POOL digits."""
    import numpy as np

    from crc_jax import data
    ds = data.load("digits")
    x = np.asarray(ds.x_train[:POOL], np.float32)
    return x, x.reshape(len(x), -1), np.asarray(ds.y_train[:POOL])


def model_input(name: str):
    """The pool as the model takes it: vectors for a model with the "vectors" trait."""
    images, vectors, _ = pool()
    return vectors if models.MODELS.traits(name).get("vectors") else images


@functools.cache
def initialized(model_name: str, dropout: float):
    """(model, variables) at initialization, once per model and dropout rate in a child."""
    import jax
    model = models.get(model_name, num_classes=10, dropout=dropout)
    return model, model.init(jax.random.PRNGKey(0), model_input(model_name)[:2])


def strategy_cell(strategy_name: str, model_name: str) -> str:
    """One acquisition step of the strategy (built by from_spec, as every caller builds
    it) on an initialized model of the pool."""
    import jax
    import numpy as np

    from crc_jax.acquisition.spec import options_of
    small = {k: v for k, v in SMALL_OPTIONS.items() if k in options_of(strategy_name)}
    strategy = acquisition.from_spec(strategy_name, {"group_size": GROUP, **small})
    dropout = 0.1 if strategy.traits.get("needs_dropout") else 0.0
    model, variables = initialized(model_name, dropout)
    x, y = model_input(model_name), pool()[2]
    ctx = acquisition.model_context(model, variables, x=x, labeled=np.arange(LABELED),
                                    unlabeled=np.arange(LABELED, len(x)), num_classes=10,
                                    batch_size=16, oracle=lambda idx: y[np.asarray(idx)])
    picked = acquisition.select(strategy, ctx, BUDGET, jax.random.PRNGKey(1))
    return f"picked {sorted(picked.tolist())}"


def infinite_cell(model_name: str) -> str:
    """The class-trace infinite-width NTK of the pool, in the blocks crc_infinite uses."""
    import numpy as np

    from crc_jax import infinite
    model = models.get(model_name, num_classes=10)
    kernel_fn = infinite.infinite_kernel_fn(model, drop_batch_norm=True)
    x = model_input(model_name)
    k = infinite.infinite_trace_ntk(kernel_fn, x, num_classes=10,
                                    batch_size=infinite.kernel_batch_size(model, x.shape[1:]))
    return f"kernel {k.shape}, min eigenvalue {np.linalg.eigvalsh(k)[0]:.3g}"


def ntk_compare_cell(arch: str, workdir: Path) -> str:
    """experiments.ntk_compare's smoke config cut to one architecture and a tiny sample."""
    from experiments import ntk_compare
    from experiments.configs.ntk_compare import get_config
    c = get_config("smoke")
    c.models = (arch,)
    c.mlp.widths, c.cnn.widths = (8,), (2,)
    c.seeds, c.sample_size, c.train.steps = 1, 24, 1
    rows = ntk_compare.run(c, workdir)
    return f"{len(rows)} rows"


def run_cells(results: Path, names: list[str]) -> None:
    """Run each cell, appending {"cell", "event": "start"} before and {"cell", "event":
    "end", "status": "ok"|"error", "message", "seconds", "cpu_seconds"} after it (flushed
    and fsynced: the parent reads them after this process is gone, however it went)."""
    import tempfile
    import time
    import traceback

    def note(record):
        with open(results, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    for cell in names:
        what, name = cell.split("|")
        note({"cell": cell, "event": "start"})
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            if what == "infinite":
                message = infinite_cell(name)
            elif what == "ntk_compare":
                with tempfile.TemporaryDirectory() as tmp:
                    message = ntk_compare_cell(name, Path(tmp))
            else:
                message = strategy_cell(what, name)
            status = "ok"
        except Exception as err:   # noqa: BLE001  (every error is the cell's verdict)
            status, message = "error", f"{type(err).__name__}: {err}"
            if not isinstance(err, ValueError):
                message += "\n" + traceback.format_exc(limit=-4)
        note({"cell": cell, "event": "end", "status": status, "message": message,
              "seconds": round(time.perf_counter() - wall, 2),
              "cpu_seconds": round(time.process_time() - cpu, 2)})


# --------------------------------------------------------------------------- the parent's side

def child_env() -> dict:
    """The environment with XLA's default backend optimization level (conftest's
    --xla_backend_optimization_level=0 removed), Python's fault handler on, and the
    checkout first on the path (the child is a script in tests/)."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_backend_optimization_level")]
    env["XLA_FLAGS"] = " ".join(flags)
    return env


def fault_report(stderr: str) -> str:
    """The fault handler's report (the Python stacks) from a dead child's stderr."""
    start = stderr.find("Fatal Python error")
    report = stderr[start:] if start >= 0 else stderr[-3000:]
    return report.split("\nExtension modules:")[0][:3000]


def run_group(names: list[str], tmp: Path) -> dict[str, dict]:
    """{cell: verdict} for `names`, run in as few children as their deaths allow."""
    verdicts: dict[str, dict] = {}
    todo = list(names)
    attempt = 0
    while todo:
        results = tmp / f"results-{attempt}.jsonl"
        proc = subprocess.run([sys.executable, __file__, str(results), *todo], cwd=ROOT,
                              env=child_env(), capture_output=True, text=True,
                              timeout=CHILD_TIMEOUT)
        records = ([json.loads(line) for line in results.read_text().splitlines()]
                   if results.exists() else [])
        for r in records:
            if r["event"] == "end":
                verdicts[r["cell"]] = r
        started = [r["cell"] for r in records if r["event"] == "start"]
        unfinished = [c for c in started if c not in verdicts]
        if unfinished:
            dead = unfinished[0]
            how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            verdicts[dead] = {"cell": dead, "status": "died",
                              "message": f"{how}:\n{fault_report(proc.stderr)}"}
        elif proc.returncode != 0 or not started:
            raise RuntimeError(f"crash-matrix child failed before any cell ({proc.returncode}):\n"
                               f"{proc.stderr[-3000:]}")
        todo = [c for c in todo if c not in verdicts]
        attempt += 1
    return verdicts


def parameter_count(model_name: str) -> int:
    """Parameters of a registered model on the pool's input (traced, not compiled)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    shape = (2, 64) if models.MODELS.traits(model_name).get("vectors") else (2, 8, 8, 1)
    model = models.get(model_name, num_classes=10)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(shape))
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(shapes.get("params", {})))


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """{cell: verdict} of every cell: the children run LANES at a time, the largest
    model's first (its compiles are the longest), ntk_compare last."""
    groups = cells()
    order = sorted((g for g in groups if g != "ntk_compare"), key=parameter_count, reverse=True)
    order.append("ntk_compare")
    with ThreadPoolExecutor(LANES) as pool:
        results = pool.map(lambda g: run_group(groups[g], tmp_path_factory.mktemp(g)), order)
        return {cell: v for part in results for cell, v in part.items()}


@functools.cache
def has_counterpart(model_name: str) -> bool:
    """Whether crc_jax.infinite knows the model's infinite-width network."""
    from crc_jax import infinite
    try:
        infinite.stax_counterpart(models.get(model_name, num_classes=10), drop_batch_norm=True)
    except ValueError:
        return False
    return True


def expected_refusal(cell: str) -> str | None:
    """The documented refusal of a cell (part of its one-line message), or None:
    crc_infinite and the infinite kernel refuse a model with no infinite-width counterpart."""
    what, name = cell.split("|")
    return None if what not in REFUSALS or has_counterpart(name) else REFUSALS[what]


@pytest.mark.parametrize("cell", CELLS)
def test_cell(cell, verdicts):
    v = verdicts[cell]
    assert v["status"] != "died", f"{cell}: the process died: {v['message']}"
    refusal = expected_refusal(cell)
    if refusal:
        assert v["status"] == "error" and v["message"].startswith("ValueError: ") \
            and refusal in v["message"] and "\n" not in v["message"], v
    else:
        assert v["status"] == "ok", f"{cell}: {v['message']}"


def test_matrix_covers_the_registries():
    """Every strategy x model, every model's infinite kernel, ntk_compare per architecture;
    crc_infinite's architectures run (are not refused)."""
    strategies, names = acquisition.names(), models.names()
    assert len(CELLS) == len(strategies) * len(names) + len(names) + len(ARCHS)
    for arch in ARCHS:
        assert has_counterpart(arch) and not expected_refusal(f"crc_infinite|{arch}")
        assert {f"crc_infinite|{arch}", f"infinite|{arch}", f"ntk_compare|{arch}"} <= set(CELLS)


if __name__ == "__main__":
    run_cells(Path(sys.argv[1]), sys.argv[2:])
