"""The command line the experiment commands share (experiments.main, experiments.ntk_compare):
`--config=NAME[:variant]`, `--config.a.b=v` overrides and `--workdir`, parsed by absl and
ml_collections' `config_flags` with the config locked (a mistyped field fails).

Around absl: NAME resolves to experiments/configs/NAME.py (a path works too) and moves
before the overrides (absl applies them to a loaded config only); an override given twice
counts once, the last (absl would join two tuples); `--help` lists the configs,
strategies and common fields; `--version` prints crc_jax's version. A bad flag, config or
override is a UsageError: one line, exit status 2 (crc_jax.runtime.command).
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from crc_jax.errors import UsageError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--help=true")

config_flags.DEFINE_config_file("config", None, "Experiment config (name or path).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config name>).")


def normalized(argv: list[str]) -> tuple[list[str], str]:
    """(argv as absl must read it, the --config value as the user typed it): the last of
    each `--config.FIELD=VALUE` alone (a warning line names a field given twice), NAME
    resolved to its file under experiments/configs/, and --config first."""
    last = {arg.split("=", 1)[0]: i for i, arg in enumerate(argv)
            if arg.startswith("--config.") and "=" in arg}
    out, given = [], "--config"
    for i, arg in enumerate(argv):
        field = arg.split("=", 1)[0]
        if arg.startswith("--config.") and "=" in arg and last[field] != i:
            sys.stderr.write(f"warning: {field} is given more than once; the last value "
                             f"({argv[last[field]].split('=', 1)[1]}) is used\n")
            continue
        out.append(arg)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            value, j = arg[len("--config="):], i
        elif arg == "--config" and i + 1 < len(out):
            value, j = out[i + 1], i + 1
        else:
            continue
        given = f"--config={value}"
        name, sep, variant = value.partition(":")
        if not Path(name).exists() and (CONFIG_DIR / f"{name}.py").exists():
            value = f"{CONFIG_DIR / name}.py{sep}{variant}"
        elif not Path(name).exists():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.py") if not p.stem.startswith("_")
                           and p.stem != "base")
            raise UsageError(f"config {name!r} not found; known: {', '.join(known)}")
        out[j] = f"--config={value}" if j == i else value
    config_args = [a for a in out[1:] if a.startswith("--config=")]
    rest = [a for a in out[1:] if not a.startswith("--config=")]
    return out[:1] + config_args + rest, given


def file_error(err: Exception, given: str) -> str:
    """The one line for a config file whose get_config raised: ml_collections puts the
    whole traceback in the message, and the reason (e.g. the allowed variants) is last."""
    text = str(err)
    if "Error whilst parsing config file" not in text:
        return text.splitlines()[0]
    reason = [line for line in text.splitlines() if line.strip()][-1]
    return f"{given}: {reason.split(': ', 1)[-1] if ': ' in reason else reason}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing (app.run's flags_parser), with the rules of the module docstring."""
    if "--version" in argv[1:]:
        from crc_jax import __version__

        sys.stdout.write(f"crc_jax {__version__}\n")
        sys.exit(0)
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        from experiments.cli_help import help_text

        sys.stdout.write(help_text())
        sys.exit(0)
    argv, given = normalized(argv)
    sys.argv[:] = argv  # ml_collections reads the overrides' order from sys.argv
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        raise UsageError(file_error(err, given)) from None
    except (AttributeError, KeyError) as err:  # an override naming a field the config lacks
        raise UsageError(f"unknown config field in an override: {err}") from None
    except (ValueError, TypeError) as err:  # an override value of the wrong type
        raise UsageError(f"bad config override: {err}") from None


def config_name() -> str:
    """The stem of the --config file (runs/<stem> is the default workdir)."""
    return Path(flags.FLAGS["config"].config_filename).stem
