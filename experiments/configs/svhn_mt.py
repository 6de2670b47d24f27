"""Table 4 of the paper: Mean Teacher on SVHN with WRN-28-2, Q0=120, Q=20, CRC with G=20.

Strategies random, entropy, confidence, EGL and CRC; labeled counts 120 -> 200 in 4
acquisitions; early stopping as the paper's SVHN runs (no patience, 512 epochs of 1024
steps); 3 trials. Mean Teacher as Oliver et al. (2018): Adam 4e-4, consistency weight 8
with ramp-up exp(-5(1-t)^2), teacher EMA 0.95.

Command:  python -m experiments.main --config=svhn_mt --workdir=runs/svhn_mt
          (TFDS downloads svhn_cropped on first use; --config.dataset.data_dir=DIR for a
          prepared TFDS directory; --config.smoke=True for a CPU-sized smoke run)
Expect:   paper Table 4 at 200 labels: random 89.20 ± 1.08, CRC 89.39 ± 1.78. Days on one GPU.
"""

from experiments.configs.base import get_base_config


def get_config(arg=None):
    del arg
    c = get_base_config()
    c.trials = 3
    c.strategies = ("random", "entropy", "confidence", "egl", "crc")
    c.dataset.name = "svhn"
    c.model.name = "wrn28_2"
    c.ssl.name = "mean_teacher"
    c.ssl.unlabeled_weight = 8.0
    c.ssl.unlabeled_ratio = 1
    c.al.initial_size = 120
    c.al.query_size = 20
    c.al.group_size = 20
    c.al.steps = 4
    c.train.batch_size = 64
    c.train.steps_per_epoch = 1024
    c.train.max_epochs = 512
    c.train.patience = 0            # SVHN: no early stopping (paper: infinity / 512)
    c.train.optimizer = "adam"
    c.train.lr = 4e-4
    c.train.ema_decay = 0.95        # the teacher
    c.train.eval_batch_size = 1024
    return c
