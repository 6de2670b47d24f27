"""Run an active-learning experiment.

    python -m experiments.main --config=svhn_mt --workdir=runs/svhn_mt
    python -m experiments.main --config=cifar10_fixmatch:100 --config.trials=1
    python -m experiments.main --help      (configs, strategies, common fields)
    python -m experiments.main --version   (crc_jax's version)

NAME resolves to experiments/configs/NAME.py (a path works too); `--config.a.b=v`
overrides fields (given twice, the last value counts). Rerunning the same command on a
workdir resumes it; a workdir must be new, empty, or a run directory of this command. A bad config,
bad data or an unusable workdir prints one line and exits with status 2; Ctrl-C prints
one line and exits with status 130 (the run resumes from its last completed step).

Devices: the run is data-parallel over every device JAX sees (crc_jax.runtime.sharding) and says
which at start, in one line; `--config.device.require=gpu` (or tpu) stops there, exit
status 2, with JAX's reason, when JAX has no such device and would run on the CPU
(crc_jax.runtime.devices); `=cpu` keeps JAX on the CPU. A train.batch_size that does not split
over the devices becomes the nearest multiple (logged, recorded in config.json).
`--config.distributed.enabled=True` first calls jax.distributed.initialize (multi-host).
`--mock_data=N` runs on tfds.testing.mock_data (N random examples per split; tests and
the Colab notebook's smoke run). In a notebook, `run(load_config(NAME, overrides),
workdir)` runs in the kernel's own process, on the devices the kernel sees.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow

import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import supervisor

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_WORKDIR = None  # the run directory, once known (for the Ctrl-C message)
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--help=true")


def resolve_config_arg(argv: list[str]) -> list[str]:
    """Turn --config=NAME[:arg] into --config=experiments/configs/NAME.py[:arg], and move it
    before the --config.a.b overrides (which absl can only apply to a loaded config)."""
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
    config_args = [a for a in out[1:] if a.startswith("--config=")]
    rest = [a for a in out[1:] if not a.startswith("--config=")]
    return out[:1] + config_args + rest


def last_override_wins(argv: list[str]) -> list[str]:
    """argv with only the last `--config.FIELD=VALUE` of each field: absl would apply every
    one, and a tuple field given twice would silently become the two tuples joined. A
    warning line names each field given more than once."""
    last = {arg.split("=", 1)[0]: i for i, arg in enumerate(argv)
            if arg.startswith("--config.") and "=" in arg}
    out = []
    for i, arg in enumerate(argv):
        field = arg.split("=", 1)[0]
        if arg.startswith("--config.") and "=" in arg and last[field] != i:
            sys.stderr.write(f"warning: {field} is given more than once; the last value "
                             f"({argv[last[field]].split('=', 1)[1]}) is used\n")
            continue
        out.append(arg)
    return out


def config_as_given(argv: list[str]) -> str:
    """The --config value as the user typed it (for messages)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg
        if arg == "--config" and i + 1 < len(argv):
            return f"--config={argv[i + 1]}"
    return "--config"


def config_file_error(err: Exception, given: str) -> str:
    """The one line for a config file whose get_config raised: ml_collections puts the
    whole traceback in the message, and the reason (e.g. the allowed variants) is last."""
    text = str(err)
    if "Error whilst parsing config file" not in text:
        return text.splitlines()[0]
    reason = [line for line in text.splitlines() if line.strip()][-1]
    return f"{given}: {reason.split(': ', 1)[-1] if ': ' in reason else reason}"


config_flags.DEFINE_config_file("config", None, "Experiment config (name or path).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")
flags.DEFINE_integer("mock_data", 0, "Run on tfds.testing.mock_data with this many examples "
                     "per split instead of the real TFDS data (0: real data).")
