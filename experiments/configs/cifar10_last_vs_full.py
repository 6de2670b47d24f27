"""Table 2 of the paper: CRC with the last-layer NTK vs the NTK of all parameters.

FixMatch on CIFAR-10, Q = Q0 = 50, G = 5; labeled 50 -> 200 in 3 acquisitions; the two
variants are two strategies of one run. `:val` selects the best epoch on a held-out
validation split instead of the test split.

Protocol choices: those of cifar10_fixmatch (FixMatch of Sohn et al. 2020 with the
K = 2^20 cosine horizon of kekmodel/FixMatch-pytorch; EMA BatchNorm statistics averaged
(ssl.ema_batch_stats="average"),
footnote 2's early version for §4.3.2; §4.1 early stopping on the test split; §4.1 median
of 3 candidate initial sets).

Command:  python -m experiments.main --config=cifar10_last_vs_full --workdir=runs/c10_last_full
Expect:   paper Table 2 at 200 labels: last 85.67 ± 1.31, full 79.10 ± 3.64.
"""

from experiments.configs import cifar10_fixmatch
from experiments.configs.base import parse_variant


def get_config(arg=None):
    options = parse_variant(arg)
    c = cifar10_fixmatch.get_config(",".join(["50"] + sorted(options)))
    c.strategies = ("crc:subset=last", "crc:subset=all")
    c.al.steps = 3
    return c
