"""Config validation, run before any heavy work.

Every bad value raises `ConfigError` naming the dotted field and what is allowed; the
CLI prints that one line and exits with status 2. Checks that need the data set's size
(budget larger than the pool) run in `check_pool_budget` once the data is loaded.
One field is moved rather than refused: a train.batch_size that does not split over the
devices becomes the nearest multiple of the device count, said in the log and recorded
in train.requested_batch_size (config.json, the report).
"""

from __future__ import annotations

import logging

import jax

from crc_jax import acquisition, data, models, ssl
from crc_jax.runtime import devices
from crc_jax.errors import ConfigError, DataError
from crc_jax.run import initial_set, strategies

WATCHABLE = ("test", "val")
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "fixmatch_cosine", "step")
INITIAL_MODELS = ("per_trial", "median")
EMA_BATCH_STATS = ("average", "copy")
EVAL_MODELS = ("teacher", "student")

log = logging.getLogger(__name__)


def _int(config, field: str, *, minimum: int) -> int:
    node = config
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    value = node[leaf]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _choice(value, field: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(field, f"{value!r} is not one of: {', '.join(map(str, allowed))}")


def validate(config) -> None:
    """Raise ConfigError on the first bad field of `config` (after moving train.batch_size
    to a multiple of the device count, see `_check_data_parallel`)."""
    _choice(config.dataset.name, "dataset.name", data.names())
    _choice(config.model.name, "model.name", models.names())
    _choice(config.ssl.name, "ssl.name", ssl.names())

    dropout = config.model.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError("model.dropout", f"must be a number in [0, 1), got {dropout!r}")
    trains_with_dropout = ssl.names(trait="dropout")
    if dropout and config.ssl.name not in trains_with_dropout:
        raise ConfigError("model.dropout", f"needs ssl.name in {', '.join(trains_with_dropout)} "
                                           f"(which train with dropout), got {config.ssl.name!r}")

    _int(config, "seed", minimum=0)
    _int(config, "trials", minimum=1)
    specs = list(config.strategies)
    if not specs:
        raise ConfigError("strategies", "needs at least one strategy")
    if len(set(specs)) != len(specs):
        raise ConfigError("strategies", f"lists a strategy twice: {specs}")

    try:
        num_classes = data.num_classes(config.dataset.name, config.dataset.data_dir)
    except DataError as err:
        raise ConfigError("dataset.data_dir", str(err)) from None
    q0 = _int(config, "al.initial_size", minimum=1)
    q = _int(config, "al.query_size", minimum=1)
    _int(config, "al.group_size", minimum=1)   # its fit to Q and Q0: check_strategy
    _int(config, "al.steps", minimum=0)
    if q0 % num_classes:
        raise ConfigError("al.initial_size", f"{q0} must be divisible by the {num_classes} "
                                             f"classes of {config.dataset.name} (Q0/C per class)")
    if config.al.pseudo_al and q % num_classes:
        raise ConfigError("al.query_size", f"{q} must be divisible by the {num_classes} classes "
                                           "in the pseudo-AL setting (R per class)")
    _choice(config.al.first_query, "al.first_query", ("trained", "random_init"))
    _check_protocol(config)
    for spec in specs:
        check_strategy(config, spec)
    _int(config, "dataset.train_size", minimum=0)
    _int(config, "dataset.test_size", minimum=0)

    tc = config.train
    _int(config, "train.batch_size", minimum=1)
    _int(config, "train.steps_per_epoch", minimum=1)
    _int(config, "train.max_epochs", minimum=1)
    _int(config, "train.patience", minimum=0)
    _int(config, "train.eval_batch_size", minimum=1)
    _int(config, "train.val_size", minimum=0)
    _int(config, "train.checkpoint_every", minimum=0)
    _int(config, "train.requested_batch_size", minimum=0)
    _choice(config.device.require, "device.require", devices.REQUIRE)
    _int(config, "train.steps_per_dispatch", minimum=1)
    _choice(tc.watch, "train.watch", WATCHABLE)
    _choice(tc.dtype, "train.dtype", DTYPES)
    _check_data_parallel(config)
    if tc.watch == "val" and tc.val_size == 0:
        raise ConfigError("train.val_size", "must be > 0 when train.watch is 'val'")
    _choice(tc.optimizer, "train.optimizer", OPTIMIZERS)
    _choice(tc.schedule, "train.schedule", SCHEDULES)
    if not tc.lr > 0:
        raise ConfigError("train.lr", f"must be > 0, got {tc.lr}")
    if not 0.0 <= tc.ema_decay < 1.0:
        raise ConfigError("train.ema_decay", f"must be in [0, 1), got {tc.ema_decay}")
    if config.ssl.name != "supervised":
        _int(config, "ssl.unlabeled_ratio", minimum=1)
        if not 0.0 <= config.ssl.threshold <= 1.0:
            raise ConfigError("ssl.threshold", f"must be in [0, 1], got {config.ssl.threshold}")


def _check_protocol(config) -> None:
    """The fields that pick the paper's protocol variants (initial model, schedules, EMA)."""
    _choice(config.al.initial_model, "al.initial_model", INITIAL_MODELS)
    _int(config, "al.initial_candidates", minimum=1)
    initial_set.check_config(config)
    if config.al.initial_model == "median" and config.al.first_query == "random_init":
        raise ConfigError("al.initial_model", "'median' draws random class-balanced initial "
                                              "sets; al.first_query='random_init' lets each "
                                              "strategy pick them instead: use 'per_trial'")
    _int(config, "train.schedule_steps", minimum=0)
    _int(config, "train.lr_decay_step", minimum=0)
    _int(config, "train.translate", minimum=0)
    if not config.train.lr_decay_factor > 0:
        raise ConfigError("train.lr_decay_factor", f"must be > 0, got {config.train.lr_decay_factor}")
    _int(config, "ssl.rampup_steps", minimum=0)
    _choice(config.ssl.ema_batch_stats, "ssl.ema_batch_stats", EMA_BATCH_STATS)
    _choice(config.ssl.eval_model, "ssl.eval_model", EVAL_MODELS)


def check_strategy(config, spec: str) -> None:
    """Build the strategy of `spec` as the run will (acquisition.from_spec checks its
    options, once), and check it can fill al.query_size (and al.initial_size when it makes
    the first query), and that MC-dropout strategies have dropout."""
    strategy = strategies.build(config, spec)
    if strategy.traits.get("needs_dropout") and not config.model.dropout:
        raise ConfigError("strategies", f"{strategy.name!r} needs MC dropout: set "
                                        "model.dropout to a rate in (0, 1)")
    budgets = {"al.query_size": config.al.query_size}
    if config.al.first_query == "random_init":  # the strategy picks the Q0 images too
        budgets["al.initial_size"] = config.al.initial_size
    written = acquisition.parse_spec(spec)[1]
    for field, budget in budgets.items():
        g = strategy.group_size
        if g and budget % g and "group_size" not in written:   # G from al.group_size
            raise ConfigError("al.group_size", f"{g} must divide {field} ({budget})")
        try:
            strategy.check_budget(budget)
        except acquisition.SpecError as err:
            raise ConfigError("strategies", f"{err} ({field})") from None


def _check_data_parallel(config) -> None:
    """config.distributed's counts (ConfigDict checks the types), and a batch that splits
    evenly over the devices: one that does not is moved to the nearest multiple of the
    device count (`nearest_multiple`), logged, and the config's value kept in
    train.requested_batch_size, so config.json and the report say what ran."""
    _int(config, "distributed.num_processes", minimum=0)
    _int(config, "distributed.process_id", minimum=-1)
    _int(config, "distributed.heartbeat_timeout", minimum=1)
    count = jax.device_count()
    batch = config.train.batch_size
    if batch % count == 0:
        return
    used = nearest_multiple(batch, count)
    log.warning("train.batch_size %d does not split over the %d devices: the run uses %d, the "
                "nearest multiple of %d (recorded as train.requested_batch_size=%d in "
                "config.json and the report)", batch, count, used, count, batch)
    config.train.requested_batch_size = batch
    config.train.batch_size = used


def nearest_multiple(value: int, step: int) -> int:
    """The multiple of `step` nearest to `value` (ties: the larger one), at least `step`:
    50 over 4 devices -> 52, over 8 -> 48."""
    below = value // step * step
    above = below + step
    return above if below == 0 or value - below >= above - value else below


def check_pool_budget(config, pool_size: int) -> None:
    """Q0 + steps * Q labels must fit in the pool (after any validation hold-out)."""
    total = config.al.initial_size + config.al.steps * config.al.query_size
    if total > pool_size:
        raise ConfigError("al.steps", f"Q0 + steps*Q = {total} labels exceed the pool of "
                                      f"{pool_size} images of {config.dataset.name}")
    initial_set.check_pool(config, pool_size)


def check_class_counts(config, pool_y, num_classes: int) -> None:
    """Step 0 labels Q0/C images of every class: each class must have that many in the pool."""
    import numpy as np

    per_class = config.al.initial_size // num_classes
    counts = np.bincount(np.asarray(pool_y, np.int64), minlength=num_classes)
    short = np.flatnonzero(counts < per_class)
    if len(short):
        k = int(short[0])
        raise ConfigError("al.initial_size", f"Q0/C = {per_class} images of each class at step "
                                             f"0, but class {k} has {counts[k]} in the pool of "
                                             f"{config.dataset.name}")
