"""The paper's protocol around CRC (issue 14): median initial model (§4.1), the transfer
setting's first query (Appendix B.2), the cosine schedule's horizon, EMA BatchNorm
statistics (footnote 2), the Mean Teacher reference options and the :val variants."""

import dataclasses
import importlib
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from conftest import run_loop, tiny_digits  # tests/conftest.py
from crc_jax import models, optim, ssl
from crc_jax.run import initial_model
from crc_jax import config as config_lib
from crc_jax.run import loop
from crc_jax.data import augment
from crc_jax.errors import ConfigError
from crc_jax.state import create_train_state
from crc_jax.train import FitResult
from experiments.configs import transfer
from experiments.configs.base import get_base_config

PAPER_CONFIGS = ("cifar10_fixmatch", "cifar100_fixmatch", "cifar10_fixmatch_pseudo_al",
                 "cifar10_group_size", "cifar10_last_vs_full", "svhn_mt", "svhn_mt_pseudo_al",
                 "transfer")


# ------------------------------------------------------------------ median initial model


@pytest.mark.parametrize("accuracies, expected", [
    ([0.3, 0.9, 0.5, 0.1, 0.7], 2),   # sorted 0.1 0.3 [0.5] 0.7 0.9
    ([0.8, 0.2, 0.6], 2),
    ([0.4, 0.4, 0.4], 1),             # ties: the middle candidate number
    ([0.9, 0.1, 0.5, 0.3], 3),        # even count: the lower middle (0.3)
    ([0.7], 0),
])
def test_median_index_is_the_middle_accuracy(accuracies, expected):
    assert initial_model.median_index(accuracies) == expected


def fake_fit(accuracies, calls):
    """A stand-in for train.fit returning the k-th preset accuracy, variables tagged by k."""

    def fit(algorithm, *, x_labeled, key, **kwargs):
        k = len(calls)
        calls.append((np.asarray(x_labeled).copy(), np.asarray(jax.random.key_data(key))))
        return FitResult(state=None, variables={"params": {"tag": np.full(3, float(k))}},
                         best_epoch=1, epochs_run=2, watch_accuracy=accuracies[k],
                         test_accuracy=accuracies[k], test_loss=1.0 - accuracies[k],
                         min_test_loss_epoch=1, history=[])

    return fit


def test_median_picks_the_candidate_with_the_median_accuracy_and_resumes(tmp_path):
    config = tiny_digits(**{"al.initial_model": "median", "al.initial_candidates": 5})
    setup = loop.build_setup(config)
    accuracies = [0.3, 0.9, 0.5, 0.1, 0.7]
    calls = []
    start = initial_model.prepare(setup, tmp_path, fit_fn=fake_fit(accuracies, calls))

    assert len(calls) == 5
    assert start.candidate == 2 and start.result.test_accuracy == 0.5
    expected = initial_model.candidate_indices(config, setup.pool_y, 10, 2)
    np.testing.assert_array_equal(start.indices, expected)
    np.testing.assert_array_equal(start.result.variables["params"]["tag"], np.full(3, 2.0))
    # Candidates are distinct class-balanced sets, each trained with its own key.
    sets = [initial_model.candidate_indices(config, setup.pool_y, 10, k) for k in range(5)]
    assert len({tuple(sorted(s.tolist())) for s in sets}) == 5
    assert all(np.bincount(setup.pool_y[s], minlength=10).tolist() == [2] * 10 for s in sets)
    assert len({c[1].tobytes() for c in calls}) == 5
    lines = (tmp_path / "initial_model" / "candidates.jsonl").read_text().splitlines()
    assert [json.loads(line)["test_accuracy"] for line in lines] == accuracies

    def must_not_train(*args, **kwargs):
        raise AssertionError("a resumed run retrained a stored candidate")

    again = initial_model.prepare(setup, tmp_path, fit_fn=must_not_train)
    assert again.candidate == 2
    np.testing.assert_array_equal(again.indices, start.indices)
    np.testing.assert_array_equal(again.result.variables["params"]["tag"], np.full(3, 2.0))


