"""Table 1 of the paper: CRC's group size G in {2, 5, 10, 100} at Q = 100, FixMatch on CIFAR-10.

A sweep: the four group sizes are four strategies of one run, so the report puts them side
by side. Labeled 100 -> 500 in 4 acquisitions. `:val` selects the best epoch on a
held-out validation split instead of the test split.

Protocol choices: those of cifar10_fixmatch:100 (FixMatch of Sohn et al. 2020 with the
K = 2^20 cosine horizon of kekmodel/FixMatch-pytorch; EMA BatchNorm statistics averaged
(ssl.ema_batch_stats="average"),
footnote 2's early version for §4.3.2; §4.1 early stopping on the test split; §4.1 median
of 3 candidate initial sets).

Command:  python -m experiments.main --config=cifar10_group_size --workdir=runs/c10_groups
Expect:   paper Table 1 at 500 labels: 88.30 (G=2), 87.66 (G=5), 88.36 (G=10), 88.49 (G=100).
"""

from experiments.configs import cifar10_fixmatch
from experiments.configs.base import parse_variant

GROUP_SIZES = (2, 5, 10, 100)


def get_config(arg=None):
    options = parse_variant(arg)
    c = cifar10_fixmatch.get_config(",".join(["100"] + sorted(options)))
    c.strategies = tuple(f"crc:group_size={g}" for g in GROUP_SIZES)
    c.al.steps = 4
    return c
