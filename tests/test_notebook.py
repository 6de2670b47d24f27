"""experiments/colab_tpu.ipynb: valid, and it runs end to end on CPU, so it cannot rot.

The slow test executes every cell with nbclient in a fresh kernel, with the notebook's
own test switches (environment variables): no install (this checkout is already
installed), ACCELERATOR "cpu" (so device.require=cpu), smoke, TFDS mock data. The kernel
is given 2 CPU devices by a setting that lives in its process alone (jax_num_cpu_devices,
as a Colab kernel alone holds its TPU): the run must print the device list the devices
cell printed, which a run in a subprocess (1 device) would not.
"""

import json
import logging
import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "colab_tpu.ipynb"
DEVICE_LIST = re.compile(r"devices: (\d+ \w+ device\(s\) \[[^\]]*\])")


def code_cells(nb) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_is_valid_and_has_no_stored_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = code_cells(nb)
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert any("pip" in c and "CRC_JAX_SOURCE" in c for c in cells)            # installs
    assert sum("CRC_JAX_SOURCE = " in c for c in cells) == 1                    # one place
    assert any("jax.devices()" in c and "crc_devices.start(DEVICE)" in c for c in cells)
    run = next(c for c in cells if "experiment.run(" in c)                     # in the kernel
    assert '"svhn_mt"' in run and '"device.require": DEVICE' in run
    assert not any('"experiments.main"' in c for c in cells)                     # no subprocess run
    assert any("report.md" in c for c in cells)
    text = "".join("".join(c["source"]) for c in nb["cells"])
    assert "v5e" in text and "assert not changed" not in text


def notebook_install_functions() -> dict:
    nb = json.loads(NOTEBOOK.read_text())
    source = next(c for c in code_cells(nb) if "def install_plan" in c)
    namespace = {"Path": Path, "subprocess": subprocess, "sys": sys, "os": os}
    exec(source.split("\n\n\nif SKIP_INSTALL")[0], namespace)  # the functions only
    return namespace


def test_requirement_builds_a_pip_url_from_a_folder_or_a_url():
    requirement = notebook_install_functions()["requirement"]
    # the tfds extra always: the notebook runs svhn_mt, read by TFDS
    assert requirement(str(ROOT), "tpu") == f"crc_jax[tfds,tpu] @ {ROOT.resolve().as_uri()}"
    assert requirement("git+https://example.org/crc_jax.git", "cuda12") == \
        "crc_jax[tfds,cuda12] @ git+https://example.org/crc_jax.git"
    assert requirement("git+https://example.org/crc_jax.git", "cpu") == \
        "crc_jax[tfds] @ git+https://example.org/crc_jax.git"


def test_checkout_of_a_folder_is_that_folder_and_an_empty_source_stops():
    checkout = notebook_install_functions()["checkout"]
    assert checkout(str(ROOT)) == ROOT.resolve()
    assert (checkout(str(ROOT)) / "experiments" / "main.py").is_file()   # run from there
    for empty in ("", "  "):
        with pytest.raises(RuntimeError, match="set CRC_JAX_SOURCE .* or tick UPLOAD_WHEEL"):
            checkout(empty)
    assert "YOUR_ORG" not in NOTEBOOK.read_text()                     # no made-up address


def test_the_form_fields_start_empty():
    """The parameters cell is a Colab form: the source is empty and the upload unticked
    until the user says; the environment (the tests' switches) fills them otherwise."""
    cell = code_cells(json.loads(NOTEBOOK.read_text()))[0]
    assert 'CRC_JAX_SOURCE = ""  # @param {type:"string"}' in cell
    assert 'UPLOAD_WHEEL = False  # @param {type:"boolean"}' in cell


# ---------------------------------------------- the install cell's two routes, run here

def experiments_zip(path: Path) -> Path:
    """What the notebook asks for beside a wheel: the checkout's experiments/ folder, as
    `zip -r experiments.zip experiments` writes it in the checkout."""
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted((ROOT / "experiments").rglob("*")):
            if file.is_file() and "__pycache__" not in file.parts:
                archive.write(file, file.relative_to(ROOT).as_posix())
    return path


