"""Run an active-learning experiment.

    python -m experiments.main --config=svhn_mt --workdir=runs/svhn_mt
    python -m experiments.main --config=cifar10_fixmatch:100 --config.trials=1

NAME resolves to experiments/configs/NAME.py (a path works too); `--config.a.b=v`
overrides fields. Rerunning the same command on a workdir resumes it. A bad config,
bad data or an unusable workdir prints one line and exits with status 2.

Devices: the run is data-parallel over every device JAX sees (crc_jax.sharding);
`--config.distributed.enabled=True` first calls jax.distributed.initialize (multi-host,
docs/accelerators.md). `--mock_data=N` runs on tfds.testing.mock_data (N random examples
per split; tests and the Colab notebook's smoke run).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from experiments import supervisor

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
EXIT_USAGE = 2


def resolve_config_arg(argv: list[str]) -> list[str]:
    """Turn --config=NAME[:arg] into --config=experiments/configs/NAME.py[:arg]."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            value, j = arg[len("--config="):], i
        elif arg == "--config" and i + 1 < len(out):
            value, j = out[i + 1], i + 1
        else:
            continue
        name, sep, variant = value.partition(":")
        if not Path(name).exists() and (CONFIG_DIR / f"{name}.py").exists():
            value = f"{CONFIG_DIR / name}.py{sep}{variant}"
        elif not Path(name).exists():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_")
                           and p.stem != "base")
            sys.stderr.write(f"error: config {name!r} not found; known: {', '.join(known)}\n")
            sys.exit(EXIT_USAGE)
        out[j] = f"--config={value}" if j == i else value
    return out


config_flags.DEFINE_config_file("config", None, "Experiment config (name or path).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")
flags.DEFINE_integer("mock_data", 0, "Run on tfds.testing.mock_data with this many examples "
                     "per split instead of the real TFDS data (0: real data).")


def data_context(mock_examples: int):
    """tfds.testing.mock_data(num_examples=N) when N > 0, else nothing."""
    if mock_examples <= 0:
        return contextlib.nullcontext()
    import tensorflow_datasets as tfds

    return tfds.testing.mock_data(num_examples=mock_examples)


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, but a bad flag or override is one line and exit status 2."""
    try:
        return flags.FLAGS(resolve_config_arg(argv))
    except flags.Error as err:
        sys.stderr.write(f"error: {str(err).splitlines()[0]}\n")
    except (AttributeError, KeyError) as err:  # an override naming a field the config lacks
        sys.stderr.write(f"error: unknown config field in an override: {err}\n")
    except (ValueError, TypeError) as err:  # an override value of the wrong type
        sys.stderr.write(f"error: bad config override: {err}\n")
    sys.exit(EXIT_USAGE)


def main(argv: list[str]) -> None:
    del argv
    config = flags.FLAGS.config
    if config is not None and config.distributed.enabled and not supervisor.is_worker():
        d = config.distributed  # multi-process: run as a worker, report a lost peer in one line
        sys.exit(supervisor.supervise(sys.argv, process_id=int(d.process_id),
                                      num_processes=int(d.num_processes)))
    import jax

    from crc_jax import distributed, loop, sharding
    from crc_jax.errors import ConfigError, DataError, RunDirError
    from crc_jax.train import TrainingDiverged
    from experiments import report
    from experiments.configs.base import apply_smoke

    logging.getLogger().setLevel(logging.INFO)
    for noisy in ("jax", "absl", "tensorflow", "orbax", "etils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = flags.FLAGS.config
    if config is None:
        sys.stderr.write("error: --config is required (e.g. --config=digits)\n")
        sys.exit(EXIT_USAGE)
    workdir = flags.FLAGS.workdir or f"runs/{Path(flags.FLAGS['config'].config_filename).stem}"
    apply_smoke(config)
    sharding.initialize_distributed(config.distributed)  # multi-host: before any JAX work
    logging.info("data-parallel over %d %s device(s)", jax.device_count(), jax.default_backend())
    try:
        with data_context(flags.FLAGS.mock_data):
            loop.run(config, workdir)
        if distributed.is_writer():
            print(report.write_report([workdir], out_dir=workdir))
    except (ConfigError, DataError, RunDirError, TrainingDiverged) as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(EXIT_USAGE)
    except jax.errors.JaxRuntimeError as err:
        if not distributed.is_multiprocess():
            raise
        # most likely a peer died mid-collective: JAX ends this process once it knows
        supervisor.await_peer_verdict(err, timeout=config.distributed.heartbeat_timeout + 30)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
