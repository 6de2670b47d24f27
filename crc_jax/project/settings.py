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
augmentation, is refused there (crc_jax.project.rounds.check_inputs).
"""

from __future__ import annotations

import dataclasses

import ml_collections

from crc_jax import config as config_defaults


@dataclasses.dataclass(frozen=True)
class RoundSettings:
    """What a round trains and how it picks. Everything here goes into the rounds log."""

    strategy: str = "crc"          # any registered strategy spec ("crc:group_size=10", "entropy")
    ssl: str = "fixmatch"
    cold_start: str = "crc"        # first batch without labels: CRC on a random model, or random
    model: str = "mlp"
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

    def check(self) -> None:
        """ValueError naming the field ("strategy: ...") for a value a round cannot use;
        strategy options are checked by building the strategy (acquisition.from_spec)."""
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
