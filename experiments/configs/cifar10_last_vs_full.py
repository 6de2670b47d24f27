"""Table 2 of the paper: CRC with the last-layer NTK vs the NTK of all parameters.

FixMatch on CIFAR-10, Q = Q0 = 50, G = 5; labeled 50 -> 200 in 3 acquisitions; the two
variants are two strategies of one run.

Command:  python -m experiments.main --config=cifar10_last_vs_full --workdir=runs/c10_last_full
Expect:   paper Table 2 at 200 labels: last 85.67 ± 1.31, full 79.10 ± 3.64.
"""

from experiments.configs import cifar10_fixmatch


def get_config(arg=None):
    del arg
    c = cifar10_fixmatch.get_config("50")
    c.strategies = ("crc:subset=last", "crc:subset=all")
    c.al.steps = 3
    return c
