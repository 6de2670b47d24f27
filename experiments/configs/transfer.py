"""Appendix B.2 of the paper (Figure 2): transferability of the first query.

The first query replaces the random class-balanced Q0: each strategy picks the Q0
initial images from the whole pool using a randomly initialized model
(al.first_query = "random_init"); a model with another initialization seed is then
trained on them, and the usual acquisitions follow for 5 steps. Random sampling (the
strategy "random", whose first query is a uniform draw) is the reference row.

`--config=transfer` is the paper's setting: FixMatch on CIFAR-10, Q = Q0 = 50, G = 5,
with every protocol choice of cifar10_fixmatch (Sohn et al. 2020; K = 2^20 cosine
horizon of kekmodel/FixMatch-pytorch; EMA BatchNorm statistics averaged,
ssl.ema_batch_stats="average", footnote 2;
§4.1 early stopping on the test split) except the initial set: per trial (B.2 draws it
with each strategy) instead of §4.1's median model. `:val` selects the best epoch on a
validation split. `--config=transfer:digits` is the same protocol on scikit-learn's
digits with the CPU-sized FixMatch/MLP of digits_fixmatch (Q0 = 20, Q = 10): the run
behind Figure 2 of docs/results.md (`python -m experiments.figures transfer RUN_DIR`).

Command:  python -m experiments.main --config=transfer --workdir=runs/transfer
          python -m experiments.main --config=transfer:digits --workdir=runs/transfer_digits
Expect:   paper Figure 2: every strategy starts below random sampling; entropy and CRC
          catch up after a few acquisitions, the other baselines stay below random.
          transfer:digits: 18 minutes on a 2-core CPU shared with other jobs (docs/results.md has
          the measured table and Figure 2).
"""

from experiments.configs import cifar10_fixmatch, digits_fixmatch
from experiments.configs.base import parse_variant, select_on_validation


def get_config(arg=None):
    options = parse_variant(arg, allowed=("digits",))
    if "digits" in options:
        c = digits_fixmatch.get_config()
        c.strategies = ("random", "entropy", "confidence", "egl", "crc", "crc_infinite:arch=mlp")
    else:
        c = cifar10_fixmatch.get_config("50")
        c.strategies = ("random", "entropy", "confidence", "egl", "crc", "crc_infinite:arch=mlp")
    c.al.first_query = "random_init"
    c.al.initial_model = "per_trial"
    c.al.steps = 5
    if "val" in options:
        select_on_validation(c)
    return c
