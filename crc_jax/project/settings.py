"""Training settings of a labeling round, as the config object the library's SSL code reads.

Defaults are sized for a 2-core CPU: a 1,000-image folder at 32×32 trains and picks the
next batch in a minute or two (an MLP of width 256, FixMatch, a fixed number of short
epochs). At this training length the MLP beat the small CNN in accuracy and speed on
1,000 digit images at 32×32 with 40 labels (see docs/labeling.md, "Quick start");
`model="cnn"` remains an option for longer rounds.
There is no held-out labeled split to stop early on, so every round trains for
`epochs` epochs and the final (EMA) model is used.

Over feature vectors (a project made with --features or --backbone) the model is a head,
`model="linear"` or `"mlp"`, and the SSL algorithm's views are the vectors plus Gaussian
noise of std `feature_noise` (the stored vectors have RMS 1 per value) and, with
`dropout` > 0, dropout on the head's input features; FixMatch, defined by image
augmentation, is refused there (`check(settings, vectors=True)`).

A round's settings are checked by the library's own `crc_jax.config.validate`, on the
library config they make (`library_config`), with the app's own rules beside it (the
cold-start strategy, what a pool of vectors allows); an error names the round option
("dropout: ..."). `plan` does that once per round, with the round's budget, and builds
its two strategies there: the `RoundPlan` is what the round runs.

What a round uses is, from weakest to strongest: the defaults of the project's kind
(`KIND_DEFAULTS`, the one table; help texts read it too), the options kept from earlier
commands (the project's options.json), the options given now
(crc_jax.project.Project.round_settings).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import ml_collections

from crc_jax import config as config_lib
from crc_jax.errors import ConfigError

if TYPE_CHECKING:
    from crc_jax.acquisition import Strategy

# A project's kind (recorded by `init`, crc_jax.project.store) decides what a round trains
# when no option says otherwise. Images: an MLP with FixMatch on the pixels (the measured
# defaults above). Feature vectors (from a file or a backbone): a linear probe with Mean
# Teacher, the pairing measured in docs/labeling.md (FixMatch needs image augmentation).
# CRC picks on every kind; its cold start (CRC on the untrained model) applies to all.
KIND_DEFAULTS: dict[str, dict[str, str]] = {
    "images": {"model": "mlp", "ssl": "fixmatch", "strategy": "crc", "cold_start": "crc"},
    "features": {"model": "linear", "ssl": "mean_teacher", "strategy": "crc", "cold_start": "crc"},
    "backbone": {"model": "linear", "ssl": "mean_teacher", "strategy": "crc", "cold_start": "crc"},
}


@dataclasses.dataclass(frozen=True)
class RoundSettings:
    """What a round trains and how it picks. Everything here goes into the rounds log.
    The defaults are those of an images project (`for_kind` gives another kind's)."""

    strategy: str = KIND_DEFAULTS["images"]["strategy"]   # any registered strategy spec
    ssl: str = KIND_DEFAULTS["images"]["ssl"]
    cold_start: str = KIND_DEFAULTS["images"]["cold_start"]   # first batch without labels
    model: str = KIND_DEFAULTS["images"]["model"]
    width: int = 256
    epochs: int = 8
    steps_per_epoch: int = 25
    batch_size: int = 32
    unlabeled_ratio: int = 3
    lr: float = 3e-3
    flip: bool = True              # horizontal flips in augmentation (off for digits, text)
    seed: int = 0
    dropout: float = 0.0           # dropout before the head (BALD needs > 0)
    feature_noise: float = 0.1     # feature-vector pools: std of the noise of a weak view


FIELDS = {f.name: f.type for f in dataclasses.fields(RoundSettings)}
KEPT = (*FIELDS, "budget")   # what a command may keep for later rounds (budget: `next`'s)
TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                      "bool": (bool,)}


def for_kind(kind: str, options: dict | None = None) -> RoundSettings:
    """The settings of a round on a project of `kind`: its defaults, then `options`
    ({field: value}, e.g. the kept and given ones merged; "budget" is not a setting)."""
    chosen = {k: v for k, v in (options or {}).items() if k != "budget"}
    return RoundSettings(**{**KIND_DEFAULTS[kind], **chosen})


def check_options(options: dict[str, Any]) -> dict:
    """{field: value} of options to keep, each a known field of its type; ValueError
    naming the first that is not."""
    for name, value in options.items():
        if name not in KEPT:
            raise ValueError(f"{name}: not a round option (the options are {', '.join(KEPT)})")
        wanted = TYPES[str(FIELDS.get(name, "int"))]
        if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
            raise ValueError(f"{name}: {value!r} is not a {wanted[-1].__name__}")
        if name == "budget" and not options[name] > 0:
            raise ValueError(f"budget: must be a positive integer, got {value}")
    return dict(options)


def default_text(field: str) -> str:
    """The default of `field` per kind, for help texts: "mlp for images; linear for
    features, backbone"."""
    by_value: dict[str, list[str]] = {}
    for kind, defaults in KIND_DEFAULTS.items():
        by_value.setdefault(defaults[field], []).append(kind)
    if len(by_value) == 1:
        return next(iter(by_value))
    return "; ".join(f"{value} for {', '.join(kinds)}" for value, kinds in by_value.items())


def default_group_size(budget: int) -> int:
    """CRC's group size G: 5 (the paper's FixMatch setting) when it divides the budget,
    else the largest divisor of the budget up to 5."""
    return max(g for g in range(1, 6) if budget % g == 0)


