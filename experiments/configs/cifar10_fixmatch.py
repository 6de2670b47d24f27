"""Table 6 of the paper: FixMatch on CIFAR-10 with WRN-28-2, Q in {50, 100}, Q0 = Q.

`--config=cifar10_fixmatch` is Q = Q0 = 50 (labeled 50 -> 300, CRC G=5);
`--config=cifar10_fixmatch:100` is Q = Q0 = 100 (labeled 100 -> 600, CRC G=10).
FixMatch as Sohn et al. (2020): B=64, mu=7, tau=0.95, lambda_u=1, SGD Nesterov lr 0.03,
weight decay 5e-4 on kernels, lr*cos(7 pi k/16K), EMA 0.999. Early stopping: patience 50,
at most 350 epochs of 1024 steps. Strategies random, entropy, confidence, EGL, CRC.

Command:  python -m experiments.main --config=cifar10_fixmatch --workdir=runs/cifar10_q50
Expect:   paper Table 6 (Q=50) at 300 labels: random 84.92 ± 0.73, CRC 87.01 ± 0.28.
"""

from experiments.configs.base import get_base_config


def get_config(arg=None):
    query = int(arg) if arg else 50
    if query not in (50, 100):
        raise ValueError(f"cifar10_fixmatch:<Q> takes Q in (50, 100), got {arg!r}")
    c = get_base_config()
    c.trials = 3
    c.strategies = ("random", "entropy", "confidence", "egl", "crc")
    c.dataset.name = "cifar10"
    c.model.name = "wrn28_2"
    c.ssl.name = "fixmatch"
    c.ssl.unlabeled_ratio = 7
    c.ssl.threshold = 0.95
    c.ssl.unlabeled_weight = 1.0
    c.al.initial_size = query
    c.al.query_size = query
    c.al.group_size = 5 if query == 50 else 10
    c.al.steps = 5
    c.train.batch_size = 64
    c.train.steps_per_epoch = 1024
    c.train.max_epochs = 350
    c.train.patience = 50
    c.train.optimizer = "sgd"
    c.train.lr = 0.03
    c.train.momentum = 0.9
    c.train.nesterov = True
    c.train.weight_decay = 5e-4
    c.train.schedule = "fixmatch_cosine"
    c.train.ema_decay = 0.999
    c.train.eval_batch_size = 1024
    return c
