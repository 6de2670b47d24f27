"""Table 1 of the paper: CRC's group size G in {2, 5, 10, 100} at Q = 100, FixMatch on CIFAR-10.

A sweep: the four group sizes are four strategies of one run, so the report puts them side
by side. Labeled 100 -> 500 in 4 acquisitions.

Command:  python -m experiments.main --config=cifar10_group_size --workdir=runs/c10_groups
Expect:   paper Table 1 at 500 labels: 88.30 (G=2), 87.66 (G=5), 88.36 (G=10), 88.49 (G=100).
"""

from experiments.configs import cifar10_fixmatch

GROUP_SIZES = (2, 5, 10, 100)


def get_config(arg=None):
    del arg
    c = cifar10_fixmatch.get_config("100")
    c.strategies = tuple(f"crc:group_size={g}" for g in GROUP_SIZES)
    c.al.steps = 4
    return c
