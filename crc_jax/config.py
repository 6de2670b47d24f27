"""The one set of config defaults and the one `validate`: every field the library reads,
its default, and the values it allows.

The experiment configs (experiments/configs/*.py) start from `defaults()` and change what
their table needs; the labeling app (crc_jax.project) starts from it too and sets its round
settings. Library code reads fields without fallbacks, so a field added here is the only
place its default lives.

`validate(config)` checks every field once, where a command takes its config
(experiments.main, experiments.retrain, experiments.figures, each `crc-jax` round), before
any heavy work: a bad value is a ConfigError naming the dotted field and what is allowed.
It builds each strategy from its spec (crc_jax.acquisition.from_spec) and returns them, so
the caller passes the built strategies down and nothing below checks an option again.
`check_pool` checks what needs the loaded data (the budget against the pool's size).

Field names users and the documentation rely on: seed, trials, strategies, dataset.name,
dataset.data_dir, model.name, ssl.name, al.initial_size (Q0), al.query_size (Q),
al.group_size (G), al.steps, train.max_epochs, train.patience, device.require.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ml_collections

from crc_jax.errors import ConfigError, DataError

if TYPE_CHECKING:
    from crc_jax.acquisition import Strategy

log = logging.getLogger(__name__)

WATCHABLE = ("test", "val")
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "fixmatch_cosine", "step")
INITIAL_MODELS = ("per_trial", "median")
FIRST_QUERIES = ("trained", "random_init")
EMA_BATCH_STATS = ("average", "copy")
EVAL_MODELS = ("teacher", "student")


def defaults() -> ml_collections.ConfigDict:
    """Every field the library reads, at its default (a fresh ConfigDict each call)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trials = 3
    # Strategies run side by side; "name:key=value,..." passes options (see crc_jax.acquisition).
    c.strategies = ("random", "entropy", "crc")
    c.smoke = False  # shrink everything to a tiny CPU-sized run (tests, laptops)

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "digits"        # a registered data set (crc_jax.data.names())
    c.dataset.data_dir = ""          # a prepared TFDS directory; "" = TFDS default
    c.dataset.train_size = 0         # use a random subset of this many pool images; 0 = all
    c.dataset.test_size = 0          # evaluate on this many test images; 0 = all

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"             # a registered model (crc_jax.models.names())
    c.model.width = 0                # 0 = the model's default width
    c.model.dropout = 0.0            # dropout rate before the head (BALD's MC dropout needs > 0)

    c.ssl = ml_collections.ConfigDict()
    c.ssl.name = "supervised"        # a registered SSL algorithm (crc_jax.ssl.names())
    c.ssl.unlabeled_ratio = 7        # mu: unlabeled images per labeled image in a step
    c.ssl.threshold = 0.95           # FixMatch tau
    c.ssl.unlabeled_weight = 1.0     # FixMatch lambda_u / consistency weight (MT, Pi)
    c.ssl.rampup_fraction = 0.4      # MT / Pi: fraction of training the ramp-up lasts
    c.ssl.teacher_ema = 0.95         # MT: teacher = EMA of the student with this decay
    c.ssl.teacher_ema_warmup = False  # MT: teacher decay min(1 - 1/(k+1), teacher_ema) (MT reference)
    c.ssl.eval_model = "teacher"     # MT: network evaluated and queried: teacher | student (MT reference)
    c.ssl.rampup_steps = 0           # MT / Pi: ramp-up length in steps; 0 = rampup_fraction of the cap
    c.ssl.ema_batch_stats = "average"  # EMA model's BatchNorm stats: average | copy (paper footnote 2)
    c.ssl.weak_noise = 0.05          # 2-D points only: std of the Gaussian noise of a weak view
    c.ssl.strong_noise = 0.2         # 2-D points only: std of the noise of a FixMatch strong view

    c.al = ml_collections.ConfigDict()
    c.al.initial_size = 20           # Q0, class-balanced at step 0
    c.al.query_size = 10             # Q, labels acquired per step
    c.al.group_size = 5              # G, CRC group size; must divide Q
    c.al.steps = 3                   # acquisitions after the initial step
    c.al.pseudo_al = False           # Table 3: every acquisition takes Q/C of each class (reads the oracle)
    # trained | random_init (Appendix B.2: the strategy picks Q0 with an untrained model)
    c.al.first_query = "trained"
    c.al.initial_model = "per_trial"  # per_trial | median (§4.1: median of K candidate initial sets)
    c.al.initial_candidates = 5      # K, candidate initial sets for initial_model = median
    # step 0's labeled set: random | spread | near_duplicate | indices (crc_jax/data/initial_sets.py)
    c.al.initial_rule = "random"
    c.al.initial_indices = ()        # rule "indices": the Q0 pool indices of step 0
    # rule "spread": pivots at or above this quantile of their class's margins
    c.al.initial_margin_quantile = 0.0

    # Per-strategy options, e.g. acquisition.crc.subset = "all".
    c.acquisition = ml_collections.ConfigDict()
    c.acquisition.crc = ml_collections.ConfigDict({"subset": "last"})  # max_groups: "crc:max_groups=N"

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64          # B, labeled images per step
    # Set by the run, not by hand: the config's batch size when it did not split over the
    # devices and the run used the nearest multiple of the device count (0 = not moved).
    c.train.requested_batch_size = 0
    c.train.steps_per_epoch = 50     # train steps per "epoch" (SSL epochs are step counts)
    c.train.max_epochs = 30
    c.train.patience = 10            # epochs without improvement before stopping; 0 = never stop early
    c.train.watch = "test"           # split watched for early stopping: test (the paper) | val
    c.train.val_size = 0             # labeled-free validation images held out of the pool (watch=val)
    c.train.optimizer = "adam"       # sgd | adam
    c.train.lr = 3e-3
    c.train.momentum = 0.9
    c.train.nesterov = True
    c.train.weight_decay = 0.0
    c.train.schedule = "constant"    # constant | cosine | fixmatch_cosine | step
    c.train.schedule_steps = 0       # K of the cosine schedules; 0 = max_epochs * steps_per_epoch
    c.train.lr_decay_step = 0        # schedule "step": lr *= lr_decay_factor from this step on
    c.train.lr_decay_factor = 1.0
    c.train.translate = 0            # weak view: largest shift in px; 0 = 4 px at 32x32, scaled
    c.train.ema_decay = 0.0          # EMA of weights used for evaluation; 0 = off
    c.train.augment = True           # weak augmentation of labeled batches
    c.train.eval_batch_size = 512
    c.train.checkpoint_every = 0     # epochs between in-training checkpoints; 0 = off
    c.train.progress = True          # progress bars
    c.train.dtype = "float32"        # activations of the train step: float32 | bfloat16 (params stay float32)
    c.train.steps_per_dispatch = 1   # train steps per jitted call (a lax.scan over the chunk); same results

    # The platform the run must use: auto (whatever JAX picks) | cpu (start JAX on the CPU
    # alone) | gpu | tpu (stop at start-up, with JAX's reason, when JAX has no such device
    # and would fall back to the CPU). crc_jax.runtime.devices.
    c.device = ml_collections.ConfigDict()
    c.device.require = "auto"

    # Multi-host runs (TPU pods, multi-node GPU): jax.distributed.initialize at start-up.
    # Single-host runs need none of this: the data-parallel mesh spans the local devices.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = False
    c.distributed.coordinator_address = ""  # "host:port" of process 0; "" = auto-detect (TPU pods)
    c.distributed.num_processes = 0         # 0 = auto-detect
    c.distributed.process_id = -1           # -1 = auto-detect
    c.distributed.heartbeat_timeout = 100   # seconds; a peer silent this long ends the run
    return c