def test_median_resumes_after_a_crash_between_candidates(tmp_path):
    config = tiny_digits(**{"al.initial_model": "median", "al.initial_candidates": 3})
    setup = loop.build_setup(config)
    accuracies = [0.6, 0.2, 0.4]
    first = []
    config2 = ml_collections.ConfigDict(config.to_dict())
    config2.al.initial_candidates = 2  # the same first two candidates, as if killed after them
    initial_model.prepare(dataclasses.replace(setup, config=config2), tmp_path,
                          fit_fn=fake_fit(accuracies, first))
    assert len(first) == 2
    rest = []
    start = initial_model.prepare(setup, tmp_path, fit_fn=fake_fit(accuracies[2:], rest))
    assert len(rest) == 1  # only the missing candidate
    assert start.candidate == 2 and start.result.test_accuracy == 0.4


def test_median_initial_model_is_step_0_of_every_strategy_and_trial(tmp_path):
    config = tiny_digits(**{"al.initial_model": "median", "al.initial_candidates": 3})
    run_loop(config, tmp_path)
    candidates = [json.loads(line) for line in
                  (tmp_path / "initial_model" / "candidates.jsonl").read_text().splitlines()]
    accuracies = [c["test_accuracy"] for c in candidates]
    chosen = candidates[initial_model.median_index(accuracies)]
    firsts = []
    for spec in config.strategies:
        for trial in range(config.trials):
            path = tmp_path / loop.strategy_dirname(spec) / f"trial_{trial}" / "journal.jsonl"
            entries = [json.loads(line) for line in path.read_text().splitlines()]
            firsts.append(entries)
            assert entries[0]["initial"] == chosen["initial"]
            assert entries[0]["test_accuracy"] == chosen["test_accuracy"]
            assert entries[0]["initial_candidate"] == chosen["step"]
    # From step 1 on, trials differ: their acquisitions come from different keys.
    random_runs = [e for e in firsts[:config.trials]]
    assert random_runs[0][0]["acquired"] != random_runs[1][0]["acquired"]


# ---------------------------------------------------------------- transfer (Appendix B.2)


def record_init_keys(setup, keys):
    algorithm = setup.algorithm

    def init_state(key, sample_x):
        keys.append(np.asarray(jax.random.key_data(key)).tobytes())
        return algorithm.init_state(key, sample_x)

    return dataclasses.replace(setup, algorithm=dataclasses.replace(algorithm,
                                                                    init_state=init_state))


def test_transfer_first_query_comes_from_the_strategy_with_another_model(tmp_path, monkeypatch):
    config = tiny_digits(**{"al.first_query": "random_init", "al.steps": 1})
    strategies = config_lib.validate(config)
    setup = loop.build_setup(config)
    initial = {}
    for spec in ("random", "entropy"):
        keys = []
        recording = record_init_keys(setup, keys)
        entries = loop.run_trial(recording, strategies[spec], 0, tmp_path / spec)
        initial[spec] = entries[0]["initial"]
        assert entries[0]["num_labeled"] == config.al.initial_size
        assert len(set(initial[spec])) == config.al.initial_size
        # Two initializations: the querying model's, then the trained model's, from
        # different keys; the first is the documented query-model key.
        assert len(keys) == 3  # query model, step 0 fit, step 1 fit
        trial_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
        assert keys[0] == np.asarray(jax.random.key_data(
            initial_model.query_model_key(trial_key))).tobytes()
        assert keys[1] != keys[0]
    assert initial["random"] != initial["entropy"]
    # Entropy's first query is the top-entropy images of the untrained model.
    untrained = setup.algorithm.eval_variables(setup.algorithm.init_state(
        initial_model.query_model_key(trial_key), setup.pool_x[:1]))
    logits = np.asarray(setup.eval_apply(untrained, setup.pool_x))
    p = np.asarray(jax.nn.softmax(logits))
    entropy = -(p * np.log(np.clip(p, 1e-12, None))).sum(1)
    top = np.argsort(-entropy)[:config.al.initial_size]
    assert sorted(initial["entropy"]) == sorted(top.tolist())

    # A resumed trial reads the first query from its journal instead of asking again.
    def no_query(*args, **kwargs):
        raise AssertionError("the first query was asked again on resume")

    monkeypatch.setattr(initial_model, "first_query", no_query)
    entries = loop.run_trial(setup, strategies["entropy"], 0, tmp_path / "entropy")
    assert entries[0]["initial"] == initial["entropy"]


