"""Shared defaults for every experiment config. Each field is read somewhere; see README.

Field names other issues and users rely on: seed, trials, strategies, dataset.name,
dataset.data_dir, model.name, ssl.name, al.initial_size (Q0), al.query_size (Q),
al.group_size (G), al.steps, train.max_epochs, train.patience.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trials = 3
    # Strategies run side by side; "name:key=value,..." passes options (see crc_jax.acquisition).
    c.strategies = ("random", "entropy", "crc")
    c.smoke = False  # shrink everything to a tiny CPU-sized run (tests, laptops)

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "digits"        # digits | moons | svhn | cifar10 | cifar100
    c.dataset.data_dir = ""          # a prepared TFDS directory; "" = TFDS default
    c.dataset.train_size = 0         # use a random subset of this many pool images; 0 = all
    c.dataset.test_size = 0          # evaluate on this many test images; 0 = all

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"             # wrn28_2 | cnn | mlp
    c.model.width = 0                # 0 = the model's default width
    c.model.dropout = 0.0            # dropout rate before the head (BALD's MC dropout needs > 0)

    c.ssl = ml_collections.ConfigDict()
    c.ssl.name = "supervised"        # supervised | fixmatch | mean_teacher | pi_model
    c.ssl.unlabeled_ratio = 7        # mu: unlabeled images per labeled image in a step
    c.ssl.threshold = 0.95           # FixMatch tau
    c.ssl.unlabeled_weight = 1.0     # FixMatch lambda_u / consistency weight (MT, Pi)
    c.ssl.rampup_fraction = 0.4      # MT / Pi: fraction of training the ramp-up lasts
    c.ssl.teacher_ema = 0.95         # MT: teacher = EMA of the student with this decay
    c.ssl.teacher_ema_warmup = False  # MT: teacher decay min(1 - 1/(k+1), teacher_ema) (MT reference)
    c.ssl.eval_model = "teacher"     # MT: network evaluated and queried: teacher | student (MT reference)
    c.ssl.rampup_steps = 0           # MT / Pi: ramp-up length in steps; 0 = rampup_fraction of the cap
    c.ssl.ema_batch_stats = "average"  # EMA model's BatchNorm stats: average | copy (paper footnote 2)
    c.ssl.weak_noise = 0.05          # 2-D points only: std of the Gaussian noise of a weak view
    c.ssl.strong_noise = 0.2         # 2-D points only: std of the noise of a FixMatch strong view

    c.al = ml_collections.ConfigDict()
    c.al.initial_size = 20           # Q0, class-balanced at step 0
    c.al.query_size = 10             # Q, labels acquired per step
    c.al.group_size = 5              # G, CRC group size; must divide Q
    c.al.steps = 3                   # acquisitions after the initial step
    c.al.pseudo_al = False           # Table 3: every acquisition takes Q/C of each class (reads the oracle)
    c.al.first_query = "trained"     # trained | random_init (Appendix B.2: the strategy picks Q0 with an untrained model)
    c.al.initial_model = "per_trial"  # per_trial | median (§4.1: median of K candidate initial sets)
    c.al.initial_candidates = 5      # K, candidate initial sets for initial_model = median
    c.al.initial_rule = "random"     # random | spread | near_duplicate | indices (crc_jax/data/initial_sets.py)
    c.al.initial_indices = ()        # rule "indices": the Q0 pool indices of step 0
    c.al.initial_margin_quantile = 0.0  # rule "spread": pivots at or above this quantile of their class's margins

    # Per-strategy options, e.g. acquisition.crc.subset = "all".
    c.acquisition = ml_collections.ConfigDict()
    c.acquisition.crc = ml_collections.ConfigDict({"subset": "last"})  # max_groups: "crc:max_groups=N"

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64          # B, labeled images per step
    c.train.steps_per_epoch = 50     # train steps per "epoch" (SSL epochs are step counts)
    c.train.max_epochs = 30
    c.train.patience = 10            # epochs without improvement before stopping; 0 = never stop early
    c.train.watch = "test"           # split watched for early stopping: test (the paper) | val
    c.train.val_size = 0             # labeled-free validation images held out of the pool (watch=val)
    c.train.optimizer = "adam"       # sgd | adam
    c.train.lr = 3e-3
    c.train.momentum = 0.9
    c.train.nesterov = True
    c.train.weight_decay = 0.0
    c.train.schedule = "constant"    # constant | cosine | fixmatch_cosine | step
    c.train.schedule_steps = 0       # K of the cosine schedules; 0 = max_epochs * steps_per_epoch
    c.train.lr_decay_step = 0        # schedule "step": lr *= lr_decay_factor from this step on
    c.train.lr_decay_factor = 1.0
    c.train.translate = 0            # weak view: largest shift in px; 0 = 4 px at 32x32, scaled
    c.train.ema_decay = 0.0          # EMA of weights used for evaluation; 0 = off
    c.train.augment = True           # weak augmentation of labeled batches
    c.train.eval_batch_size = 512
    c.train.checkpoint_every = 0     # epochs between in-training checkpoints; 0 = off
    c.train.progress = True          # progress bars
    c.train.dtype = "float32"        # activations of the train step: float32 | bfloat16 (params stay float32)

    # Multi-host runs (TPU pods, multi-node GPU): jax.distributed.initialize at start-up.
    # Single-host runs need none of this: the data-parallel mesh spans the local devices.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = False
    c.distributed.coordinator_address = ""  # "host:port" of process 0; "" = auto-detect (TPU pods)
    c.distributed.num_processes = 0         # 0 = auto-detect
    c.distributed.process_id = -1           # -1 = auto-detect
    c.distributed.heartbeat_timeout = 100   # seconds; a peer silent this long ends the run
    return c


# Held-out validation images of the realistic-evaluation protocol (Oliver et al. 2018;
# perrying/realistic-ssl-evaluation-pytorch, build_dataset.py COUNTS["valid"]); CIFAR-100
# is not in that code and takes CIFAR-10's 5000.
VALIDATION_SIZES = {"svhn": 7326, "cifar10": 5000, "cifar100": 5000}


def parse_variant(arg, *, allowed=()) -> set:
    """The comma-separated options after the colon of `--config=NAME:opt,opt`.

    "val" is always allowed (select_on_validation); `allowed` adds the config's own.
    """
    options = {part.strip() for part in (arg or "").split(",") if part.strip()}
    unknown = options - set(allowed) - {"val"}
    if unknown:
        raise ValueError(f"unknown config variant {sorted(unknown)}; allowed: "
                         f"{', '.join(sorted(set(allowed) | {'val'}))}")
    return options


def select_on_validation(config) -> None:
    """The `:val` variant: early stopping and the best epoch are chosen on a validation
    split held out of the pool (the realistic-evaluation protocol of Oliver et al. 2018),
    instead of on the test split as the paper's §4.1 reads."""
    config.train.watch = "val"
    config.train.val_size = VALIDATION_SIZES.get(config.dataset.name, 200)


