"""Training settings of a labeling round, as the config object the library's SSL code reads.

Defaults are sized for a 2-core CPU: a 1,000-image folder at 32×32 trains and picks the
next batch in a minute or two (an MLP of width 256, FixMatch, a fixed number of short
epochs). At this training length the MLP beat the small CNN in accuracy and speed on
1,000 digit images at 32×32 with 40 labels (see the README's "Label your own images");
`model="cnn"` remains an option for longer rounds.
There is no held-out labeled split to stop early on, so every round trains for
`epochs` epochs and the final (EMA) model is used.
"""

from __future__ import annotations

import dataclasses

import ml_collections

SSL_NAMES = ("fixmatch", "mean_teacher", "pi_model", "supervised")
COLD_STARTS = ("crc", "random")


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

    def check(self) -> None:
        from crc_jax import acquisition, models

        name = acquisition.parse_spec(self.strategy)[0]
        if name not in acquisition.names():
            raise ValueError(f"strategy: unknown {name!r}; allowed: {', '.join(acquisition.names())}")
        if self.ssl not in SSL_NAMES:
            raise ValueError(f"ssl: unknown {self.ssl!r}; allowed: {', '.join(SSL_NAMES)}")
        if self.cold_start not in COLD_STARTS:
            raise ValueError(f"cold_start: unknown {self.cold_start!r}; allowed: {', '.join(COLD_STARTS)}")
        if self.model not in models.names():
            raise ValueError(f"model: unknown {self.model!r}; allowed: {', '.join(models.names())}")
        for field in ("epochs", "steps_per_epoch", "batch_size", "unlabeled_ratio", "width"):
            if int(getattr(self, field)) <= 0:
                raise ValueError(f"{field}: must be a positive integer, got {getattr(self, field)}")


def library_config(settings: RoundSettings, ssl_name: str) -> ml_collections.ConfigDict:
    """The config fields crc_jax.ssl and crc_jax.train read, filled from `settings`."""
    c = ml_collections.ConfigDict()
    c.ssl = ml_collections.ConfigDict(dict(
        name=ssl_name, unlabeled_ratio=settings.unlabeled_ratio, threshold=0.95,
        unlabeled_weight=1.0, rampup_fraction=0.4, teacher_ema=0.95,
        weak_noise=0.05, strong_noise=0.2))
    c.train = ml_collections.ConfigDict(dict(
        batch_size=settings.batch_size, steps_per_epoch=settings.steps_per_epoch,
        max_epochs=settings.epochs, patience=0, watch="labeled", val_size=0,
        optimizer="adam", lr=settings.lr, momentum=0.9, nesterov=True, weight_decay=0.0,
        schedule="constant", ema_decay=0.95, augment=True, eval_batch_size=256,
        checkpoint_every=0, progress=True, dtype="float32"))
    return c