def run_install_cell(monkeypatch, tmp_path, env: dict) -> tuple[dict, list]:
    """The parameters and install cells, executed here as a kernel would, in tmp_path;
    pip's install (into this test's environment) is recorded, not run: the slow test
    below gives pip the requirement for real."""
    for name in ("CRC_JAX_SOURCE", "CRC_JAX_UPLOAD_WHEEL", "CRC_JAX_UPLOAD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"CRC_JAX_SKIP_INSTALL": "0", "CRC_JAX_ACCELERATOR": "cpu", **env}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    namespace: dict = {}
    cells = code_cells(json.loads(NOTEBOOK.read_text()))
    for source in cells[:2]:                        # the parameters, the install
        exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    return namespace, calls


def pip_requirement(calls: list) -> str:
    (pip,) = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
    assert pip[0] == sys.executable and pip[-2:] == ["-c", "keep_jax.txt"]
    return pip[-3]


def test_the_install_cell_stops_with_the_message_when_no_source_is_given(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError) as err:
        run_install_cell(monkeypatch, tmp_path, {})
    assert str(err.value).startswith("say where crc_jax comes from: set CRC_JAX_SOURCE")
    assert "make dist" in str(err.value)
    assert list(tmp_path.iterdir()) == []                           # nothing cloned or written


def test_the_install_cell_installs_from_a_source_folder(monkeypatch, tmp_path):
    ns, calls = run_install_cell(monkeypatch, tmp_path, {"CRC_JAX_SOURCE": str(ROOT)})
    assert pip_requirement(calls) == f"crc_jax[tfds] @ {ROOT.resolve().as_uri()}"
    assert ns["CHECKOUT"] == ROOT.resolve() and Path.cwd() == ROOT.resolve()


def test_the_install_cell_installs_an_uploaded_wheel_and_runs_from_experiments_zip(
        monkeypatch, tmp_path):
    given = tmp_path / "given"
    given.mkdir()
    wheel = given / f"crc_jax-{metadata.version('crc_jax')}-py3-none-any.whl"
    wheel.write_bytes(b"the wheel's bytes")
    uploads = os.pathsep.join([str(wheel), str(experiments_zip(given / "experiments.zip"))])
    work = tmp_path / "colab"
    work.mkdir()
    ns, calls = run_install_cell(monkeypatch, work, {"CRC_JAX_UPLOAD_WHEEL": "1",
                                                     "CRC_JAX_UPLOAD": uploads})
    folder = work / "crc_jax_upload"
    assert pip_requirement(calls) == f"crc_jax[tfds] @ {(folder / wheel.name).as_uri()}"
    assert (folder / wheel.name).read_bytes() == b"the wheel's bytes"
    assert ns["CHECKOUT"] == folder and Path.cwd() == folder
    assert (folder / "experiments" / "main.py").read_text() == \
        (ROOT / "experiments" / "main.py").read_text()                 # the run's code
    assert str(folder) == sys.path[0]


def test_an_upload_without_experiments_zip_or_a_wheel_says_what_is_missing(tmp_path):
    from_upload = notebook_install_functions()["from_upload"]
    wheel = {"crc_jax-0.1.0-py3-none-any.whl": b"w"}
    with pytest.raises(RuntimeError, match="upload experiments.zip with the wheel"):
        from_upload(wheel, tmp_path / "a")
    with pytest.raises(RuntimeError, match="upload one crc_jax wheel"):
        from_upload({"experiments.zip": b""}, tmp_path / "b")
    with pytest.raises(RuntimeError, match="holds no experiments/main.py"):
        empty = tmp_path / "empty.zip"
        zipfile.ZipFile(empty, "w").close()
        from_upload({**wheel, "experiments.zip": empty.read_bytes()}, tmp_path / "c")


@pytest.mark.slow
def test_pip_takes_the_requirement_the_notebook_builds_for_a_real_wheel(tmp_path):
    """`make dist`'s wheel ($CRC_JAX_DIST, or built here as tests/test_wheel.py does):
    pip resolves the notebook's requirement for it to crc_jax of this version with the
    tfds extra (a dry run without dependencies: nothing is installed)."""
    dist = Path(os.environ["CRC_JAX_DIST"]) if os.environ.get("CRC_JAX_DIST") else tmp_path
    if not os.environ.get("CRC_JAX_DIST"):
        proc = subprocess.run([sys.executable, "-m", "build", "-q", "--wheel", "--outdir",
                               str(dist), str(ROOT)], capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = dist.glob("crc_jax-*-py3-none-any.whl")
    funcs = notebook_install_functions()
    uploaded = funcs["from_upload"]({wheel.name: wheel.read_bytes(), "experiments.zip":
                                     experiments_zip(tmp_path / "experiments.zip").read_bytes()},
                                    tmp_path / "upload")
    req = funcs["requirement"](str(uploaded[0]), "cpu")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps",
                           "--quiet", "--report", "-", req], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (item,) = json.loads(proc.stdout)["install"]
    assert item["metadata"]["name"] == "crc_jax"
    assert item["metadata"]["version"] == metadata.version("crc_jax")
    assert item["requested_extras"] == ["tfds"]
    assert item["download_info"]["url"] == uploaded[0].as_uri()


def test_install_plan_keeps_a_current_runtime_jax_and_upgrades_an_old_one_with_its_plugin():
    plan = notebook_install_functions()["install_plan"]
    url = "git+https://example.org/crc_jax.git"
    req, keep = plan(url, "tpu", {"jax": "0.12.0.1", "jaxlib": "0.12.0.1", "libtpu": "0.0.44"})
    assert req == f"crc_jax[tfds] @ {url}"                # no tpu extra: it would pull another jax
    assert keep == ["jax==0.12.0.1", "jaxlib==0.12.0.1", "libtpu==0.0.44"]
    # too old: upgraded, with the extra of the plugin the runtime has (not ACCELERATOR's)
    req, keep = plan(url, "tpu", {"jax": "0.4.38", "jaxlib": "0.4.38", "libtpu": "0.0.8"})
    assert req == f"crc_jax[tfds,tpu] @ {url}" and keep == []
    req, keep = plan(url, "tpu", {"jax": "0.7.2", "jaxlib": "0.7.2", "jax-cuda12-plugin": "0.7.2"})
    assert req == f"crc_jax[tfds,cuda12] @ {url}" and keep == []
    assert plan(url, "cuda13", {}) == (f"crc_jax[tfds,cuda13] @ {url}", [])


def test_install_note_says_what_was_upgraded_and_never_fails():
    note = notebook_install_functions()["install_note"]
    stack = {"jax": "0.12.0.1", "jaxlib": "0.12.0.1", "libtpu": "0.0.44"}
    assert note(stack, dict(stack)).startswith("jax stack kept")
    old = {"jax": "0.7.2", "jaxlib": "0.7.2", "libtpu": "0.0.17"}
    text = note(old, {"jax": "0.10.2", "jaxlib": "0.10.2", "libtpu": "0.0.21"})
    assert text.startswith("the runtime's jax 0.7.2 is older than crc_jax needs (>= 0.10): upgraded")
    assert "jax 0.7.2 -> 0.10.2" in text and "libtpu 0.0.17 -> 0.0.21" in text
    assert note({}, {"jax": "0.10.2", "jaxlib": "0.10.2"}) == \
        "installed jax (none) -> 0.10.2, jaxlib (none) -> 0.10.2"


def test_installed_reads_this_environments_jax():
    installed = notebook_install_functions()["installed"]
    assert installed()["jax"] == metadata.version("jax")


def test_notebook_cells_run_the_experiment_in_this_process(tmp_path, monkeypatch, capsys):
    """The code cells, executed here as a kernel would (the test switches: no install,
    ACCELERATOR "cpu", smoke, mock data): the devices cell prints this process's devices
    and the run cell calls experiments.main.run in this same process with a config that
    validates and requires the CPU. The run itself is recorded, not trained (the slow
    nbclient test below trains it)."""
    import jax

    from crc_jax import config as config_lib
    from crc_jax.runtime import command
    from experiments import main as experiment

    workdir = tmp_path / "run"
    for name, value in {"CRC_JAX_SKIP_INSTALL": "1", "CRC_JAX_ACCELERATOR": "cpu",
                        "CRC_JAX_SMOKE": "1", "CRC_JAX_MOCK_DATA": "400",
                        "CRC_JAX_WORKDIR": str(workdir)}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "path", list(sys.path))          # the install cell adds the checkout
    calls = []
    monkeypatch.setattr(experiment, "run", lambda config, workdir, *, mock_data=0:
                        calls.append((os.getpid(), config, workdir, mock_data)))
    loggers = [logging.getLogger(n) for n in ("", *command.QUIET_LOGGERS,
                                              *command.KEPT_LOGGERS)]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    try:
        namespace: dict = {}
        for source in code_cells(json.loads(NOTEBOOK.read_text()))[:-1]:   # not the report
            exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    finally:
        for lg, handlers, level in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
    printed = capsys.readouterr().out
    assert "skipping the install" in printed
    n = jax.device_count()
    names = ", ".join(f"cpu:{d.id}" for d in jax.devices())
    assert f"devices: {n} cpu device(s) [{names}] (cpu); jax {jax.__version__}; " \
           "device.require=cpu" in printed
    assert len(calls) == 1
    pid, config, run_dir, mock_data = calls[0]
    assert pid == os.getpid() and run_dir == str(workdir) and mock_data == 400
    assert config.device.require == "cpu" and config.smoke and config.dataset.name == "svhn"
    assert list(config.strategies) == ["random", "crc"] and config.al.steps == 2
    config_lib.validate(config)                               # what run() checks first


