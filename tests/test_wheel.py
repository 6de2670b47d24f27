"""The built wheel, installed without extras into a fresh environment beside the locked jax.

pip installs the *wheel* (not this checkout) into a new venv with `-c requirements/lock.txt`,
and everything then runs from outside the checkout, with no PYTHONPATH: `import crc_jax`,
`crc-jax --help/--version`, a labeling round (`crc-jax init/next/import/status`) on a small
folder of image files, the labeling page fetched over HTTP (package data: its HTML), and a
TFDS config, which must stop with one line naming the `tfds` extra. TensorFlow must not be
in that environment. Missing package data, a module importing TensorFlow at import time, or
a core requirement that pulls TensorFlow back all fail here.

`make dist` builds sdist and wheel into dist/ and runs this file on them (CRC_JAX_DIST=dist);
otherwise the test builds both itself (`python -m build`, the wheel from the sdist).
Slow: a few minutes, mostly pip (`make test-slow` or `make dist`).
"""

from __future__ import annotations

import csv
import email.parser
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

import crc_jax
from image_folder import write_digits

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
VERSION = crc_jax.__version__
NO_TENSORFLOW = ("tensorflow", "tensorflow-datasets", "neural-tangents", "tf2jax")
CLASSES = ",".join(str(d) for d in range(10))
FAST = ["--model", "mlp", "--width", "16", "--epochs", "1", "--steps-per-epoch", "2", "--no-flip"]


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("timeout", 900)
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)


def clean_env() -> dict:
    """This environment without what would import the checkout instead of the wheel."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return dict(env, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """A folder holding crc_jax's sdist and wheel: $CRC_JAX_DIST, or built here."""
    given = os.environ.get("CRC_JAX_DIST")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("dist")
    proc = run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def one(folder: Path, pattern: str) -> Path:
    (found,) = sorted(folder.glob(pattern))   # exactly one
    return found


