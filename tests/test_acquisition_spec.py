"""The one strategy entry: a spec's options checked once, one precedence rule, checked picks."""

import jax
import numpy as np
import pytest

from crc_jax import acquisition
from crc_jax.acquisition import SpecError, from_spec, select
from crc_jax.errors import ConfigError
from crc_jax.config import validate
from experiments.configs.base import get_base_config


def test_an_option_in_the_spec_wins_over_the_defaults():
    assert from_spec("crc:group_size=10", {"group_size": 5}).group_size == 10
    assert from_spec("crc", {"group_size": 5}).group_size == 5
    assert from_spec("crc").group_size is None                 # the factory's own default
    assert from_spec("entropy", {"group_size": 5}).options == {}   # not an entropy option


def built(config, spec):
    """The strategy of `spec` as a run of `config` builds it (crc_jax.config.validate)."""
    config.strategies = (spec,)
    return validate(config)[spec]


def test_a_group_size_set_twice_in_the_config_is_refused_not_overwritten():
    config = get_base_config()
    config.acquisition.crc.group_size = 10
    config.al.group_size, config.al.query_size = 5, 10
    with pytest.raises(ConfigError, match="acquisition.crc.group_size.*al.group_size"):
        built(config, "crc")
    config.acquisition.crc.group_size = 5                       # agreeing: fine
    assert built(config, "crc").group_size == 5


@pytest.mark.parametrize("spec, message", [
    ("crc:foo=1", r"crc has no option 'foo' \(its options: group_size, subset"),
    ("crc:sequential=1", "sequential must be True or False"),
    ("crc:subset=middle", "subset must be"),
    ("crc:group_size=0", "positive integer"),
    ("crc:group_size=2,group_size=3", "sets 'group_size' twice"),
    ("crc:group_size", "expected key=value"),
    ("nosuch", "unknown strategy 'nosuch'"),
])
def test_bad_specs_name_the_spec_and_the_problem(spec, message):
    with pytest.raises(SpecError, match=message):
        from_spec(spec)


@pytest.mark.parametrize("spec, budget, message", [
    ("crc:group_size=3", 10, "group_size 3 must divide the budget"),
    ("crc:group_size=2,max_groups=4", 10, "max_groups=4 leaves fewer than the 5 groups"),
    ("crc:group_size=5,class_balanced=True", 10, "class-balanced group is the whole budget"),
])
def test_budgets_a_strategy_cannot_fill(spec, budget, message):
    strategy = from_spec(spec)
    with pytest.raises(SpecError, match=message):
        strategy.check_budget(budget)


def test_config_check_names_the_field_that_set_the_group_size():
    config = get_base_config()
    config.al.query_size, config.al.group_size = 10, 3
    with pytest.raises(ConfigError, match=r"config.al.group_size: 3 must divide al.query_size"):
        built(config, "crc")
    with pytest.raises(ConfigError, match=r"config.strategies: 'crc:group_size=4'"):
        built(config, "crc:group_size=4")
    built(config, "crc:group_size=5")      # the spec's G divides Q
    built(config, "entropy")                # takes no group size


def _ctx(n=20, labeled=(0, 1)):
    unlabeled = np.setdiff1d(np.arange(n), labeled)
    return acquisition.Context(apply_fn=None, variables=None, x=np.zeros((n, 2)),
                               labeled=np.array(labeled), unlabeled=unlabeled, num_classes=2)


def _strategy(fn):
    return acquisition.Strategy(spec="test", name="test", options={}, traits={}, fn=fn)


@pytest.mark.parametrize("returned", [
    lambda ctx, b: ctx.unlabeled[:b - 1],                              # too few
    lambda ctx, b: np.repeat(ctx.unlabeled[:1], b),                    # repeats
    lambda ctx, b: np.concatenate([ctx.labeled[:1], ctx.unlabeled[:b - 1]]),  # a labeled one
    lambda ctx, b: ctx.unlabeled[:b].astype(np.float32),               # not indices
])
def test_select_refuses_an_invalid_pick(returned):
    with pytest.raises(RuntimeError, match="strategy 'test' returned"):
        select(_strategy(lambda ctx, b, key: returned(ctx, b)), _ctx(), 4, jax.random.PRNGKey(0))


def test_select_returns_int64_indices_and_checks_the_budget_first():
    picked = select(from_spec("random"), _ctx(), 4, jax.random.PRNGKey(0))
    assert picked.dtype == np.int64 and len(set(picked.tolist())) == 4
    with pytest.raises(ValueError, match="budget 30 exceeds"):
        select(from_spec("random"), _ctx(), 30, jax.random.PRNGKey(0))
