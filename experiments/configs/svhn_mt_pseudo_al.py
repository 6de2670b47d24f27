"""Table 3 of the paper (SVHN column): pseudo-AL with Mean Teacher, R0 = 12, R = 2 per class.

Every acquisition takes R images of each class (the classes stay unknown to the strategy
but the pools are split by class, as the paper's pseudo-AL defines it); CRC searches groups
of G = Q = 20 that hold R of each class. Labeled per class 12 -> 22 in 5 acquisitions.

Command:  python -m experiments.main --config=svhn_mt_pseudo_al --workdir=runs/svhn_pseudo
Expect:   paper Table 3 at 22 per class: random 90.75 ± 2.57, CRC 91.39 ± 0.49.
"""

from experiments.configs import svhn_mt


def get_config(arg=None):
    del arg
    c = svhn_mt.get_config()
    c.al.pseudo_al = True
    c.al.initial_size = 120   # R0 = 12 per class
    c.al.query_size = 20      # R = 2 per class
    c.al.group_size = 20      # G = Q
    c.al.steps = 5
    return c
