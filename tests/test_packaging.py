"""What `pip install crc_jax` holds: a core without TensorFlow, two extras whose absence is
one line naming them, one version printed by both command lines.

The built wheel itself, installed into a fresh environment, is tested in tests/test_wheel.py
(slow); here the declarations in pyproject.toml and the behaviour without an extra, shown
by hiding the extra's modules from this process (`sys.modules[name] = None`: neither
`import` nor `importlib.util.find_spec` finds them).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import crc_jax
from crc_jax import acquisition, data
from crc_jax.runtime import extras
from crc_jax.data import tfds_sets
from crc_jax.errors import MissingExtra

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
PULL_TENSORFLOW = {"tensorflow", "tensorflow-datasets", "neural-tangents", "tf2jax"}


def dist_name(requirement: str) -> str:
    """'neural-tangents==0.6.5' -> 'neural-tangents' (PEP 503 normalized)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def test_core_requirements_pull_no_tensorflow():
    core = {dist_name(r) for r in PROJECT["dependencies"]}
    assert not core & PULL_TENSORFLOW, core & PULL_TENSORFLOW
    assert {"jax", "flax", "optax", "orbax-checkpoint", "pillow", "flask"} <= core


def test_each_extra_provides_the_modules_its_check_looks_for():
    optional = PROJECT["optional-dependencies"]
    providers = metadata.packages_distributions()   # module -> distributions (this venv)
    for extra, modules in extras.EXTRAS.items():
        declared = {dist_name(r) for r in optional[extra]}
        for module in modules:
            assert {dist_name(d) for d in providers[module]} & declared, (extra, module)
    # make test installs every extra the tests exercise
    test_extra = " ".join(optional["test"])
    for extra in extras.EXTRAS:
        assert re.search(rf"crc_jax\[[^]]*\b{extra}\b", test_extra), extra


def test_only_crc_jax_is_packaged_and_the_version_has_one_home():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["packages"]["find"]["include"] == ["crc_jax*"]
    assert "static/*.html" in setuptools["package-data"]["crc_jax.project"]
    assert "py.typed" in setuptools["package-data"]["crc_jax"]
    assert (ROOT / "crc_jax" / "py.typed").is_file()
    assert "version" in PROJECT["dynamic"] and "version" not in PROJECT
    assert setuptools["dynamic"]["version"] == {"attr": "crc_jax.__version__"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    first = next(line for line in changelog.splitlines() if line.startswith("## "))
    assert crc_jax.__version__ in first, first
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def one_line(err: BaseException, extra: str) -> str:
    message = str(err)
    assert "\n" not in message and f"pip install 'crc_jax[{extra}]'" in message, message
    return message


def test_a_tfds_set_without_the_tfds_extra_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    assert extras.missing("tfds") == ["tensorflow_datasets"]
    with pytest.raises(MissingExtra) as err:
        data.num_classes("svhn")            # what the config check asks first
    assert "'svhn'" in one_line(err.value, "tfds")
    with pytest.raises(MissingExtra) as err:
        tfds_sets.load("cifar10")
    one_line(err.value, "tfds")
    assert isinstance(err.value, ImportError)
    assert data.num_classes("digits") == 10   # the embedded sets need no extra


def test_crc_infinite_without_neural_tangents_fails_when_built(monkeypatch):
    monkeypatch.setitem(sys.modules, "neural_tangents", None)
    with pytest.raises(MissingExtra) as err:
        acquisition.from_spec("crc_infinite", {"group_size": 5})
    assert "crc_infinite" in one_line(err.value, "infinite")
    acquisition.from_spec("crc", {"group_size": 5}) # the empirical-NTK CRC needs no extra


HIDE_AND_RUN = """
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = ["experiments.main"] + sys.argv[2:]
runpy.run_module("experiments.main", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("hidden, config, extra", [
    ("tensorflow_datasets", "svhn_mt", "tfds"),
    ("neural_tangents", "digits", "infinite"),      # the digits config lists crc_infinite
])
def test_experiments_main_without_an_extra_is_one_line_and_exit_2(tmp_path, hidden, config, extra):
    proc = subprocess.run([sys.executable, "-c", HIDE_AND_RUN, hidden, f"--config={config}",
                           "--config.smoke=True", f"--workdir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("error: ") and f"pip install 'crc_jax[{extra}]'" in lines[-1]
    assert not (tmp_path / "run").exists()      # refused before any work


def test_both_command_lines_print_the_version(capsys):
    from crc_jax.project import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"crc-jax {crc_jax.__version__}"
    proc = subprocess.run([sys.executable, "-m", "experiments.main", "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == f"crc_jax {crc_jax.__version__}"
