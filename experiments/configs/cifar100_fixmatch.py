"""Table 5 of the paper: FixMatch on CIFAR-100 with WRN-28-2, Q0=200, Q=50, random vs CRC.

Labeled 200 -> 450 in 5 acquisitions, CRC groups of G=5; early stopping patience 100, at
most 600 epochs of 1024 steps; FixMatch reference settings (see cifar10_fixmatch).

Command:  python -m experiments.main --config=cifar100_fixmatch --workdir=runs/cifar100
Expect:   paper Table 5 at 450 labels: random 51.20 ± 0.83, CRC 52.40 ± 0.93.
"""

from experiments.configs import cifar10_fixmatch


def get_config(arg=None):
    del arg
    c = cifar10_fixmatch.get_config("50")
    c.strategies = ("random", "crc")
    c.dataset.name = "cifar100"
    c.al.initial_size = 200
    c.al.query_size = 50
    c.al.group_size = 5
    c.al.steps = 5
    c.train.max_epochs = 600
    c.train.patience = 100
    return c
