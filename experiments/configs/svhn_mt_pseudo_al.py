"""Table 3 of the paper (SVHN column): pseudo-AL with Mean Teacher, R0 = 12, R = 2 per class.

Every acquisition takes R images of each class (the classes stay unknown to the strategy
but the pools are split by class, as the paper's pseudo-AL defines it, §4.3.1); CRC
searches groups of G = Q = 20 that hold R of each class. Labeled per class 12 -> 22 in 5
acquisitions. `:val` selects the best epoch on a held-out validation split instead.

Protocol choices: the Mean Teacher reference settings of svhn_mt (perrying/
realistic-ssl-evaluation-pytorch: student evaluated, lr x0.2 at 400k, 50 + 50 images per
step, 2 px translation, ramp-up over 200k steps), §4.1 early stopping (none for SVHN) on
the test split, and the §4.1 initial model: median of 5 candidate Q0 sets for §4.3.1.

Command:  python -m experiments.main --config=svhn_mt_pseudo_al --workdir=runs/svhn_pseudo
Expect:   paper Table 3 at 22 per class: random 90.75 ± 2.57, CRC 91.39 ± 0.49.
"""

from experiments.configs import svhn_mt
from experiments.configs.base import parse_variant


def get_config(arg=None):
    options = parse_variant(arg)
    c = svhn_mt.get_config(",".join(sorted(options)))
    c.al.pseudo_al = True
    c.al.initial_size = 120   # R0 = 12 per class
    c.al.query_size = 20      # R = 2 per class
    c.al.group_size = 20      # G = Q
    c.al.steps = 5
    c.al.initial_candidates = 5
    return c
