"""Training settings of a labeling round, as the config object the library's SSL code reads.

Defaults are sized for a 2-core CPU: a 1,000-image folder at 32×32 trains and picks the
next batch in a minute or two (an MLP of width 256, FixMatch, a fixed number of short
epochs). At this training length the MLP beat the small CNN in accuracy and speed on
1,000 digit images at 32×32 with 40 labels (see the README's "Label your own images");
`model="cnn"` remains an option for longer rounds.
There is no held-out labeled split to stop early on, so every round trains for
`epochs` epochs and the final (EMA) model is used.

Over feature vectors (a project made with --features or --backbone) the model is a head,
`model="linear"` or `"mlp"`, and the SSL algorithm's views are the vectors plus Gaussian
noise of std `feature_noise` (the stored vectors have RMS 1 per value) and, with
`dropout` > 0, dropout on the head's input features; FixMatch, defined by image
augmentation, is refused there (`RoundSettings.check(vectors=True)`).

What a round uses is, from weakest to strongest: the defaults of the project's kind
(`KIND_DEFAULTS`, the one table; help texts read it too), the options kept from earlier
commands (the project's options.json), the options given now
(crc_jax.project.Project.round_settings).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from crc_jax import config as config_defaults

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

    def check(self, *, vectors: bool = False) -> None:
        """ValueError naming the field ("strategy: ...") for a value a round cannot use;
        strategy options are checked by building the strategy (acquisition.from_spec).
        vectors: the pool is feature vectors, so the SSL algorithm must need no image
        augmentation and the model must take vectors."""
        from crc_jax import acquisition, models, ssl

        for field, spec in (("strategy", self.strategy), ("cold_start", self.cold_start)):
            try:
                acquisition.from_spec(spec)
            except acquisition.SpecError as err:
                raise ValueError(f"{field}: {err}") from None
        cold = acquisition.parse_spec(self.cold_start)[0]
        if cold not in acquisition.STRATEGIES.names("cold_start"):
            raise ValueError(f"cold_start: {cold!r} needs a trained model; allowed: "
                             f"{', '.join(acquisition.STRATEGIES.names('cold_start'))}")
        if self.ssl not in ssl.names():
            raise ValueError(f"ssl: unknown {self.ssl!r}; allowed: {', '.join(ssl.names())}")
        if self.model not in models.names():
            raise ValueError(f"model: unknown {self.model!r}; allowed: {', '.join(models.names())}")
        for field in ("epochs", "steps_per_epoch", "batch_size", "unlabeled_ratio", "width"):
            if int(getattr(self, field)) <= 0:
                raise ValueError(f"{field}: must be a positive integer, got {getattr(self, field)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        if self.dropout and self.ssl not in ssl.names("dropout"):
            raise ValueError(f"dropout: {self.ssl} trains without dropout; use one of "
                             f"{', '.join(ssl.names('dropout'))}")
        if not 0.0 <= float(self.feature_noise):
            raise ValueError(f"feature_noise: must be >= 0, got {self.feature_noise}")
        if vectors and self.ssl in ssl.names("augments_images"):
            usable = [n for n in ssl.names() if n not in ssl.names("augments_images")]
            raise ValueError(f"ssl: {self.ssl} is defined by image augmentation, and this "
                             f"project's pool is feature vectors (no images to augment); use "
                             f"one of {', '.join(usable)}")
        if vectors and self.model not in models.names("vectors"):
            raise ValueError(f"model: {self.model} takes images, and this project's pool is "
                             f"feature vectors; use one of {', '.join(models.names('vectors'))}")


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


def library_config(settings: RoundSettings, ssl_name: str) -> ml_collections.ConfigDict:
    """The complete library config (crc_jax.config.defaults(), the experiments' defaults)
    with what a round sets: its SSL algorithm and training length, no early stopping (no
    held-out labels), Adam at `settings.lr`, an EMA of the weights of decay 0.95, the noise
    of a vector's weak view."""
    c = config_defaults.defaults()
    c.ssl.name = ssl_name
    c.ssl.unlabeled_ratio = settings.unlabeled_ratio
    c.ssl.weak_noise = settings.feature_noise   # the weak view of vectors (images: flips, shifts)
    t = c.train
    t.batch_size, t.steps_per_epoch, t.max_epochs = (settings.batch_size,
                                                     settings.steps_per_epoch, settings.epochs)
    t.patience, t.optimizer, t.lr, t.schedule = 0, "adam", settings.lr, "constant"
    t.ema_decay, t.eval_batch_size = 0.95, 256
    return c
