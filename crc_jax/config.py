"""The one set of config defaults: every field the library reads, with its default.

The experiment configs (experiments/configs/*.py) start from `defaults()` and change what
their table needs; the labeling app (crc_jax.project) starts from it too and sets its round
settings. Library code reads fields without fallbacks, so a field added here is the only
place its default lives.

Field names other issues and users rely on: seed, trials, strategies, dataset.name,
dataset.data_dir, model.name, ssl.name, al.initial_size (Q0), al.query_size (Q),
al.group_size (G), al.steps, train.max_epochs, train.patience, device.require.
"""

import ml_collections


def defaults() -> ml_collections.ConfigDict:
    """Every field the library reads, at its default (a fresh ConfigDict each call)."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.trials = 3
    # Strategies run side by side; "name:key=value,..." passes options (see crc_jax.acquisition).
    c.strategies = ("random", "entropy", "crc")
    c.smoke = False  # shrink everything to a tiny CPU-sized run (tests, laptops)

    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = "digits"        # a registered data set (crc_jax.data.names())
    c.dataset.data_dir = ""          # a prepared TFDS directory; "" = TFDS default
    c.dataset.train_size = 0         # use a random subset of this many pool images; 0 = all
    c.dataset.test_size = 0          # evaluate on this many test images; 0 = all

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn"             # a registered model (crc_jax.models.names())
    c.model.width = 0                # 0 = the model's default width
    c.model.dropout = 0.0            # dropout rate before the head (BALD's MC dropout needs > 0)

    c.ssl = ml_collections.ConfigDict()
    c.ssl.name = "supervised"        # a registered SSL algorithm (crc_jax.ssl.names())
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
    # trained | random_init (Appendix B.2: the strategy picks Q0 with an untrained model)
    c.al.first_query = "trained"
    c.al.initial_model = "per_trial"  # per_trial | median (§4.1: median of K candidate initial sets)
    c.al.initial_candidates = 5      # K, candidate initial sets for initial_model = median
    # step 0's labeled set: random | spread | near_duplicate | indices (crc_jax/data/initial_sets.py)
    c.al.initial_rule = "random"
    c.al.initial_indices = ()        # rule "indices": the Q0 pool indices of step 0
    # rule "spread": pivots at or above this quantile of their class's margins
    c.al.initial_margin_quantile = 0.0

    # Per-strategy options, e.g. acquisition.crc.subset = "all".
    c.acquisition = ml_collections.ConfigDict()
    c.acquisition.crc = ml_collections.ConfigDict({"subset": "last"})  # max_groups: "crc:max_groups=N"

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 64          # B, labeled images per step
    # Set by the run, not by hand: the config's batch size when it did not split over the
    # devices and the run used the nearest multiple of the device count (0 = not moved).
    c.train.requested_batch_size = 0
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
    c.train.steps_per_dispatch = 1   # train steps per jitted call (a lax.scan over the chunk); same results

    # The platform the run must use: auto (whatever JAX picks) | cpu (start JAX on the CPU
    # alone) | gpu | tpu (stop at start-up, with JAX's reason, when JAX has no such device
    # and would fall back to the CPU). crc_jax.runtime.devices.
    c.device = ml_collections.ConfigDict()
    c.device.require = "auto"

    # Multi-host runs (TPU pods, multi-node GPU): jax.distributed.initialize at start-up.
    # Single-host runs need none of this: the data-parallel mesh spans the local devices.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = False
    c.distributed.coordinator_address = ""  # "host:port" of process 0; "" = auto-detect (TPU pods)
    c.distributed.num_processes = 0         # 0 = auto-detect
    c.distributed.process_id = -1           # -1 = auto-detect
    c.distributed.heartbeat_timeout = 100   # seconds; a peer silent this long ends the run
    return c
