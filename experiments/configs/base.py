"""What every experiment config shares: the library's defaults, variants, the smoke shrink.

`get_base_config()` is crc_jax.config.defaults(), the one set of defaults the library and
the labeling app read too; each config under experiments/configs/ changes what its table
needs. `parse_variant` reads `--config=NAME:opt,opt`; `apply_smoke` shrinks any config to a
CPU-sized run.
"""

from crc_jax.config import defaults as get_base_config  # noqa: F401 (the configs' name for it)


# Held-out validation images of the realistic-evaluation protocol (Oliver et al. 2018;
# perrying/realistic-ssl-evaluation-pytorch, build_dataset.py COUNTS["valid"]); CIFAR-100
# is not in that code and takes CIFAR-10's 5000.
VALIDATION_SIZES = {"svhn": 7326, "cifar10": 5000, "cifar100": 5000}


def parse_variant(arg, *, allowed=(), val=True) -> set:
    """The comma-separated options after the colon of `--config=NAME:opt,opt`.

    `allowed` are the config's own; "val" (select_on_validation) is allowed too unless
    val=False. Every config calls this, so an option it does not know is refused (naming
    the allowed ones) instead of silently running the base config.
    """
    known = set(allowed) | ({"val"} if val else set())
    options = {part.strip() for part in (arg or "").split(",") if part.strip()}
    unknown = options - known
    if unknown:
        allowed_text = f"allowed: {', '.join(sorted(known))}" if known else "this config takes none"
        raise ValueError(f"unknown config variant {sorted(unknown)}; {allowed_text}")
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