def training_config(settings: RoundSettings, ssl_name: str) -> ml_collections.ConfigDict:
    """The complete library config (crc_jax.config.defaults(), the experiments' defaults)
    with what a round trains: its SSL algorithm and training length, no early stopping (no
    held-out labels), Adam at `settings.lr`, an EMA of the weights of decay 0.95, the noise
    of a vector's weak view."""
    c = config_lib.defaults()
    c.ssl.name = ssl_name
    c.ssl.unlabeled_ratio = settings.unlabeled_ratio
    c.ssl.weak_noise = settings.feature_noise   # the weak view of vectors (images: flips, shifts)
    t = c.train
    t.batch_size, t.steps_per_epoch, t.max_epochs = (settings.batch_size,
                                                     settings.steps_per_epoch, settings.epochs)
    t.patience, t.optimizer, t.lr, t.schedule = 0, "adam", settings.lr, "constant"
    t.ema_decay, t.eval_batch_size = 0.95, 256
    return c


def library_config(settings: RoundSettings, budget: int | None = None) -> ml_collections.ConfigDict:
    """The library config of a round: `training_config`, the model, the two strategies, and
    with a `budget` the labels it acquires (al.query_size) and CRC's default group size."""
    c = training_config(settings, settings.ssl)
    c.model.name, c.model.width, c.model.dropout = settings.model, settings.width, settings.dropout
    c.strategies = tuple(dict.fromkeys((settings.strategy, settings.cold_start)))
    if budget is not None:
        c.al.query_size, c.al.group_size = budget, default_group_size(budget)
    return c


# The library's fields a round option sets: a ConfigError on one names the option.
OPTIONS = {"model.name": "model", "model.width": "width", "model.dropout": "dropout",
           "ssl.name": "ssl", "ssl.unlabeled_ratio": "unlabeled_ratio",
           "ssl.weak_noise": "feature_noise", "train.max_epochs": "epochs",
           "train.steps_per_epoch": "steps_per_epoch", "train.batch_size": "batch_size",
           "train.lr": "lr", "al.query_size": "budget"}


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """A round as checked where it enters: its settings and budget, whether the pool is
    feature vectors, the library config it trains with, and its two strategies, built once
    (the first batch without labels is the cold-start one's)."""

    settings: RoundSettings
    budget: int
    vectors: bool
    config: Any
    strategy: Strategy
    cold_start: Strategy


def check(settings: RoundSettings, *, vectors: bool = False) -> None:
    """ValueError naming the round option ("dropout: ...") for a value a round cannot use,
    the strategies' options aside (they are checked with the budget: `plan`)."""
    _validate(settings, library_config(settings), vectors=vectors, build=False)


def plan(settings: RoundSettings, budget: int, *, vectors: bool = False) -> RoundPlan:
    """The round of `budget` images with `settings`, checked (ValueError naming the round
    option) and its strategies built for that budget (G = default_group_size(budget)
    unless a spec sets it)."""
    config = library_config(settings, budget)
    built = _validate(settings, config, vectors=vectors, build=True)
    return RoundPlan(settings=settings, budget=budget, vectors=vectors, config=config,
                     strategy=built[settings.strategy], cold_start=built[settings.cold_start])


def _validate(settings: RoundSettings, config, *, vectors: bool, build: bool) -> dict:
    """crc_jax.config.validate on the round's library config, its errors named by the
    round options, then the app's own rules."""
    from crc_jax import acquisition, models, ssl

    try:
        built = config_lib.validate(config, build=build)
    except ConfigError as err:
        raise _option_error(err, settings) from None
    try:
        cold = acquisition.parse_spec(settings.cold_start)[0]
    except acquisition.SpecError as err:
        raise ValueError(f"cold_start: {err}") from None
    cold_capable = acquisition.STRATEGIES.names("cold_start")
    if cold in acquisition.STRATEGIES and cold not in cold_capable:
        raise ValueError(f"cold_start: {cold!r} needs a trained model; allowed: "
                         f"{', '.join(cold_capable)}")
    if vectors and settings.ssl in ssl.names("augments_images"):
        usable = [n for n in ssl.names() if n not in ssl.names("augments_images")]
        raise ValueError(f"ssl: {settings.ssl} is defined by image augmentation, and this "
                         f"project's pool is feature vectors (no images to augment); use "
                         f"one of {', '.join(usable)}")
    if vectors and settings.model not in models.names("vectors"):
        raise ValueError(f"model: {settings.model} takes images, and this project's pool is "
                         f"feature vectors; use one of {', '.join(models.names('vectors'))}")
    return built


def _option_error(err: ConfigError, settings: RoundSettings) -> Exception:
    """The library's ConfigError as the round option that set the field: "dropout: must be
    in [0, 1), got 1.5"; a strategy's error in the strategy's own words, without the
    config's budget field. Other fields (none a round sets) keep the library's message."""
    from crc_jax import acquisition

    if err.field == "strategies" and err.spec is not None:
        field = "strategy" if err.spec == settings.strategy else "cold_start"
        cause = err.__cause__
        reason = str(cause) if isinstance(cause, acquisition.SpecError) else err.problem
    elif err.field in OPTIONS:
        field, reason = OPTIONS[err.field], err.problem
    else:
        return err
    for library_field, option in OPTIONS.items():   # a field the message mentions
        reason = reason.replace(library_field, option)
    return ValueError(f"{field}: {reason}")
