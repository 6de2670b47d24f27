"""Bad inputs: each one gets one `error: ...` line, exit status 2, and leaves earlier results
untouched; a diverging training run stops naming the step and keeps its last good checkpoint.

The cases (tests/bad_inputs.py, and tests/bad_inputs_crc_jax.py for `crc-jax` and its
page) run the commands as subprocesses. Those acting on an existing run directory snapshot every
file of it (bytes; the lock file aside) before and compare after. The committed table of
docs/reliability.md must be the one `make docs` writes from these outcomes; the tests only
read it.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crc_jax.run.checkpoint import TrainCheckpointer
from crc_jax.train import TrainingDiverged, fit
import bad_inputs
import reliability_doc
from bad_inputs import error_lines

DOC = reliability_doc.DOC


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs").resolve()
    return root, bad_inputs.run_cases(root)


def test_each_bad_input_gives_one_line_exit_2_and_touches_nothing(outcomes):
    root, results = outcomes
    failures = {r["name"]: (bad_inputs.verdict(r), r["proc"].stdout[-500:],
                            r["proc"].stderr[-1500:])
                for r in results if bad_inputs.verdict(r)}
    assert not failures, failures
    assert len({r['name'] for r in results}) == len(results)


# The rows of issue 23 (the third round of bad input), each a case of the table (the import
# paths are also tested in process, with Label Studio's URLs: tests/test_import_paths.py).
ISSUE_23 = (
    "import path leaving the images folder", "import path in a folder the project lacks",
    "import path of a duplicate init kept out",
    "import on a full disk", "labels log without its last newline",
    "journal line without its newline", "report --out a folder of the user's",
    "report RUN --out another run", "retrain --out a folder of the user's",
    "workdir holding the user's files", "an override given twice",
    "variant of a config without variants", "unknown config variant", "negative --mock_data",
    "crc-jax init with one class", "group size that cannot fill the budget at cold start",
    "unknown strategy option at cold start", "label for an image the page cannot show",
    "images folder moved", "Ctrl-C during crc-jax next", "Ctrl-C on the labeling page",
    "non-UTF-8 file name", "restart right after a kill", "--port out of range",
    "export into a missing folder", "export into a read-only folder",
    "import into a read-only project", "next on a read-only project", "next on a full disk",
    "truncated .npz", "figures eigen --out an existing file",
    "Label Studio JSON of the wrong shape", "index.csv missing", "model file missing",
    "pool.npy truncated", "classes edited in project.json", "newline in an image file name")


def test_every_row_of_issue_23_is_a_case(outcomes):
    _, results = outcomes
    names = {r["name"] for r in results}
    assert not set(ISSUE_23) - names, sorted(set(ISSUE_23) - names)
    assert len(results) >= 37 + len(ISSUE_23)   # the 37 cases before issue 23, and these


# The rows of init's inputs (features files, backbones, their options, the folder),
# export's --out and retrain's --out: each one line, exit 2, nothing left behind.
INIT_EXPORT_RETRAIN = (
    "init --features: a .npy file named .npz", "init --features .npy named .npz, with --labels",
    "init --labels with a field over 128 KB", "init --features CSV with a field over 128 KB",
    "init --backbone single-channel ONNX", "init --backbone whose output is NaN",
    "init --backbone --mean nan", "init --backbone --std 1e-40",
    "init --backbone with 0-255 metadata", "init --features --feature-dtype float16 underflow",
    "init --features of width 0", "init --features with 0 rows, empty folder",
    "non-UTF-8 file name with --features", "non-UTF-8 file name with --backbone",
    "init into a folder of the user's", "export into the project's queue.csv",
    "export onto a dangling symlink", "retrain --out a folder of the user's with config.json",
    "retrain --out rerun after the user removes config.json")


def test_every_init_export_retrain_row_is_a_case(outcomes):
    _, results = outcomes
    names = {r["name"] for r in results}
    assert not set(INIT_EXPORT_RETRAIN) - names, sorted(set(INIT_EXPORT_RETRAIN) - names)


def test_reliability_doc_table_is_what_make_docs_writes(outcomes):
    root, results = outcomes
    committed = DOC.read_text()
    expected = reliability_doc.render(
        {"bad-inputs": reliability_doc.bad_inputs_section(results, root, committed)}, committed)
    if committed != expected:
        diff = [line for line in expected.splitlines() if line not in committed.splitlines()]
        pytest.fail("docs/reliability.md is out of date; run `make docs`. Lines it lacks:\n"
                    + "\n".join(diff[:10]))


def test_diverged_cli_run_keeps_only_finite_checkpoints(outcomes):
    root, results = outcomes
    (diverged,) = [r for r in results if r["name"] == "diverging training"]
    epoch = int(re.search(r"\(epoch (\d+)\)", error_lines(diverged["proc"].stderr)[0]).group(1))
    saved = sorted((diverged["workdir"] / "random" / "trial_0" / "checkpoints").glob("step_0/*"))
    # Checkpoints saved before the bad epoch may stay; none of the bad epoch or later.
    assert all(int(p.name) < epoch for p in saved if p.name.isdigit()), saved


# ------------------------------------------------------- divergence inside training

def poisoned(algorithm, *, from_step: int, loss_too: bool):
    """`algorithm` whose parameters become NaN at step `from_step` (1-based) and after; the
    reported loss turns NaN at that step too when `loss_too`, else stays finite."""
    calls = {"n": 0}

    def step(state, batch, key):
        calls["n"] += 1
        state, metrics = algorithm.train_step(state, batch, key)
        if calls["n"] >= from_step:
            state = state.replace(params=jax.tree_util.tree_map(
                lambda p: p * jnp.nan, state.params))
            if loss_too:
                metrics = dict(metrics, loss=jnp.float32(jnp.nan))
        return state, metrics

    return algorithm.__class__(**{**algorithm.__dict__, "train_step": step})


def params_after(algorithm, kwargs, epochs: int):
    tc = kwargs["train_config"].copy_and_resolve_references()
    tc.max_epochs = epochs
    return fit(algorithm, **dict(kwargs, train_config=tc)).state.params


def restore_latest(directory, algorithm, kwargs):
    ckpt = TrainCheckpointer(directory, every=1, fingerprint="f")
    state = algorithm.init_state(jax.random.PRNGKey(0), kwargs["x_labeled"][:1])
    restored = ckpt.restore(state, algorithm.eval_variables(state))
    ckpt.close()
    return restored


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_nan_loss_names_step_and_keeps_last_good_checkpoint(tmp_path, moons_fit):
    algorithm, kwargs = moons_fit(epochs=5, labeled=12, unlabeled=False, watch=100, seed=3)
    ckpt = TrainCheckpointer(tmp_path / "ckpt", every=1, fingerprint="f")
    # Step 8 is the second step of epoch 3 (3 steps per epoch).
    with pytest.raises(TrainingDiverged, match=r"^non-finite training loss at step 8 \(epoch 3\)$"):
        fit(poisoned(algorithm, from_step=8, loss_too=True), checkpointer=ckpt, **kwargs)
    ckpt.close()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1", "2"]
    state, _, progress = restore_latest(tmp_path / "ckpt", algorithm, kwargs)
    assert progress["epoch"] == 2 and progress["global_step"] == 6
    assert_trees_equal(state.params, params_after(algorithm, kwargs, epochs=2))


def test_nan_parameters_are_never_checkpointed(tmp_path, moons_fit):
    """The last step of epoch 3 makes the parameters NaN while its own loss is finite:
    epoch 3 must not be saved as a checkpoint."""
    algorithm, kwargs = moons_fit(epochs=5, labeled=12, unlabeled=False, watch=100, seed=3)
    ckpt = TrainCheckpointer(tmp_path / "ckpt", every=1, fingerprint="f")
    with pytest.raises(TrainingDiverged, match=r"^non-finite parameters after step 9 \(epoch 3\)$"):
        fit(poisoned(algorithm, from_step=9, loss_too=False), checkpointer=ckpt, **kwargs)
    ckpt.close()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["1", "2"]
    state, _, progress = restore_latest(tmp_path / "ckpt", algorithm, kwargs)
    assert progress["epoch"] == 2
    assert_trees_equal(state.params, params_after(algorithm, kwargs, epochs=2))
