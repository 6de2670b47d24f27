"""The text of `python -m experiments.main --help`: configs, strategies, common fields.

Config docstrings are read with `ast` (no config is imported); every list of names
(strategies, data sets, models, SSL algorithms) is read from its registry, so a new
registration shows here without editing this file. TensorFlow is not imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
NOT_RUNNABLE = ("base", "__init__")
OTHER_COMMAND = {"ntk_compare": "python -m experiments.ntk_compare --config=ntk_compare"}

# (field, what it sets); defaults are read from the base config.
COMMON_FIELDS = (
    ("seed", "base seed"),
    ("trials", "independent trials"),
    ("strategies", "tuple of strategy specs run side by side"),
    ("smoke", "shrink the config to a CPU-sized smoke run"),
    ("dataset.name", "{datasets}"),
    ("dataset.data_dir", "a prepared TFDS directory, or the .npz file of dataset.name=npz"),
    ("dataset.train_size", "stratified pool subset (0 = all)"),
    ("dataset.test_size", "stratified test subset (0 = all)"),
    ("model.name", "{models}"),
    ("ssl.name", "{ssl}"),
    ("al.initial_size", "Q0, labels at step 0 (Q0/C per class)"),
    ("al.query_size", "Q, labels acquired per step"),
    ("al.group_size", "G, CRC group size (divides Q)"),
    ("al.steps", "acquisitions after step 0"),
    ("train.max_epochs", "epochs at most"),
    ("train.patience", "early-stopping patience in epochs (0 = never stop early)"),
    ("train.batch_size", "labeled images per step"),
    ("train.checkpoint_every", "epochs between in-training checkpoints (0 = off)"),
    ("train.progress", "progress bars"),
    ("device.require", "auto | cpu | gpu | tpu: stop at start, with JAX's reason, when JAX has "
                       "no such device"),
)



def registered_names() -> dict[str, list[str]]:
    """The registries' names: {"strategies": [...], "datasets", "models", "ssl"}."""
    from crc_jax import acquisition, data, models, ssl

    return {"strategies": acquisition.names(), "datasets": data.names(),
            "models": models.names(), "ssl": ssl.names()}


def config_summaries() -> list[tuple[str, str]]:
    """(name, first docstring line) of every runnable config under experiments/configs/."""
    out = []
    for path in sorted(CONFIG_DIR.glob("*.py")):
        if path.stem in NOT_RUNNABLE:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        summary = doc.strip().splitlines()[0] if doc.strip() else ""
        if path.stem in OTHER_COMMAND:
            summary += f" (run with `{OTHER_COMMAND[path.stem]}`)"
        out.append((path.stem, summary))
    return out


def _default(config, dotted: str) -> str:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return repr(node)


def help_text() -> str:
    from crc_jax import acquisition
    from experiments.configs.base import get_base_config

    base = get_base_config()
    names = {key: " | ".join(values) for key, values in registered_names().items()}
    dropout = ", ".join(acquisition.STRATEGIES.names("needs_dropout"))
    width = max(len(name) for name, _ in config_summaries())
    lines = [
        "usage: python -m experiments.main --config=NAME[:VARIANT] [--workdir=DIR] "
        "[--config.FIELD=VALUE ...] [--mock_data=N]",
        "",
        "Runs every strategy of the config for config.trials trials into DIR (default",
        "runs/NAME); rerunning the same command resumes. A bad value prints one line and",
        "exits with status 2. --config=NAME comes first; overrides follow it.",
        "",
        "configs (experiments/configs/NAME.py, or a path to a config file):",
        *(f"  {name.ljust(width)}  {summary}" for name, summary in config_summaries()),
        "",
        "strategies (options as name:key=value,key=value):",
        "  " + ", ".join(registered_names()["strategies"]),
        "  e.g. crc:subset=all,group_size=10  crc:max_groups=200  crc_infinite:arch=mlp",
        f"  {dropout} needs --config.model.dropout > 0 (MC dropout)",
        "",
        "common fields (--config.FIELD=VALUE; default in brackets):",
        *(f"  {field.ljust(24)} {what.format(**names)} [{_default(base, field)}]"
          for field, what in COMMON_FIELDS),
        "",
        "tuples, e.g. the strategies, are written as a quoted Python tuple:",
        "  --config.strategies=\"('random','crc:group_size=10')\"",
        "",
        "other flags:",
        "  --workdir=DIR     the run directory (default runs/NAME)",
        "  --mock_data=N     run on tfds.testing.mock_data with N random examples per split",
        "",
        "examples:",
        "  python -m experiments.main --config=digits_fixmatch --workdir=runs/digits_fixmatch",
        "  python -m experiments.main --config=svhn_mt --config.smoke=True --mock_data=400 "
        "--workdir=runs/svhn_smoke",
        "",
    ]
    return "\n".join(lines)
