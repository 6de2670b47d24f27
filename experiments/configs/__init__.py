"""The experiment configs: one module per paper table or study, each `get_config(arg)`.

`load_config(NAME, overrides)` is the config `--config=NAME[:variant]` and `--config.a.b=v`
give, without absl (a notebook, experiments.retrain's overrides use the same rules):
the config is locked, so an override naming a field it lacks fails, and values are cast
to the field's type by ml_collections (a value of another type fails).
"""

from __future__ import annotations

import ast
import importlib


def load_config(name: str, overrides: dict | None = None):
    """The config of `NAME[:variant]` with `overrides` ({"a.b": value}) set."""
    from experiments.configs.base import set_fields

    module, _, variant = name.partition(":")
    config = importlib.import_module(f"experiments.configs.{module}").get_config(variant or None)
    config.lock()   # an override cannot add a field
    return set_fields(config, dict(overrides or {}))


def overrides(config, args: list[str]) -> dict:
    """{"a.b": value} of `--config.a.b=TEXT` arguments, TEXT read as the type of the field
    it sets in `config`: a string field keeps TEXT, any other reads it as a Python literal
    (true/false in any case as booleans; else TEXT, which setting the field then refuses).
    ValueError, one line, for another argument or a field `config` lacks."""
    out = {}
    for arg in args:
        if not arg.startswith("--config.") or "=" not in arg:
            raise ValueError(f"unrecognized argument {arg!r} (overrides read --config.FIELD=VALUE)")
        dotted, text = arg[len("--config."):].split("=", 1)
        node = config
        try:
            for part in dotted.split("."):
                node = node[part]
        except (KeyError, AttributeError, TypeError):
            raise ValueError(f"--config.{dotted}: no such config field") from None
        out[dotted] = text if isinstance(node, str) else literal(text)
    return out


def literal(text: str):
    """TEXT as a Python literal, true/false in any case as booleans; else TEXT itself."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
