"""Run an active-learning experiment.

    python -m experiments.main --config=svhn_mt --workdir=runs/svhn_mt
    python -m experiments.main --config=cifar10_fixmatch:100 --config.trials=1
    python -m experiments.main --help      (configs, strategies, common fields)
    python -m experiments.main --version   (crc_jax's version)

NAME resolves to experiments/configs/NAME.py (a path works too); `--config.a.b=v`
overrides fields (given twice, the last value counts; experiments.config_cli). Rerunning
the same command on a workdir resumes it; a workdir must be new, empty, or a run directory
of this command. A bad config, bad data or an unusable workdir prints one line and exits
with status 2; Ctrl-C prints one line and exits with status 130 (the run resumes from its
last completed step).

Devices: the run is data-parallel over every device JAX sees (crc_jax.runtime.sharding)
and says which at start, in one line; `--config.device.require=gpu` (or tpu) stops there,
exit status 2, with JAX's reason, when JAX has no such device and would run on the CPU
(crc_jax.runtime.devices); `=cpu` keeps JAX on the CPU. A train.batch_size that does not
split over the devices becomes the nearest multiple (logged, recorded in config.json).
`--config.distributed.enabled=True` first calls jax.distributed.initialize (multi-host).
`--mock_data=N` runs on tfds.testing.mock_data (N random examples per split; tests and
the Colab notebook's smoke run). In a notebook, `run(load_config(NAME, overrides),
workdir)` (experiments.configs.load_config) runs in the kernel's own process, on the
devices the kernel sees.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything imports TensorFlow

import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app, flags  # noqa: E402

from crc_jax.errors import UsageError  # noqa: E402
from crc_jax.runtime import command  # noqa: E402
from experiments import config_cli, supervisor  # noqa: E402

flags.DEFINE_integer("mock_data", 0, "Run on tfds.testing.mock_data with this many examples "
                     "per split instead of the real TFDS data (0: real data).")
flags.register_validator("mock_data", lambda n: n >= 0,
                         message="must be >= 0 (0: the real data, N > 0: N mock examples)")
FLAGS = flags.FLAGS


def run(config, workdir: str, *, mock_data: int = 0) -> None:
    """Check, run, write the report, and say where everything went. `mock_data`:
    examples per split of tfds.testing.mock_data (0: the real data)."""
    from crc_jax import config as config_lib
    from crc_jax import durable
    from crc_jax.run import loop
    from crc_jax.runtime import devices, distributed, sharding
    from experiments import mock_data as mock
    from experiments import report
    from experiments.configs.base import apply_smoke

    apply_smoke(config)
    sharding.initialize_distributed(config.distributed)  # multi-host: before any JAX work
    devices.select(config.device.require)   # before JAX starts: "cpu" keeps it on the CPU
    devices.check(config.device.require)    # a missing GPU/TPU: one line, JAX's reason
    strategies = config_lib.validate(config)   # every field, once; the strategies built
    logging.info(devices.describe(config.device.require))   # the start-up line
    mock.check(config, mock_data)
    made = [p for p in (Path(workdir), Path(workdir) / report.RUN_MARKER, Path(workdir) / ".lock")
            if not os.path.lexists(p)]
    if distributed.is_writer():  # a run directory, or a folder that is new or empty
        durable.claim_dir(workdir, report.RUN_MARKER, command="experiments.main",
                          accept=("config.json",), flag="workdir")
    try:
        with mock.context(mock_data):
            loop.run(config, workdir, strategies)
    except BaseException:
        if distributed.is_writer():
            unclaim(Path(workdir), made, report.RUN_MARKER)
        raise
    if distributed.is_writer():   # multi-process: process 0 writes and prints, alone
        print(report.write_report([workdir], out_dir=workdir))
        print(report.where(workdir, workdir))


def unclaim(workdir: Path, made: list[Path], marker: str) -> None:
    """A run that stopped before it bound its config.json (its data could not be loaded,
    say) leaves no trace: the folder, marker and lock file this command made are removed."""
    if (workdir / "config.json").exists():
        return
    if workdir in made:
        if not any(p.name not in (marker, ".lock") for p in workdir.iterdir()):
            shutil.rmtree(workdir, ignore_errors=True)
        return
    for path in made:
        path.unlink(missing_ok=True)


def main(argv: list[str]) -> None:
    del argv
    command.setup_logging()   # after app.run, which installs absl's handler
    config = FLAGS.config
    if config is None:
        raise UsageError("--config is required (e.g. --config=digits; --help lists the configs)")
    if config.distributed.enabled and not supervisor.is_worker():
        d = config.distributed  # multi-process: run as a worker, report a lost peer in one line
        sys.exit(supervisor.supervise(sys.argv, process_id=int(d.process_id),
                                      num_processes=int(d.num_processes)))
    import jax

    from crc_jax.runtime import distributed

    try:
        run(config, workdir(), mock_data=FLAGS.mock_data)
    except jax.errors.JaxRuntimeError as err:
        if not distributed.is_multiprocess():
            raise
        # most likely a peer died mid-collective: JAX ends this process once it knows
        supervisor.await_peer_verdict(err, timeout=config.distributed.heartbeat_timeout + 30)


def workdir() -> str:
    return FLAGS.workdir or f"runs/{config_cli.config_name()}"


def interrupted() -> str:
    """What Ctrl-C leaves: the completed steps, resumed by the same command."""
    where = f" on {workdir()}" if FLAGS.is_parsed() and FLAGS.config is not None else ""
    return f"completed steps are kept; rerun the same command{where} to resume"


def run_main() -> int:
    """The command: absl parses the flags, `main` runs, crc_jax.runtime.command ends it."""
    return command.run(lambda: app.run(main, flags_parser=config_cli.parse_flags),
                       interrupted=interrupted, log_format=None)


if __name__ == "__main__":
    sys.exit(run_main())
