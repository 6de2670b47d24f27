"""Every benchmark script and experiments module imports: a name removed from the library
(as `crc_jax.acquisition.get` once was) breaks them at once, not on the day someone
re-measures."""

import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts)
    for p in [*ROOT.glob("experiments/*.py"), *ROOT.glob("experiments/benchmarks/*.py")]
    if p.name != "__init__.py")


def test_there_are_benchmarks_to_import():
    assert "experiments.benchmarks.acquisition" in MODULES and len(MODULES) > 10


@pytest.mark.parametrize("module", MODULES)
def test_module_imports(module):
    importlib.import_module(module)
