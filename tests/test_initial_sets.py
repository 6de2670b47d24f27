"""Step 0's labeled set by a stated rule (al.initial_rule, issue 27): Figure 1's pivots lie
off the class boundary by the stated margin, near_duplicate picks nearest neighbours, the
default draw is unchanged, bad values name their field, and a run journals the rule's set."""

import json

import numpy as np
import pytest

from conftest import run_loop, tiny_digits  # tests/conftest.py
from crc_jax.data import embedded, initial_sets
from crc_jax.data.pool import Pool
from crc_jax.errors import ConfigError
from crc_jax import config as config_lib
from crc_jax.run import initial_set
from crc_jax.run.rundir import RunDir, essential_config
from experiments.configs import moons_pi

TRIALS = range(10)


@pytest.fixture(scope="module")
def moons():
    x, y, _, _ = embedded.moons()
    return x, y, initial_sets.margins(x, y)


def test_margins_are_distances_to_the_nearest_point_of_the_other_class(moons):
    x, y, m = moons
    for i in (0, 17, 503, 999):
        other = x[y != y[i]]
        assert m[i] == pytest.approx(np.linalg.norm(other - x[i], axis=1).min(), rel=1e-5)


def test_moons_pi_pivots_are_off_the_class_boundary_by_the_stated_margin(moons):
    """moons_pi's docstring: each moon's pivots are at or above its 75th-percentile margin,
    at least 0.67 (upper moon) and 0.60 (lower moon) from every point of the other moon."""
    x, y, m = moons
    config = moons_pi.get_config()
    thresholds = [initial_sets.margin_threshold(m[y == k], 0.75) for k in (0, 1)]
    assert thresholds == pytest.approx([0.667, 0.598], abs=1e-3)
    for trial in TRIALS:
        picked = initial_set.choose(config, x, y, 2, np.random.default_rng([config.seed, trial]))
        assert sorted(y[picked].tolist()) == [0, 0, 1, 1]
        for i in picked:
            assert m[i] >= thresholds[y[i]], (trial, int(i), float(m[i]))


def test_random_pivots_would_fail_that_margin(moons):
    """The check above has power: class-balanced random draws put a pivot inside the margin."""
    x, y, m = moons
    thresholds = [initial_sets.margin_threshold(m[y == k], 0.75) for k in (0, 1)]
    inside = 0
    for trial in TRIALS:
        picked = initial_sets.RULES.factory("random")(x, y, 2, 4, np.random.default_rng([0, trial]))
        inside += sum(m[i] < thresholds[y[i]] for i in picked)
    assert inside >= 10


def test_spread_takes_the_candidate_farthest_from_the_first_pivot(moons):
    x, y, m = moons
    picked = initial_sets.spread(x, y, 2, 4, np.random.default_rng(3), margin_quantile=0.75)
    for k in (0, 1):
        first, second = picked[2 * k:2 * k + 2]
        candidates = np.flatnonzero((y == k) & (m >= initial_sets.margin_threshold(m[y == k], 0.75)))
        far = np.linalg.norm(x[candidates] - x[first], axis=1).max()
        assert np.linalg.norm(x[second] - x[first]) == pytest.approx(far)


def test_near_duplicate_pairs_an_anchor_with_its_nearest_neighbour_of_its_class():
    x, y, _, _ = embedded.digits()
    flat = x.reshape(len(x), -1).astype(np.float64)
    picked = initial_sets.near_duplicate(x, y, 10, 20, np.random.default_rng(0))
    assert sorted(y[picked].tolist()) == sorted(list(range(10)) * 2)
    spread = initial_sets.spread(x, y, 10, 20, np.random.default_rng(0))
    for k in range(10):
        anchor, partner = picked[2 * k:2 * k + 2]
        others = np.flatnonzero((y == k) & (np.arange(len(y)) != anchor))
        nearest = np.linalg.norm(flat[others] - flat[anchor], axis=1).min()
        assert np.linalg.norm(flat[partner] - flat[anchor]) == pytest.approx(nearest)
        a, b = spread[2 * k:2 * k + 2]
        assert np.linalg.norm(flat[a] - flat[b]) > 2 * nearest   # "well spread" is not that


