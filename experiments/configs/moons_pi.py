"""Figure 1 of the paper: a Pi-model MLP on two-moons, CRC enlarging the labeled set.

Starts, as the paper, from 4 pivots (2 per moon) "not on the class-separating region",
placed by a stated rule instead of by hand: al.initial_rule = "spread" with
al.initial_margin_quantile = 0.75 (crc_jax/data/initial_sets.py). A point's margin is its
distance to the nearest point of the other moon; each moon's pivots are drawn from its
points at or above the moon's 75th-percentile margin (on this pool: at least 0.67 from
every point of the other moon for the upper moon, 0.60 for the lower one; margins run
from 0.01 to 1.0), the first at random from (seed, trial), the second the candidate
farthest from it. Then 4 acquisitions of 2 (G = 2): 12 labels. Five trials (seeds) of
random, CRC on the last-layer NTK and CRC on all parameters.

Command:  python -m experiments.figures moons   (the run and the panel: accuracy per step,
          mean and band over the 5 trials, and one trial's CRC decision boundaries)
          or python -m experiments.main --config=moons_pi --workdir=runs/moons_pi
Expect:   about 15 minutes on a 2-core CPU; docs/results.md "Figure 1" gives what this machine gave.
"""

from experiments.configs.base import get_base_config, parse_variant


def get_config(arg=None):
    parse_variant(arg, val=False)   # no variants: refuse any
    c = get_base_config()
    c.trials = 5
    c.strategies = ("random", "crc", "crc:subset=all")
    c.dataset.name = "moons"
    c.model.name = "mlp"
    c.model.width = 64
    c.ssl.name = "pi_model"
    c.ssl.unlabeled_ratio = 7
    c.ssl.unlabeled_weight = 10.0
    c.ssl.weak_noise = 0.1
    c.ssl.rampup_fraction = 0.2
    c.al.initial_size = 4
    c.al.query_size = 2
    c.al.group_size = 2
    c.al.steps = 4
    c.al.initial_rule = "spread"
    c.al.initial_margin_quantile = 0.75
    c.train.batch_size = 32
    c.train.steps_per_epoch = 100
    c.train.max_epochs = 6
    c.train.patience = 0
    c.train.optimizer = "adam"
    c.train.lr = 1e-2
    c.train.augment = True
    return c