def test_transfer_config_runs_several_steps():
    for arg in (None, "digits"):
        c = transfer.get_config(arg)
        config_lib.validate(c)
        assert c.al.first_query == "random_init" and c.al.steps >= 3
        assert "random" in c.strategies


# -------------------------------------------------------------------- schedule horizon


def sgd_train_config(schedule: str, schedule_steps: int):
    c = get_base_config().train
    c.optimizer, c.lr, c.momentum, c.weight_decay = "sgd", 1.0, 0.0, 0.0
    c.schedule, c.schedule_steps = schedule, schedule_steps
    return c


def learning_rates(tx, steps: int) -> np.ndarray:
    """The learning rate of each step, read off SGD updates of a unit gradient."""
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    rates = []
    for _ in range(steps):
        updates, state = tx.update({"w": jnp.ones(())}, state, params)
        rates.append(-float(updates["w"]))
    return np.asarray(rates)


@pytest.mark.parametrize("schedule_steps, horizon", [(40, 40), (0, 10)])
def test_fixmatch_cosine_reaches_its_minimum_at_schedule_steps(schedule_steps, horizon):
    cap = 10  # max_epochs * steps_per_epoch
    tx = optim.make_optimizer(sgd_train_config("fixmatch_cosine", schedule_steps), cap)
    rates = learning_rates(tx, 41)
    k = np.arange(41)
    np.testing.assert_allclose(rates, np.cos(7 * math.pi * k / (16 * horizon)), rtol=1e-5,
                               atol=1e-6)
    if schedule_steps:
        assert rates[cap] > rates[schedule_steps] + 0.5  # the cap is not the horizon


def test_cosine_decays_to_zero_at_schedule_steps_through_the_algorithm():
    config = tiny_digits()
    config.train.update(sgd_train_config("cosine", 30))
    model = models.get("mlp", num_classes=10, width=8)
    algorithm = ssl.create(config, model, num_train_steps=8, flip=False)
    tx = algorithm.init_state(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32)).tx
    rates = learning_rates(tx, 31)
    assert rates[8] > 0.5 and rates[30] == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.diff(rates) <= 1e-7)


def test_step_schedule_decays_once_at_lr_decay_step():
    c = sgd_train_config("step", 0)
    c.lr_decay_step, c.lr_decay_factor = 5, 0.2
    rates = learning_rates(optim.make_optimizer(c, 100), 8)
    np.testing.assert_allclose(rates, [1, 1, 1, 1, 1, 0.2, 0.2, 0.2], rtol=1e-6)


# ------------------------------------------------------------ EMA BatchNorm statistics