def packaged_sources() -> set[str]:
    """The files of the crc_jax package that must be installed (no caches)."""
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "crc_jax").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_wheel_and_sdist_hold_the_package_its_data_and_metadata(dist):
    wheel = one(dist, f"crc_jax-{VERSION}-py3-none-any.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    info = f"crc_jax-{VERSION}.dist-info"
    assert {n.split("/")[0] for n in names} == {"crc_jax", info}        # no experiments/, tests/
    assert packaged_sources() <= names, sorted(packaged_sources() - names)
    assert {"crc_jax/project/static/label.html", "crc_jax/py.typed",
            f"{info}/licenses/LICENSE", f"{info}/entry_points.txt"} <= names
    meta = email.parser.Parser().parsestr(zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode())
    assert meta["Version"] == VERSION and meta["License-Expression"] == "Apache-2.0"
    core = {re.match(r"[\w.-]+", r).group(0).lower().replace("_", "-")
            for r in meta.get_all("Requires-Dist") if "extra ==" not in r}
    assert "jax" in core and not core & set(NO_TENSORFLOW), core
    assert {"tfds", "infinite"} <= set(meta.get_all("Provides-Extra"))

    sdist = one(dist, f"crc_jax-{VERSION}.tar.gz")
    members = {m.split("/", 1)[1] for m in tarfile.open(sdist).getnames() if "/" in m}
    assert {"LICENSE", "pyproject.toml", "README.md"} <= members
    assert {p for p in packaged_sources()} <= members


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel, without extras, pinned to the locked set."""
    where = tmp_path_factory.mktemp("core") / "venv"
    assert run([sys.executable, "-m", "venv", where]).returncode == 0
    wheel = one(dist, f"crc_jax-{VERSION}-py3-none-any.whl")
    proc = run([where / "bin" / "python", "-m", "pip", "install", "-q", "-c", LOCK, wheel],
               env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return where


@pytest.fixture
def outside(tmp_path) -> Path:
    """A working directory outside the checkout: nothing there shadows the installed package."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    return work


def test_the_core_environment_has_no_tensorflow_and_keeps_the_locked_jax(venv, outside):
    py = venv / "bin" / "python"
    for name in NO_TENSORFLOW:
        assert run([py, "-m", "pip", "show", name], env=clean_env()).returncode != 0, name
    locked = dict(line.split("==") for line in LOCK.read_text().splitlines()
                  if "==" in line and not line.startswith("#"))
    shown = run([py, "-m", "pip", "show", "jax", "flax"], env=clean_env()).stdout
    for name in ("jax", "flax"):
        assert f"Name: {name}\nVersion: {locked[name]}\n" in shown, shown
    # every module of the package imports there, and none of them imports TensorFlow
    code = ("import importlib, pkgutil, sys, crc_jax\n"
            "mods = [m.name for m in pkgutil.walk_packages(crc_jax.__path__, 'crc_jax.')]\n"
            "[importlib.import_module(m) for m in mods]\n"
            "assert 'tensorflow' not in sys.modules and 'neural_tangents' not in sys.modules\n"
            "print(crc_jax.__file__, len(mods))")
    proc = run([py, "-c", code], cwd=outside, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    path, count = proc.stdout.split()
    assert Path(path).is_relative_to(venv) and int(count) > 50
    proc = run([py, "-c", "import experiments"], cwd=outside, env=clean_env())
    assert proc.returncode != 0 and "No module named 'experiments'" in proc.stderr


def test_crc_jax_help_version_and_a_labeling_round(venv, outside):
    cli = venv / "bin" / "crc-jax"
    env = clean_env()
    proc = run([cli, "--version"], cwd=outside, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == f"crc-jax {VERSION}"
    proc = run([cli, "--help"], cwd=outside, env=env)
    assert proc.returncode == 0 and "init" in proc.stdout and "label" in proc.stdout

    truth = write_digits(outside / "images", 30, broken=False)
    project = outside / "project"
    proc = run([cli, "init", project, "--images", outside / "images", "--classes", CLASSES,
                "--image-size", "8"], cwd=outside, env=env)
    assert proc.returncode == 0 and "30 images" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    proc = run([cli, "next", project, "--budget", "10", "--cold-start", "random"], cwd=outside,
               env=env)
    assert proc.returncode == 0 and "10 images queued" in proc.stdout, proc.stderr[-2000:]
    with open(project / "queue.csv", newline="") as f:
        queued = [row["path"] for row in csv.DictReader(f)]
    answers = outside / "answers.csv"
    answers.write_text("path,label\n" + "".join(f"{p},{truth[p]}\n" for p in queued))
    proc = run([cli, "import", project, answers], cwd=outside, env=env)
    assert proc.returncode == 0 and "10 new answers" in proc.stdout, proc.stderr[-2000:]
    proc = run([cli, "next", project, "--budget", "5", *FAST], cwd=outside, env=env)
    assert proc.returncode == 0 and "5 images queued" in proc.stdout, proc.stderr[-2000:]
    proc = run([cli, "status", project], cwd=outside, env=env)
    assert proc.returncode == 0 and "10 labeled" in proc.stdout and "2 rounds" in proc.stdout, \
        proc.stdout


def test_the_labeling_page_is_served_from_the_installed_package(venv, outside):
    cli = venv / "bin" / "crc-jax"
    write_digits(outside / "images", 12, broken=False)
    project = outside / "project"
    assert run([cli, "init", project, "--images", outside / "images", "--classes", CLASSES,
                "--image-size", "8"], cwd=outside, env=clean_env()).returncode == 0
    server = subprocess.Popen([str(cli), "label", project, "--port", "0", *FAST], cwd=outside,
                              env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        line = server.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + server.stderr.read(2000) if server.poll() is not None else line
        with urllib.request.urlopen(url.group(0), timeout=60) as page:
            html = page.read().decode()
        assert page.status == 200 and "<title>crc-jax: label images</title>" in html
    finally:
        server.terminate()
        server.wait(timeout=60)


def checkout_without_the_package(root: Path) -> Path:
    """experiments/ copied alone: run from there, crc_jax comes from the installed wheel."""
    shutil.copytree(ROOT / "experiments", root / "experiments",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize("config, extra", [("svhn_mt", "tfds"), ("digits", "infinite")])
def test_a_config_needing_an_extra_stops_with_one_line_naming_it(venv, outside, config, extra):
    repo = checkout_without_the_package(outside)
    proc = run([venv / "bin" / "python", "-m", "experiments.main", f"--config={config}",
                "--config.smoke=True", f"--workdir={outside / 'run'}"], cwd=repo, env=clean_env())
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("error: ") and f"pip install 'crc_jax[{extra}]'" in lines[-1]
    proc = run([venv / "bin" / "python", "-m", "experiments.main", "--version"], cwd=repo,
               env=clean_env())
    assert proc.returncode == 0 and proc.stdout.strip() == f"crc_jax {VERSION}"
