"""Config validation, run before any heavy work.

Every bad value raises `ConfigError` naming the dotted field and what is allowed; the
CLI prints that one line and exits with status 2. Checks that need the data set's size
(budget larger than the pool) run in `check_pool_budget` once the data is loaded.
"""

from __future__ import annotations

import inspect

import jax

from crc_jax import acquisition, data, models, ssl
from crc_jax.errors import ConfigError, DataError
from crc_jax.run import initial_set

WATCHABLE = ("test", "val")
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "fixmatch_cosine", "step")
INITIAL_MODELS = ("per_trial", "median")
EMA_BATCH_STATS = ("average", "copy")
EVAL_MODELS = ("teacher", "student")
DROPOUT_SSL = ("supervised", "fixmatch")  # the algorithms whose train steps pass a dropout key
NEEDS_DROPOUT = ("bald",)


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
    """Raise ConfigError on the first bad field of `config`."""
    _choice(config.dataset.name, "dataset.name", data.names())
    _choice(config.model.name, "model.name", models.names())
    _choice(config.ssl.name, "ssl.name", ssl.names())

    dropout = config.model.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError("model.dropout", f"must be a number in [0, 1), got {dropout!r}")
    if dropout and config.ssl.name not in DROPOUT_SSL:
        raise ConfigError("model.dropout", f"needs ssl.name in {', '.join(DROPOUT_SSL)} "
                                           f"(which train with dropout), got {config.ssl.name!r}")

    _int(config, "seed", minimum=0)
    _int(config, "trials", minimum=1)
    strategies = list(config.strategies)
    if not strategies:
        raise ConfigError("strategies", "needs at least one strategy")
    for spec in strategies:
        try:
            name, _ = acquisition.parse_spec(spec)
        except ValueError as err:
            raise ConfigError("strategies", str(err)) from None
        _choice(name, "strategies", acquisition.names())
        if name in NEEDS_DROPOUT and not dropout:
            raise ConfigError("strategies", f"{name!r} needs MC dropout: set model.dropout "
                                            "to a rate in (0, 1)")
    if len(set(strategies)) != len(strategies):
        raise ConfigError("strategies", f"lists a strategy twice: {strategies}")

    try:
        num_classes = data.num_classes(config.dataset.name, config.dataset.data_dir)
    except DataError as err:
        raise ConfigError("dataset.data_dir", str(err)) from None
    q0 = _int(config, "al.initial_size", minimum=1)
    q = _int(config, "al.query_size", minimum=1)
    g = _int(config, "al.group_size", minimum=1)
    _int(config, "al.steps", minimum=0)
    if q0 % num_classes:
        raise ConfigError("al.initial_size", f"{q0} must be divisible by the {num_classes} "
                                             f"classes of {config.dataset.name} (Q0/C per class)")
    if q % g:
        raise ConfigError("al.group_size", f"{g} must divide al.query_size ({q})")
    if config.al.pseudo_al and q % num_classes:
        raise ConfigError("al.query_size", f"{q} must be divisible by the {num_classes} classes "
                                           "in the pseudo-AL setting (R per class)")
    _choice(config.al.first_query, "al.first_query", ("trained", "random_init"))
    _check_protocol(config)
    for spec in strategies:
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
    if (config.al.first_query == "random_init"
            and config.al.initial_size % config.al.group_size):
        raise ConfigError("al.group_size", f"{config.al.group_size} must divide "
                          f"al.initial_size ({config.al.initial_size}): with "
                          "al.first_query='random_init' the strategy picks the Q0 images")
    _int(config, "train.schedule_steps", minimum=0)
    _int(config, "train.lr_decay_step", minimum=0)
    _int(config, "train.translate", minimum=0)
    if not config.train.lr_decay_factor > 0:
        raise ConfigError("train.lr_decay_factor", f"must be > 0, got {config.train.lr_decay_factor}")
    _int(config, "ssl.rampup_steps", minimum=0)
    _choice(config.ssl.ema_batch_stats, "ssl.ema_batch_stats", EMA_BATCH_STATS)
    _choice(config.ssl.eval_model, "ssl.eval_model", EVAL_MODELS)


def check_strategy(config, spec: str) -> None:
    """Build the strategy of `spec` as the run will, so a bad option fails before any work:
    unknown options, bad values (the factory's own checks) and group sizes or group counts
    that cannot fill al.query_size."""
    from crc_jax.run.loop import make_strategy  # loop imports this module

    name, options = acquisition.parse_spec(spec)
    params = inspect.signature(acquisition.STRATEGIES.factory(name)).parameters
    for key, value in options.items():
        if key not in params:
            known = ", ".join(params) or "none"
            raise ConfigError("strategies", f"{spec!r}: {name} has no option {key!r} "
                                            f"(its options: {known})")
        if isinstance(params[key].default, bool) and not isinstance(value, bool):
            raise ConfigError("strategies", f"{spec!r}: {key} must be True or False, "
                                            f"got {value!r}")
    try:
        make_strategy(config, spec)
        if "subset" in options:
            acquisition.crc.check_subset(options["subset"])
    except (TypeError, ValueError) as err:
        raise ConfigError("strategies", f"{spec!r}: {err}") from None
    q = config.al.query_size
    traits = acquisition.STRATEGIES.traits(name)
    if traits.get("group_size"):
        g = options.get("group_size", config.al.group_size)
        if g is None:
            g = q
        if q % g:
            raise ConfigError("strategies", f"{spec!r}: group_size {g} must divide "
                                            f"al.query_size ({q})")
        max_groups = options.get("max_groups")
        if max_groups is not None and max_groups < q // g:
            raise ConfigError("strategies", f"{spec!r}: max_groups={max_groups} leaves fewer "
                                            f"than the {q // g} groups of {g} a query of {q} needs")
        if config.al.pseudo_al and traits.get("class_balanced") and g != q:
            raise ConfigError("strategies", f"{spec!r}: in the pseudo-AL setting one "
                                            f"class-balanced group is the whole query: "
                                            f"group_size must equal al.query_size ({q})")


def _check_data_parallel(config) -> None:
    """config.distributed's counts (ConfigDict checks the types), and batches that split
    evenly over the devices."""
    _int(config, "distributed.num_processes", minimum=0)
    _int(config, "distributed.process_id", minimum=-1)
    _int(config, "distributed.heartbeat_timeout", minimum=1)
    devices = jax.device_count()
    batch = config.train.batch_size
    if batch % devices:
        raise ConfigError("train.batch_size", f"{batch} must be divisible by the {devices} devices "
                                              "(data parallelism splits every batch evenly)")


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
