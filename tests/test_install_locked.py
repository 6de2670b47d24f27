"""requirements/install_locked.py (the Makefile's locked install) never moves jax under an
installed GPU/TPU plugin.

Real pip in a fresh venv, offline: small wheels stand for jax, jaxlib, a CUDA plugin and
a project needing jax (pip reads only their metadata), served with --no-index
--find-links. The plain locked install (what $(STAMP) ran before) moves the plugin's jax
0.12.0 to the lock's 0.10.2; the script asks pip's dry-run report first and keeps it.
"""

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "requirements" / "install_locked.py"
sys.path.insert(0, str(SCRIPT.parent))
import install_locked  # noqa: E402

LOCK = "# the tested set\njax==0.10.2\njaxlib==0.10.2\nsix==1.0\n"


def wheel(folder: Path, name: str, version: str, requires=()) -> None:
    """A minimal valid wheel of `name` (metadata only)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {f"{info}/METADATA": "Metadata-Version: 2.1\nName: {}\nVersion: {}\n{}".format(
                 name, version, "".join(f"Requires-Dist: {r}\n" for r in requires)),
             f"{info}/WHEEL": ("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                               "Tag: py3-none-any\n")}
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(venv python, environment for pip: offline, the wheels folder)."""
    tmp = tmp_path_factory.mktemp("install_locked")
    wheels = tmp / "wheels"
    wheels.mkdir()
    for version in ("0.10.2", "0.12.0"):
        wheel(wheels, "jax", version, [f"jaxlib=={version}"])
        wheel(wheels, "jaxlib", version)
    wheel(wheels, "jax-cuda13-plugin", "0.12.0")
    wheel(wheels, "six", "1.0")
    wheel(wheels, "app", "1.0", ["jax>=0.10", "six"])
    wheel(wheels, "oldapp", "1.0", ["jax<0.11"])         # cannot live beside the plugin's jax
    venv.create(tmp / "venv", with_pip=True)
    (tmp / "lock.txt").write_text(LOCK)
    environ = dict(os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels),
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
    environ.pop("PYTHONPATH", None)
    return tmp / "venv" / "bin" / "python", environ, tmp / "lock.txt"


def pip(env, *args) -> None:
    python, environ, _ = env
    subprocess.run([str(python), "-m", "pip", "-q", *args], env=environ, check=True)


def versions(env) -> dict:
    python, environ, _ = env
    out = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], env=environ,
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("==") for line in out.split() if "==" in line)


def run_script(env, *requirements):
    python, environ, lock = env
    return subprocess.run([str(python), str(SCRIPT), "--lock", str(lock), *requirements],
                          env=environ, capture_output=True, text=True, timeout=300)


@pytest.fixture
def plugin_stack(env):
    """The venv holds jax 0.12.0 with its CUDA plugin, as after pip install '.[cuda13]'."""
    pip(env, "uninstall", "-y", "jax", "jaxlib", "jax-cuda13-plugin", "app", "oldapp", "six")
    pip(env, "install", "jax==0.12.0", "jax-cuda13-plugin==0.12.0")
    return env


def test_the_plain_locked_install_moves_jax_under_the_plugin(plugin_stack):
    # what the Makefile's $(STAMP) rule ran before: pip install -c lock ...
    _, _, lock = plugin_stack
    pip(plugin_stack, "install", "-c", str(lock), "app")
    got = versions(plugin_stack)
    assert got["jax"] == "0.10.2" and got["jax-cuda13-plugin"] == "0.12.0"   # mismatched


def test_locked_install_keeps_the_plugins_jax(plugin_stack):
    proc = run_script(plugin_stack, "app")
    assert proc.returncode == 0, proc.stderr
    got = versions(plugin_stack)
    assert (got["jax"], got["jaxlib"], got["jax-cuda13-plugin"]) == ("0.12.0", "0.12.0", "0.12.0")
    assert got["app"] == "1.0" and got["six"] == "1.0"          # the rest of the lock applies
    assert "jax-cuda13-plugin 0.12.0 installed: keeping jax 0.12.0, jaxlib 0.12.0" in proc.stdout
    assert "jax==0.10.2" in proc.stdout and "warning" not in proc.stderr


def test_locked_install_refuses_with_the_commands_when_jax_would_have_to_move(plugin_stack):
    proc = run_script(plugin_stack, "oldapp")
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the locked set cannot be installed beside jax-cuda13-plugin 0.12.0")
    assert "-m pip install oldapp" in line and "-m pip uninstall -y jax-cuda13-plugin" in line
    assert versions(plugin_stack)["jax"] == "0.12.0" and "oldapp" not in versions(plugin_stack)


def test_without_a_plugin_the_lock_applies_and_a_mismatched_plugin_is_named(env):
    pip(env, "uninstall", "-y", "jax", "jaxlib", "jax-cuda13-plugin", "app", "oldapp", "six")
    pip(env, "install", "jax==0.12.0")
    proc = run_script(env, "app")
    assert proc.returncode == 0, proc.stderr
    assert versions(env)["jax"] == "0.10.2" and proc.stdout == ""
    # the state the old rule left (a 0.12.0 plugin beside jaxlib 0.10.2) is named, with a fix
    pip(env, "install", "--no-deps", "jax-cuda13-plugin==0.12.0")
    proc = run_script(env, "app")
    assert proc.returncode == 0, proc.stderr
    assert "warning: jax-cuda13-plugin 0.12.0 does not match jaxlib 0.10.2" in proc.stderr


def test_kept_constraints_drop_the_lock_pins_of_the_kept_names():
    text = install_locked.kept_constraints(LOCK + "Jax_Cuda13_Plugin==0.10.2\n",
                                           {"jax": "0.12.0", "jaxlib": "0.12.0",
                                            "jax-cuda13-plugin": "0.12.0"})
    assert text.splitlines() == ["# the tested set", "six==1.0", "jax==0.12.0",
                                 "jax-cuda13-plugin==0.12.0", "jaxlib==0.12.0"]


def test_moves_reads_pips_report():
    report = {"install": [{"metadata": {"name": "JAX", "version": "0.10.2"}},
                          {"metadata": {"name": "jaxlib", "version": "0.12.0"}},
                          {"metadata": {"name": "six", "version": "1.0"}}]}
    assert install_locked.moves(report, {"jax": "0.12.0", "jaxlib": "0.12.0"}) == \
        {"jax": ("0.12.0", "0.10.2")}
