"""Supervised active learning on scikit-learn's 8x8 digits, no download needed.

Small CNN trained from scratch on the labeled images only (supervised), strategies
random, entropy, CRC (last-layer NTK, groups of G=5) and CRC on the infinite-width NTK of
an MLP (`crc_infinite:arch=mlp`: no trained model needed, so its labeled set
transfers); Q0=20 (2 per class), Q=10, 4 acquisitions, 3 trials.

Command:  python -m experiments.main --config=digits --workdir=runs/digits
Expect:   a few minutes on a 2-core CPU; accuracy rises from about 60-70% at 20 labels to
          about 85% at 60 labels (see docs/results.md for the measured table).
"""

from experiments.configs.base import get_base_config, parse_variant


def get_config(arg=None):
    parse_variant(arg, val=False)   # no variants: refuse any
    c = get_base_config()
    c.trials = 3
    c.strategies = ("random", "entropy", "crc", "crc_infinite:arch=mlp")
    c.dataset.name = "digits"
    c.model.name = "cnn"
    c.ssl.name = "supervised"
    c.al.initial_size = 20
    c.al.query_size = 10
    c.al.group_size = 5
    c.al.steps = 4
    c.train.batch_size = 32
    c.train.steps_per_epoch = 20
    c.train.max_epochs = 30
    c.train.patience = 8
    c.train.optimizer = "adam"
    c.train.lr = 3e-3
    return c