def apply_smoke(config) -> None:
    """Shrink a config in place to a CPU-sized run when config.smoke is set.

    Keeps the experiment's structure (data set, SSL algorithm, strategies, Q0/Q/G ratios)
    and shrinks the model, the pool, the number of trials and the training length, so
    every paper config runs end to end in seconds on tfds.testing.mock_data.
    """
    if not config.smoke:
        return
    config.trials = 1
    if config.model.name == "wrn28_2":   # the MLP of point data sets (two-moons) stays an MLP
        config.model.name = "cnn"
    config.model.width = 4
    config.dataset.test_size = min(config.dataset.test_size or 64, 64)
    config.al.steps = min(config.al.steps, 2)
    config.train.max_epochs = 2
    config.train.steps_per_epoch = 2
    config.train.patience = 1
    config.train.batch_size = min(config.train.batch_size, 16)
    config.ssl.unlabeled_ratio = min(config.ssl.unlabeled_ratio, 2)
    config.train.progress = False
    config.train.val_size = min(config.train.val_size, 32)
    config.al.initial_candidates = min(config.al.initial_candidates, 3)


def set_fields(config, settings: dict):
    """Set dotted fields in place ({"train.lr": 0.1} -> config.train.lr = 0.1); returns config."""
    for dotted, value in settings.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config