# ------------------------------------------------------------------------------ the checks

def validate(config, *, build: bool = True) -> dict[str, Strategy]:
    """Raise ConfigError on the first bad field of `config`; else the strategies of
    config.strategies, built from their specs and checked against the budgets they fill
    ({spec: Strategy}, in config order). build=False checks every other field and returns
    {} (crc-jax's kept options, checked before a round's budget is known).

    One field is moved rather than refused: a train.batch_size that does not split over the
    devices becomes the nearest multiple of the device count (`_check_data_parallel`)."""
    _check_names(config)
    _check_counts(config)
    _check_protocol(config)
    _check_initial_set(config)
    _check_training(config)
    _check_ssl(config)
    _check_devices(config)
    return _strategies(config) if build else {}


def _value(config, field: str):
    node = config
    for part in field.split("."):
        node = node[part]
    return node


def _int(config, field: str, *, minimum: int) -> int:
    value = _value(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _number(config, field: str, low: float, high: float, *, closed: bool = False,
            text: str = "") -> float:
    """A real number in [low, high) ([low, high] when `closed`); `text` says the range."""
    value = _value(config, field)
    inside = isinstance(value, (int, float)) and not isinstance(value, bool) and (
        low <= value <= high if closed else low <= value < high)
    if not inside:
        raise ConfigError(field, f"must be {text or f'in [{low}, {high})'}, got {value!r}")
    return value


def _choice(config, field: str, allowed) -> None:
    value = _value(config, field)
    if value not in allowed:
        raise ConfigError(field, f"{value!r} is not one of: {', '.join(map(str, allowed))}")


def _check_names(config) -> None:
    """The registered names a config picks, and the model's options."""
    from crc_jax import data, models, ssl

    _choice(config, "dataset.name", data.names())
    _choice(config, "model.name", models.names())
    _choice(config, "ssl.name", ssl.names())
    _int(config, "model.width", minimum=0)
    dropout = _number(config, "model.dropout", 0, 1, text="in [0, 1)")
    trains_with_dropout = ssl.names(trait="dropout")
    if dropout and config.ssl.name not in trains_with_dropout:
        raise ConfigError("model.dropout", f"{config.ssl.name} trains without dropout; use one "
                                           f"of {', '.join(trains_with_dropout)}")


def _num_classes(config) -> int:
    from crc_jax import data

    try:
        return data.num_classes(config.dataset.name, config.dataset.data_dir)
    except DataError as err:
        raise ConfigError("dataset.data_dir", str(err)) from None


def _check_counts(config) -> None:
    """Seeds, trials, strategies and the labeling budget (Q0, Q, G, steps)."""
    _int(config, "seed", minimum=0)
    _int(config, "trials", minimum=1)
    specs = list(config.strategies)
    if not specs:
        raise ConfigError("strategies", "needs at least one strategy")
    if len(set(specs)) != len(specs):
        raise ConfigError("strategies", f"lists a strategy twice: {specs}")
    num_classes = _num_classes(config)
    q0 = _int(config, "al.initial_size", minimum=1)
    q = _int(config, "al.query_size", minimum=1)
    _int(config, "al.group_size", minimum=1)   # its fit to Q and Q0: _strategies
    _int(config, "al.steps", minimum=0)
    if q0 % num_classes:
        raise ConfigError("al.initial_size", f"{q0} must be divisible by the {num_classes} "
                                             f"classes of {config.dataset.name} (Q0/C per class)")
    if config.al.pseudo_al and q % num_classes:
        raise ConfigError("al.query_size", f"{q} must be divisible by the {num_classes} classes "
                                           "in the pseudo-AL setting (R per class)")
    _int(config, "dataset.train_size", minimum=0)
    _int(config, "dataset.test_size", minimum=0)


def _check_protocol(config) -> None:
    """The fields that pick the paper's protocol variants (initial model, schedules, EMA)."""
    _choice(config, "al.first_query", FIRST_QUERIES)
    _choice(config, "al.initial_model", INITIAL_MODELS)
    _int(config, "al.initial_candidates", minimum=1)
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
    _choice(config, "ssl.ema_batch_stats", EMA_BATCH_STATS)
    _choice(config, "ssl.eval_model", EVAL_MODELS)


def _check_initial_set(config) -> None:
    """Step 0's set (al.initial_rule and the fields it reads: crc_jax/data/initial_sets.py)."""
    from crc_jax.data import initial_sets

    al = config.al
    rule, indices, quantile = al.initial_rule, tuple(al.initial_indices), al.initial_margin_quantile
    if rule not in initial_sets.names():
        raise ConfigError("al.initial_rule", f"{rule!r} is not one of: "
                                             f"{', '.join(initial_sets.names())}")
    if rule != "random" and (al.initial_model != "per_trial" or al.first_query != "trained"):
        raise ConfigError("al.initial_rule", f"{rule!r} places each trial's own initial set: it "
                          "needs al.initial_model='per_trial' and al.first_query='trained'")
    if indices and rule != "indices":
        raise ConfigError("al.initial_indices", f"is used only with al.initial_rule='indices' "
                                                f"(got {rule!r})")
    if rule == "indices" and (len(indices) != al.initial_size
                              or not all(isinstance(i, int) and not isinstance(i, bool)
                                         and i >= 0 for i in indices)
                              or len(set(indices)) != len(indices)):
        raise ConfigError("al.initial_indices", f"needs al.initial_size ({al.initial_size}) "
                          f"distinct pool indices >= 0, got {list(indices)!r}")
    _number(config, "al.initial_margin_quantile", 0.0, 1.0, text="a number in [0, 1)")
    if quantile and rule != "spread":
        raise ConfigError("al.initial_margin_quantile", f"is used only with al.initial_rule='spread' "
                                                        f"(got {rule!r})")


def _check_training(config) -> None:
    tc = config.train
    _int(config, "train.batch_size", minimum=1)
    _int(config, "train.steps_per_epoch", minimum=1)
    _int(config, "train.max_epochs", minimum=1)
    _int(config, "train.patience", minimum=0)
    _int(config, "train.eval_batch_size", minimum=1)
    _int(config, "train.val_size", minimum=0)
    _int(config, "train.checkpoint_every", minimum=0)
    _int(config, "train.requested_batch_size", minimum=0)
    _int(config, "train.steps_per_dispatch", minimum=1)
    _choice(config, "train.watch", WATCHABLE)
    _choice(config, "train.dtype", DTYPES)
    if tc.watch == "val" and tc.val_size == 0:
        raise ConfigError("train.val_size", "must be > 0 when train.watch is 'val'")
    _choice(config, "train.optimizer", OPTIMIZERS)
    _choice(config, "train.schedule", SCHEDULES)
    if not tc.lr > 0:
        raise ConfigError("train.lr", f"must be > 0, got {tc.lr}")
    if not 0.0 <= tc.ema_decay < 1.0:
        raise ConfigError("train.ema_decay", f"must be in [0, 1), got {tc.ema_decay}")


def _check_ssl(config) -> None:
    if config.ssl.name != "supervised":
        _int(config, "ssl.unlabeled_ratio", minimum=1)
        if not 0.0 <= config.ssl.threshold <= 1.0:
            raise ConfigError("ssl.threshold", f"must be in [0, 1], got {config.ssl.threshold}")
    for field in ("ssl.weak_noise", "ssl.strong_noise"):
        _number(config, field, 0.0, float("inf"), text=">= 0")


def _check_devices(config) -> None:
    from crc_jax.runtime import devices

    _choice(config, "device.require", devices.REQUIRE)
    _check_data_parallel(config)


def _check_data_parallel(config) -> None:
    """config.distributed's counts (ConfigDict checks the types), and a batch that splits
    evenly over the devices: one that does not is moved to the nearest multiple of the
    device count (`nearest_multiple`), logged, and the config's value kept in
    train.requested_batch_size, so config.json and the report say what ran."""
    import jax

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


def strategy_defaults(config, name: str) -> dict:
    """Defaults for strategy `name`: the config's acquisition.<name> fields, and for a
    strategy registered with a group size, al.group_size. The two places may not both set
    a group size that disagree (ConfigError), so neither silently overwrites the other."""
    from crc_jax import acquisition

    own = dict(config.acquisition.get(name, {}))
    if acquisition.STRATEGIES.traits(name).get("group_size"):
        g = config.al.group_size
        if own.get("group_size", g) != g:
            raise ConfigError(f"acquisition.{name}.group_size",
                              f"{own['group_size']} disagrees with al.group_size ({g}); set "
                              "one of them (or write it in the spec, e.g. 'crc:group_size=10')")
        own["group_size"] = g
    return own


def _strategies(config) -> dict[str, Strategy]:
    """Each spec built once (acquisition.from_spec validates its options; the config's
    defaults: strategy_defaults; pseudo-AL: class-balanced) and checked against the budgets
    it must fill: al.query_size, and al.initial_size when it makes the first query; an
    MC-dropout strategy needs model.dropout."""
    from crc_jax import acquisition

    budgets = {"al.query_size": config.al.query_size}
    if config.al.first_query == "random_init":  # the strategy picks the Q0 images too
        budgets["al.initial_size"] = config.al.initial_size
    built = {}
    for spec in config.strategies:
        try:
            name, written = acquisition.parse_spec(spec)
            defaults = strategy_defaults(config, name) if name in acquisition.STRATEGIES else {}
            strategy = acquisition.from_spec(spec, defaults, class_balanced=bool(config.al.pseudo_al))
        except acquisition.SpecError as err:
            raise ConfigError("strategies", str(err), spec=spec) from err
        if strategy.traits.get("needs_dropout") and not config.model.dropout:
            raise ConfigError("strategies", f"{strategy.name!r} needs MC dropout: set "
                                            "model.dropout to a rate in (0, 1)", spec=spec)
        for field, budget in budgets.items():
            try:
                strategy.check_budget(budget)
            except acquisition.SpecError as err:
                g = strategy.group_size
                if g and budget % g and "group_size" not in written:   # G from al.group_size
                    raise ConfigError("al.group_size", f"{g} must divide {field} ({budget})") from None
                raise ConfigError("strategies", f"{err} ({field})", spec=spec) from err
        built[spec] = strategy
    return built


def check_pool(config, pool_y, num_classes: int) -> None:
    """What needs the loaded pool: Q0 + steps * Q labels must fit in it (after any
    validation hold-out), al.initial_indices must lie in it, and every class must have the
    Q0/C images step 0 labels."""
    import numpy as np

    pool_size = len(pool_y)
    total = config.al.initial_size + config.al.steps * config.al.query_size
    if total > pool_size:
        raise ConfigError("al.steps", f"Q0 + steps*Q = {total} labels exceed the pool of "
                                      f"{pool_size} images of {config.dataset.name}")
    indices = tuple(config.al.initial_indices)
    if config.al.initial_rule == "indices" and indices and max(indices) >= pool_size:
        raise ConfigError("al.initial_indices", f"indices must lie in [0, {pool_size}) (the pool "
                          f"of {config.dataset.name}), got {max(indices)}")
    per_class = config.al.initial_size // num_classes
    counts = np.bincount(np.asarray(pool_y, np.int64), minlength=num_classes)
    short = np.flatnonzero(counts < per_class)
    if len(short):
        k = int(short[0])
        raise ConfigError("al.initial_size", f"Q0/C = {per_class} images of each class at step "
                                             f"0, but class {k} has {counts[k]} in the pool of "
                                             f"{config.dataset.name}")