def test_the_default_rule_draws_what_step_0_drew_before():
    x, y, _, _ = embedded.digits()
    config = tiny_digits()
    for trial in (0, 1):
        old = Pool(y, 10).initial_indices(20, np.random.default_rng([config.seed, trial]))
        new = initial_set.choose(config, x, y, 10, np.random.default_rng([config.seed, trial]))
        assert new.tolist() == old.tolist()


def test_a_run_dir_written_before_the_fields_existed_still_resumes(tmp_path):
    config = tiny_digits()
    old = config.to_dict()
    for field in ("initial_rule", "initial_indices", "initial_margin_quantile"):
        del old["al"][field]
    assert essential_config(old) == essential_config(config.to_dict())   # same fingerprint
    (tmp_path / "config.json").write_text(json.dumps(old))
    with RunDir(tmp_path) as rundir:
        rundir.bind_config(config.to_dict())   # no "another config" refusal
    config.al.initial_rule = "spread"
    with RunDir(tmp_path) as rundir, pytest.raises(Exception, match="initial_rule"):
        rundir.bind_config(config.to_dict())


@pytest.mark.parametrize("overrides, field", [
    ({"al.initial_rule": "corners"}, "al.initial_rule"),
    ({"al.initial_rule": "spread", "al.initial_model": "median"}, "al.initial_rule"),
    ({"al.initial_rule": "near_duplicate", "al.first_query": "random_init"}, "al.initial_rule"),
    ({"al.initial_indices": (1, 2)}, "al.initial_indices"),
    ({"al.initial_rule": "indices", "al.initial_indices": (1, 2)}, "al.initial_indices"),
    ({"al.initial_rule": "indices", "al.initial_indices": tuple([5] * 20)}, "al.initial_indices"),
    ({"al.initial_margin_quantile": 1.0, "al.initial_rule": "spread"}, "al.initial_margin_quantile"),
    ({"al.initial_margin_quantile": 0.5}, "al.initial_margin_quantile"),
])
def test_bad_initial_set_fields_name_their_field(overrides, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        config_lib.validate(tiny_digits(**overrides))


def test_an_index_outside_the_pool_is_refused_before_the_directory_is_bound(tmp_path):
    x, y, _, _ = embedded.digits()
    config = tiny_digits(**{"al.initial_rule": "indices",
                            "al.initial_indices": tuple(range(19)) + (len(x),)})
    config_lib.validate(config)   # the pool size is known only once the data are loaded
    with pytest.raises(ConfigError, match=r"al\.initial_indices.*\[0, 1347\)"):
        run_loop(config, tmp_path)
    assert not (tmp_path / "config.json").exists()
    with pytest.raises(ConfigError, match=r"al\.initial_indices.*\[0, 1347\)"):
        initial_set.choose(config, x, y, 10, np.random.default_rng(0))


@pytest.mark.parametrize("rule", ["spread", "indices"])
def test_a_run_starts_every_strategy_of_a_trial_from_the_rules_set(tmp_path, rule):
    x, y, _, _ = embedded.digits()
    given = tuple(int(i) for i in np.concatenate([np.flatnonzero(y == k)[:2] for k in range(10)]))
    config = tiny_digits(**{"al.initial_rule": rule, "al.steps": 0,
                            "al.initial_indices": given if rule == "indices" else ()})
    run_loop(config, tmp_path)
    for trial in (0, 1):
        expected = (list(given) if rule == "indices" else initial_set.choose(
            config, x, y, 10, np.random.default_rng([config.seed, trial])).tolist())
        for spec in config.strategies:
            journal = tmp_path / spec / f"trial_{trial}" / "journal.jsonl"
            assert json.loads(journal.read_text().splitlines()[0])["initial"] == expected