@pytest.mark.parametrize("rule, expected", [("average", 0.1), ("copy", 1.0)])
def test_ema_batch_stats_average_or_copy(rule, expected):
    model = models.get("cnn", num_classes=3, width=2)
    state = create_train_state(model, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32),
                               optax.sgd(0.1), ema_decay=0.9, ema_batch_stats_rule=rule)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.batch_stats)
    ones = jax.tree_util.tree_map(jnp.ones_like, state.batch_stats)
    assert jax.tree_util.tree_leaves(ones)  # the CNN has BatchNorm statistics
    new = state.replace(ema_batch_stats=zeros, batch_stats=ones,
                        ema_params=state.params).update_ema()
    for leaf in jax.tree_util.tree_leaves(new.ema_batch_stats):
        np.testing.assert_allclose(leaf, expected, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(new.ema_params),
                    jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # params average as before


@pytest.mark.parametrize("rule", ["average", "copy"])
def test_ema_batch_stats_rule_reaches_the_train_state(rule):
    config = tiny_digits(**{"ssl.name": "fixmatch", "ssl.ema_batch_stats": rule,
                            "train.ema_decay": 0.99})
    model = models.get("cnn", num_classes=10, width=2)
    algorithm = ssl.create(config, model, num_train_steps=4, flip=False)
    state = algorithm.init_state(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32))
    assert state.ema_batch_stats_rule == rule


# ------------------------------------------------------- Mean Teacher reference options


@pytest.mark.parametrize("eval_model", ["student", "teacher"])
def test_mean_teacher_evaluates_the_configured_network(eval_model):
    config = tiny_digits(**{"ssl.name": "mean_teacher", "ssl.eval_model": eval_model,
                            "ssl.unlabeled_ratio": 1})
    model = models.get("mlp", num_classes=10, width=8)
    algorithm = ssl.create(config, model, num_train_steps=4, flip=False)
    x = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)
    state = algorithm.init_state(jax.random.PRNGKey(0), x[:1])
    batch = {"x_l": x, "y_l": np.arange(16, dtype=np.int32) % 10, "x_u": x}
    for i in range(2):
        state, _ = algorithm.train_step(state, batch, jax.random.PRNGKey(i))
    evaluated = algorithm.eval_variables(state)["params"]
    expected = state.params if eval_model == "student" else state.ema_params
    other = state.ema_params if eval_model == "student" else state.params
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(a, b) for a, b in zip(leaves(evaluated), leaves(expected)))
    assert not all(np.array_equal(a, b) for a, b in zip(leaves(evaluated), leaves(other)))


@pytest.mark.parametrize("warmup", [True, False])
def test_teacher_ema_warmup_follows_the_reference(warmup):
    """Reference: ema_factor = min(1 - 1/(k+1), α) at the k-th update (0.5 at the first)."""
    config = tiny_digits(**{"ssl.name": "mean_teacher", "ssl.teacher_ema_warmup": warmup,
                            "ssl.teacher_ema": 0.95, "ssl.unlabeled_ratio": 1})
    algorithm = ssl.create(config, models.get("mlp", num_classes=10, width=8),
                           num_train_steps=4, flip=False)
    x = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)
    state = algorithm.init_state(jax.random.PRNGKey(0), x[:1])
    batch = {"x_l": x, "y_l": np.arange(16, dtype=np.int32) % 10, "x_u": x}
    for k in range(1, 4):
        teacher = jax.tree_util.tree_map(np.asarray, state.ema_params)
        state, _ = algorithm.train_step(state, batch, jax.random.PRNGKey(k))
        d = min(1 - 1 / (k + 1), 0.95) if warmup else 0.95
        jax.tree_util.tree_map(
            lambda e, t, p: np.testing.assert_allclose(e, d * t + (1 - d) * p, rtol=1e-5,  # noqa: B023
                                                       atol=1e-6),
            state.ema_params, teacher, state.params)


@pytest.mark.parametrize("translate", [2, 0])
def test_weak_view_translation_range(translate):
    image = np.zeros((32, 32, 1), np.float32)
    image[16, 16] = 1.0
    batch = np.repeat(image[None], 256, axis=0)
    out = np.asarray(augment.weak_fn(flip=False, translate=translate)(
        jax.random.PRNGKey(0), batch))
    shifts = [np.abs(np.argwhere(o[..., 0] == 1.0)[0] - 16).max() for o in out]
    limit = translate or augment.translate_pad(32)
    assert max(shifts) == limit