def outputs_text(cell) -> str:
    return "\n".join(out.get("text", "") for out in cell.get("outputs", []))


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_cpu_in_the_kernels_process(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    workdir = tmp_path / "run"
    monkeypatch.setenv("CRC_JAX_SKIP_INSTALL", "1")
    monkeypatch.setenv("CRC_JAX_ACCELERATOR", "cpu")
    monkeypatch.setenv("CRC_JAX_SMOKE", "1")
    monkeypatch.setenv("CRC_JAX_MOCK_DATA", "400")
    monkeypatch.setenv("CRC_JAX_WORKDIR", str(workdir))
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)     # device.require=cpu decides
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # this kernel's own devices: 2 CPU devices, a setting a subprocess would not inherit
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        'import jax\njax.config.update("jax_num_cpu_devices", 2)'))
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    text = "\n".join(outputs_text(c) for c in code)
    assert "skipping the install" in text
    devices_cell = next(c for c in code if "crc_devices.start(DEVICE)" in c.source)
    run_cell = next(c for c in code if "load_config(" in c.source)
    printed = DEVICE_LIST.findall(outputs_text(devices_cell))
    assert printed == ["2 cpu device(s) [cpu:0, cpu:1]"], outputs_text(devices_cell)
    assert "device.require=cpu" in outputs_text(devices_cell)
    assert "\n  cpu:1\n" in outputs_text(devices_cell)                      # jax.devices() printed
    # the run's start-up line: the kernel's devices, so it ran in the kernel's process
    assert DEVICE_LIST.findall(outputs_text(run_cell)) == printed, outputs_text(run_cell)[-3000:]
    assert "--config=svhn_mt" in text and '--config.smoke="True"' in text
    report = (workdir / "report.md").read_text()
    assert "random" in report and "crc" in report
    assert json.loads((workdir / "config.json").read_text())["device"]["require"] == "cpu"
    journals = sorted(workdir.glob("*/trial_0/journal.jsonl"))
    assert len(journals) == 2
    for journal in journals:
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        assert [e["num_labeled"] for e in entries] == [120, 140, 160]    # Q0=120, Q=20, 2 steps
    shown = [out for cell in code for out in cell.get("outputs", [])
             if out.get("output_type") == "display_data"]
    assert any("text/markdown" in out["data"] and "crc" in out["data"]["text/markdown"]
               for out in shown)