flags.register_validator("mock_data", lambda n: n >= 0,
                         message="must be >= 0 (0: the real data, N > 0: N mock examples)")


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, but a bad flag or override is one line and exit status 2, and --help
    prints the configs, strategies and common fields and exits with status 0."""
    if "--version" in argv[1:]:
        from crc_jax import __version__

        sys.stdout.write(f"crc_jax {__version__}\n")
        sys.exit(0)
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        from experiments.cli_help import help_text

        sys.stdout.write(help_text())
        sys.exit(0)
    argv = last_override_wins(argv)
    given = config_as_given(argv)
    argv = resolve_config_arg(argv)
    sys.argv[:] = argv  # ml_collections reads the overrides' order from sys.argv
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        sys.stderr.write(f"error: {config_file_error(err, given)}\n")
    except (AttributeError, KeyError) as err:  # an override naming a field the config lacks
        sys.stderr.write(f"error: unknown config field in an override: {err}\n")
    except (ValueError, TypeError) as err:  # an override value of the wrong type
        sys.stderr.write(f"error: bad config override: {err}\n")
    sys.exit(EXIT_USAGE)


def load_config(name: str, overrides: dict | None = None):
    """The config `--config=NAME[:variant]` and `--config.a.b=v` give, without absl: for
    a notebook calling `run` in its own process. A field the config lacks is a KeyError
    or AttributeError, as on the command line."""
    import importlib

    from experiments.configs.base import set_fields

    module, _, variant = name.partition(":")
    config = importlib.import_module(f"experiments.configs.{module}").get_config(variant or None)
    config.lock()   # an override cannot add a field
    return set_fields(config, dict(overrides or {}))


def run(config, workdir: str, *, mock_data: int | None = None) -> None:
    """Validate, run, write the report, and say where everything went. `mock_data`:
    examples per split of tfds.testing.mock_data (None: the --mock_data flag)."""
    from crc_jax import durable
    from crc_jax.runtime import devices, distributed, sharding
    from crc_jax.run import config_check, loop
    from experiments import mock_data as mock
    from experiments import report
    from experiments.configs.base import apply_smoke

    if mock_data is None:
        mock_data = flags.FLAGS.mock_data
    apply_smoke(config)
    sharding.initialize_distributed(config.distributed)  # multi-host: before any JAX work
    devices.select(config.device.require)   # before JAX starts: "cpu" keeps it on the CPU
    devices.check(config.device.require)    # a missing GPU/TPU: one line, JAX's reason
    config_check.validate(config)           # a bad value: one line
    logging.info(devices.describe(config.device.require))   # the start-up line
    mock.check(config, mock_data)
    if distributed.is_writer():  # a run directory, or a folder that is new or empty
        durable.claim_dir(workdir, report.RUN_MARKER, command="experiments.main",
                          accept=("config.json",), flag="workdir")
    with mock.context(mock_data):
        loop.run(config, workdir)
    if distributed.is_writer():   # multi-process: process 0 writes and prints, alone
        print(report.write_report([workdir], out_dir=workdir))
        print(report.where(workdir, workdir))


def main(argv: list[str]) -> None:
    del argv
    from experiments import cli_logging

    cli_logging.setup()
    config = flags.FLAGS.config
    if config is None:
        sys.stderr.write("error: --config is required (e.g. --config=digits; --help lists "
                         "the configs)\n")
        sys.exit(EXIT_USAGE)
    if config.distributed.enabled and not supervisor.is_worker():
        d = config.distributed  # multi-process: run as a worker, report a lost peer in one line
        sys.exit(supervisor.supervise(sys.argv, process_id=int(d.process_id),
                                      num_processes=int(d.num_processes)))
    global _WORKDIR
    workdir = flags.FLAGS.workdir or f"runs/{Path(flags.FLAGS['config'].config_filename).stem}"
    _WORKDIR = workdir
    import jax

    from crc_jax.runtime import distributed
    from crc_jax.errors import ConfigError, DataError, DeviceUnavailable, MissingExtra, StorageError
    from crc_jax.train import TrainingDiverged

    try:
        run(config, workdir)
    except (ConfigError, DataError, DeviceUnavailable, MissingExtra, StorageError,
            TrainingDiverged) as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(EXIT_USAGE)
    except jax.errors.JaxRuntimeError as err:
        if not distributed.is_multiprocess():
            raise
        # most likely a peer died mid-collective: JAX ends this process once it knows
        supervisor.await_peer_verdict(err, timeout=config.distributed.heartbeat_timeout + 30)


def interrupted(workdir: str | None) -> None:
    """Ctrl-C: one line (what was completed is kept), exit status 130. The process ends
    with os._exit once its output is flushed: an interrupt inside XLA (e.g. mid-compile)
    can leave its threads in a state that crashes the interpreter's normal teardown."""
    where = f" on {workdir}" if workdir else ""
    sys.stderr.write(f"\ninterrupted: completed steps are kept; rerun the same command{where} "
                     "to resume\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    try:
        app.run(main, flags_parser=parse_flags)
    except KeyboardInterrupt:
        interrupted(_WORKDIR)
