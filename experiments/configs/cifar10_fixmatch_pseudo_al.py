"""Table 3 of the paper (CIFAR-10 column): pseudo-AL with FixMatch, R0 = 1, R = 1 per class.

Every acquisition takes one image of each class; CRC searches groups of G = Q = 10 holding
one image of each class. Labeled per class 1 -> 4 in 3 acquisitions.

Command:  python -m experiments.main --config=cifar10_fixmatch_pseudo_al --workdir=runs/c10_pseudo
Expect:   paper Table 3 at 4 per class: random 93.28 ± 0.40, CRC 94.09 ± 1.12.
"""

from experiments.configs import cifar10_fixmatch


def get_config(arg=None):
    del arg
    c = cifar10_fixmatch.get_config("50")
    c.al.pseudo_al = True
    c.al.initial_size = 10
    c.al.query_size = 10
    c.al.group_size = 10
    c.al.steps = 3
    return c
