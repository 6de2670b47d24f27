"""The SSL demo: FixMatch on scikit-learn's 8x8 digits, sized for a 2-core CPU.

An MLP (width 256: on this CPU about 3x faster per step than the small CNN, and more
accurate here), FixMatch (weak/strong augmentation scaled to 8x8, tau 0.95, mu 7, EMA of
weights), strategies random, entropy and CRC (last-layer NTK, G = 5); Q0 = 20 (2 per
class), Q = 10, 4 acquisitions, 3 trials.

Command:  python -m experiments.main --config=digits_fixmatch --workdir=runs/digits_fixmatch
Expect:   a few minutes on a 2-core CPU (see README for the measured table and wall time).
"""

from experiments.configs import digits
from experiments.configs.base import parse_variant


def get_config(arg=None):
    parse_variant(arg, val=False)   # no variants: refuse any
    c = digits.get_config()
    c.model.name = "mlp"
    c.model.width = 256
    c.ssl.name = "fixmatch"
    c.ssl.unlabeled_ratio = 7
    c.ssl.threshold = 0.95
    c.ssl.unlabeled_weight = 1.0
    c.train.batch_size = 32
    c.train.steps_per_epoch = 50
    c.train.max_epochs = 8
    c.train.patience = 4
    c.train.optimizer = "adam"
    c.train.lr = 3e-3
    c.train.ema_decay = 0.99
    return c
