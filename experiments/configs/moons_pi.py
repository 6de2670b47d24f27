"""Figure 1 of the paper: a Pi-model MLP on two-moons, CRC enlarging the labeled set.

Starts from 4 labeled points (2 per class), acquires 2 per step (G = 2) for 4 steps.
`python -m experiments.figures moons` draws the decision boundary after each acquisition.

Command:  python -m experiments.main --config=moons_pi --workdir=runs/moons_pi
Expect:   under a minute on a 2-core CPU; Pi-model separates the moons with a handful of labels.
"""

from experiments.configs.base import get_base_config, parse_variant


def get_config(arg=None):
    parse_variant(arg, val=False)   # no variants: refuse any
    c = get_base_config()
    c.trials = 3
    c.strategies = ("random", "crc")
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
    c.train.batch_size = 32
    c.train.steps_per_epoch = 100
    c.train.max_epochs = 6
    c.train.patience = 0
    c.train.optimizer = "adam"
    c.train.lr = 1e-2
    c.train.augment = True
    return c
