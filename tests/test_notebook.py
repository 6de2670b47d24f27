"""experiments/colab_tpu.ipynb: valid, and it runs end to end on CPU, so it cannot rot.

The slow test executes every cell with nbclient in a fresh kernel, with the notebook's
own test switches (environment variables): no install (this checkout is already
installed), `--config.smoke=True`, TFDS mock data; then checks the outputs and the
report the run wrote.
"""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "colab_tpu.ipynb"


def code_cells(nb) -> list[str]:
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def test_notebook_is_valid_and_has_no_stored_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = code_cells(nb)
    assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")
    assert any("pip" in c and "CRC_JAX_SOURCE" in c for c in cells)            # installs
    assert any("jax.devices()" in c for c in cells)                             # shows devices
    assert any("experiments.main" in c and "--config=svhn_mt" in c for c in cells)
    assert any("report.md" in c for c in cells)


def notebook_install_functions() -> dict:
    nb = json.loads(NOTEBOOK.read_text())
    source = next(c for c in code_cells(nb) if "def install_plan" in c)
    namespace = {"Path": Path}
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


def test_checkout_of_a_folder_is_that_folder():
    checkout = notebook_install_functions()["checkout"]
    assert checkout(str(ROOT)) == ROOT.resolve()
    assert (checkout(str(ROOT)) / "experiments" / "main.py").is_file()   # run from there


def test_install_plan_keeps_a_current_runtime_jax_and_its_libtpu():
    plan = notebook_install_functions()["install_plan"]
    url = "git+https://example.org/crc_jax.git"
    req, keep = plan(url, "tpu", {"jax": "0.12.0.1", "jaxlib": "0.12.0.1", "libtpu": "0.0.44"})
    assert req == f"crc_jax[tfds] @ {url}"                # no tpu extra: it would pull another jax
    assert keep == ["jax==0.12.0.1", "jaxlib==0.12.0.1", "libtpu==0.0.44"]
    req, keep = plan(url, "tpu", {"jax": "0.4.38", "jaxlib": "0.4.38"})  # too old: the extra decides
    assert req == f"crc_jax[tfds,tpu] @ {url}" and keep == []
    assert plan(url, "cuda13", {}) == (f"crc_jax[tfds,cuda13] @ {url}", [])


def test_installed_reads_this_environments_jax():
    installed = notebook_install_functions()["installed"]
    import jax
    assert installed()["jax"] == jax.__version__


@pytest.mark.slow
def test_notebook_runs_end_to_end_on_cpu(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    workdir = tmp_path / "run"
    monkeypatch.setenv("CRC_JAX_SKIP_INSTALL", "1")
    monkeypatch.setenv("CRC_JAX_SMOKE", "1")
    monkeypatch.setenv("CRC_JAX_MOCK_DATA", "400")
    monkeypatch.setenv("CRC_JAX_WORKDIR", str(workdir))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # the kernel and the run it starts import this checkout
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT),
                                                                   os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()

    text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []))
    assert "skipping the install" in text
    assert any(s in text for s in ("CpuDevice", "TFRT_CPU", "cpu:0"))    # jax.devices() printed
    assert "--config=svhn_mt" in text and "--config.smoke=True" in text
    report = (workdir / "report.md").read_text()
    assert "random" in report and "crc" in report
    journals = sorted(workdir.glob("*/trial_0/journal.jsonl"))
    assert len(journals) == 2
    for journal in journals:
        entries = [json.loads(line) for line in journal.read_text().splitlines()]
        assert [e["num_labeled"] for e in entries] == [120, 140, 160]    # Q0=120, Q=20, 2 steps
    shown = [out for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []) if out.get("output_type") == "display_data"]
    assert any("text/markdown" in out["data"] and "crc" in out["data"]["text/markdown"]
               for out in shown)