def test_svhn_mt_follows_the_reference():
    from experiments.configs import svhn_mt

    c = svhn_mt.get_config()
    assert c.train.ema_decay == 0.0  # Mean Teacher reads ssl.teacher_ema, never this
    assert c.ssl.eval_model == "student" and c.train.translate == 2
    assert (c.train.batch_size, c.ssl.unlabeled_ratio) == (50, 1)
    assert (c.train.schedule, c.train.lr_decay_step, c.train.lr_decay_factor) == (
        "step", 400_000, 0.2)
    assert c.ssl.rampup_steps == 200_000 and c.ssl.teacher_ema == 0.95
    assert c.ssl.teacher_ema_warmup


# --------------------------------------------------------------- configs and validation


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_has_a_val_variant_and_documents_its_protocol(name):
    module = importlib.import_module(f"experiments.configs.{name}")
    plain, val = module.get_config(), module.get_config("val")
    config_lib.validate(plain)
    config_lib.validate(val)
    assert plain.train.watch == "test"
    assert val.train.watch == "val" and val.train.val_size > 0
    doc = module.__doc__
    assert "§4.1" in doc and ":val" in doc
    if plain.ssl.name == "fixmatch":
        assert plain.train.schedule_steps == 2 ** 20 and "2^20" in doc
        assert "ema_batch_stats" in doc
    if name != "transfer":
        assert plain.al.initial_model == "median"
        assert plain.al.initial_candidates == (5 if plain.al.pseudo_al else 3)


@pytest.mark.parametrize("field, value", [
    ("al.initial_model", "best"), ("al.initial_candidates", 0),
    ("train.schedule_steps", -1), ("ssl.ema_batch_stats", "mean"),
    ("ssl.eval_model", "both"), ("train.schedule", "linear"), ("train.translate", -2),
    ("ssl.rampup_steps", -5), ("train.lr_decay_factor", 0.0),
])
def test_bad_protocol_values_name_their_field(field, value):
    config = tiny_digits(**{field: value})
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_lib.validate(config)


def test_median_with_a_strategy_picked_first_query_is_refused():
    config = tiny_digits(**{"al.initial_model": "median", "al.first_query": "random_init"})
    with pytest.raises(ConfigError, match=r"al\.initial_model"):
        config_lib.validate(config)


def test_figure2_reads_a_transfer_run(tmp_path):
    from experiments import figures

    (tmp_path / "config.json").write_text(json.dumps(
        {"al": {"first_query": "random_init"}, "dataset": {"name": "digits"},
         "ssl": {"name": "fixmatch"}}))
    rows = ["strategy,trial,step,num_labeled,test_accuracy"]
    accuracy = {("random", 0): [0.5, 0.6, 0.7], ("random", 1): [0.7, 0.7, 0.8],
                ("crc", 0): [0.4, 0.7, 0.9], ("crc", 1): [0.2, 0.5, 0.9]}
    for (spec, trial), values in accuracy.items():
        rows += [f"{spec},{trial},{s},{20 + 10 * s},{v}" for s, v in enumerate(values)]
    (tmp_path / "summary.csv").write_text("\n".join(rows) + "\n")
    curves = figures.transfer_curves(tmp_path)
    counts, acc = curves["crc"]
    assert counts.tolist() == [20, 30, 40]
    np.testing.assert_allclose(np.diff(acc, axis=1).mean(0), [30.0, 30.0])
    np.testing.assert_allclose(curves["random"][1].mean(0), [60.0, 65.0, 75.0])
    path = figures.figure2_transfer(tmp_path, tmp_path / "figs")
    assert path.name == "figure2_transfer.png" and path.stat().st_size > 10_000
    (tmp_path / "config.json").write_text(json.dumps({"al": {"first_query": "trained"}}))
    with pytest.raises(figures.FigureError, match="not a transfer run"):
        figures.figure2_transfer(tmp_path, tmp_path / "figs")
    with pytest.raises(figures.FigureError, match="not a finished run"):
        figures.figure2_transfer(tmp_path / "missing", tmp_path / "figs")
