"""Table 3 of the paper (CIFAR-10 column): pseudo-AL with FixMatch, R0 = 1, R = 1 per class.

Every acquisition takes one image of each class; CRC searches groups of G = Q = 10 holding
one image of each class (§4.3.1). Labeled per class 1 -> 4 in 3 acquisitions. `:val`
selects the best epoch on a held-out validation split instead of the test split.

Protocol choices, each with the source it follows:
  * FixMatch settings and K = 2^20 cosine horizon of cifar10_fixmatch (Sohn et al. 2020,
    kekmodel/FixMatch-pytorch).
  * EMA BatchNorm statistics copied from the trained model (ssl.ema_batch_stats="copy"):
    paper footnote 2, the later kekmodel version (models/ema.py copies buffers) used for §4.3.1.
  * Initial model (§4.1): median of 5 candidate class-balanced Q0 sets for §4.3.1.
  * Early stopping (§4.1): patience 50, at most 350 epochs of 1024 steps, test split.

Command:  python -m experiments.main --config=cifar10_fixmatch_pseudo_al --workdir=runs/c10_pseudo
Expect:   paper Table 3 at 4 per class: random 93.28 ± 0.40, CRC 94.09 ± 1.12.
"""

from experiments.configs import cifar10_fixmatch
from experiments.configs.base import parse_variant, select_on_validation


def get_config(arg=None):
    options = parse_variant(arg)
    c = cifar10_fixmatch.get_config("50")
    c.ssl.ema_batch_stats = "copy"
    c.al.pseudo_al = True
    c.al.initial_size = 10
    c.al.query_size = 10
    c.al.group_size = 10
    c.al.steps = 3
    c.al.initial_candidates = 5
    if "val" in options:
        select_on_validation(c)
    return c
