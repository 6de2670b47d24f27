"""Appendix B.2 of the paper: transferability of the first query.

The first acquisition is made with a randomly initialized model (al.first_query =
"random_init"), and the classifier is trained from another seed, so the labeled set does
not benefit from one model's weights. FixMatch on CIFAR-10, Q = Q0 = 50, G = 5.

Command:  python -m experiments.main --config=transfer --workdir=runs/transfer
Expect:   CRC's first query stays useful to a model it was not computed with; uncertainty
          strategies on an untrained model are close to random.
"""

from experiments.configs import cifar10_fixmatch


def get_config(arg=None):
    del arg
    c = cifar10_fixmatch.get_config("50")
    c.strategies = ("random", "entropy", "egl", "crc", "crc_infinite:arch=mlp")
    c.al.first_query = "random_init"
    c.al.steps = 1
    return c
