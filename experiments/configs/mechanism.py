"""CRC's mechanism (Theorem 1): does the group CRC scores highest make the next training
converge faster than a median, a random or the lowest-scored group?

For each domain (digits: FixMatch MLP, experiments/configs/digits_fixmatch.py; two-moons:
Π-model MLP, experiments/configs/moons_pi.py), trial and labeled-set size: a model is
trained on the labeled set L with the project's own SSL training; CRC (last layer, G as
in the domain's study) scores a random partition of the unlabeled pool; the top, median,
a random and the bottom group are each added to L and the model is retrained from one
fresh initialisation and key, (a) by full-batch gradient descent on the squared loss
(the theorem's setting) and (b) by the project's own loss and optimiser; the realised
λ⁺min of K̃(L ∪ g) at that initialisation and the test accuracy are measured.
experiments/mechanism.py has the details, docs/results/mechanism/README.md the results.

Command:  nice -n 10 python -m experiments.mechanism --out docs/results/mechanism
          (resumable: instances already in OUT/instances.csv are kept; --report-only
          rebuilds the table and figure from that file; --config=mechanism:smoke for a
          seconds-long run)
Expect:   the wall time in docs/results/mechanism/README.md (24 instances, about an hour on
          the shared 2-core CPU); the table and figure there.
"""

import ml_collections

SMOKE = "smoke"


def domain(config_name: str, sizes, group_size: int, trials: int) -> ml_collections.ConfigDict:
    d = ml_collections.ConfigDict()
    d.config = config_name          # the experiments/configs module of the training setup
    d.sizes = tuple(sizes)          # labeled-set sizes |L|: Q0, then random labels added
    d.group_size = group_size       # G
    d.trials = trials
    return d


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.seed = 3511                    # this experiment's own stream; no AL run uses it
    c.domains = ml_collections.ConfigDict()
    c.domains.digits = domain("digits_fixmatch", (20, 40, 60), 5, 4)
    c.domains.moons = domain("moons_pi", (4, 8, 12), 2, 4)
    c.gd = ml_collections.ConfigDict()
    c.gd.steps = 2000                # full-batch GD steps on ½·mean‖f − onehot(y)‖²
    c.gd.lr_fraction = 0.5           # of the stability limit 2nC / max_g λmax(K̃(L ∪ g)) at init
    c.gd.at = (10, 100, 1000)        # report the loss ratio after these steps (and at the end)
    c.project = ml_collections.ConfigDict()
    c.project.eval_every = 10        # labeled-set cross-entropy every this many train steps
    c.project.at = (0.125, 0.5, 1.0)  # report its ratio after these fractions of the steps
    c.train_epochs = 0               # 0: the domain config's max_epochs (smoke: fewer)
    c.steps_per_epoch = 0            # 0: the domain config's steps_per_epoch
    c.depths = (0.1, 0.01, 0.001)    # steps to reach these fractions of the initial loss
    c.bootstrap = 10000              # resamples of the instances for the confidence intervals
    if arg == SMOKE:
        c.domains = ml_collections.ConfigDict()
        c.domains.moons = domain("moons_pi", (4,), 2, 2)
        c.gd.steps = 50
        c.gd.at = (10,)
        c.train_epochs = 2
        c.steps_per_epoch = 10
        c.bootstrap = 200
    elif arg:
        raise ValueError(f"mechanism takes no argument or {SMOKE!r}, got {arg!r}")
    return c
