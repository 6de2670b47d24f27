"""No silent fallback to the CPU (crc_jax.runtime.devices), batch sizes on 1/2/4/8 devices
(crc_jax.config.validate), float64 kernels on the host when the default device is a TPU
(crc_jax.infinite).

This machine has no GPU or TPU: a run that asks for one must stop at start, exit status
2, with one line carrying JAX's own reason. Device counts are forced CPU devices in
subprocesses (XLA_FLAGS=--xla_force_host_platform_device_count=N, as tests/test_sharding.py).
"""

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from crc_jax import infinite
from crc_jax.runtime import devices, xla_env
from crc_jax.errors import DeviceUnavailable
from crc_jax import config as config_lib

ROOT = Path(__file__).resolve().parents[1]


def env_with(devices_count: int = 1, **extra) -> dict:
    flags = os.environ.get("XLA_FLAGS", "")
    if devices_count > 1:
        flags = f"{flags} --xla_force_host_platform_device_count={devices_count}"
    env = dict(os.environ, XLA_FLAGS=flags.strip())
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.pop("JAX_PLATFORMS", None)
    return dict(env, **extra)


# ------------------------------------------------------------------ start-up line, the check

def test_start_up_line_names_backend_devices_and_requirement():
    line = devices.start("auto")
    assert line.startswith(f"devices: 1 cpu device(s) [cpu:0] (cpu); jax {jax.__version__}; "
                           "device.require=auto")
    devices.check("cpu")


@pytest.mark.parametrize("platform, jax_says", [
    ("gpu", "Unknown backend: 'gpu' requested"),
    ("tpu", "backend 'tpu' failed to initialize"),   # libtpu missing: what JAX recorded
])
def test_asking_for_a_missing_accelerator_is_one_line_with_jaxs_reason(platform, jax_says):
    with pytest.raises(DeviceUnavailable) as err:
        devices.check(platform, option="--device")
    message = str(err.value)
    assert message.startswith(f"--device={platform}, but JAX runs on cpu (1 device): JAX: ")
    assert jax_says in message and "\n" not in message
    assert f"no {platform.upper()} plugin installed: pip install 'jax[" in message


def test_reason_keeps_the_error_jax_recorded_and_names_the_installed_plugin(monkeypatch):
    from jax._src import xla_bridge
    monkeypatch.setitem(xla_bridge._backend_errors, "cuda",
                        "INTERNAL: no supported devices found for platform CUDA\n(details)")
    monkeypatch.setattr(devices, "installed_plugins", lambda p: {"jax-cuda13-plugin": "0.12.0"})
    reason = devices.reason("gpu")
    assert reason.startswith("JAX: backend 'cuda' failed to initialize: INTERNAL: no supported "
                             "devices found for platform CUDA (details)")
    assert "jax-cuda13-plugin 0.12.0 installed beside jax" in reason and "\n" not in reason


def test_an_unknown_requirement_is_refused():
    with pytest.raises(DeviceUnavailable, match="'cuda' is not one of: auto, cpu, gpu, tpu"):
        devices.check("cuda")
    from experiments.configs.base import get_base_config
    from crc_jax.errors import ConfigError
    c = get_base_config()
    c.device.require = "cuda"
    with pytest.raises(ConfigError, match="config.device.require: 'cuda' is not one of"):
        config_lib.validate(c)


def run_seconds(cmd, **kw):
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, **kw)
    return proc, time.perf_counter() - start


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_a_run_that_asks_for_an_accelerator_stops_at_start_with_one_line(platform, tmp_path):
    workdir = tmp_path / "run"
    proc, _ = run_seconds([sys.executable, "-m", "experiments.main", "--config=digits",
                           f"--config.device.require={platform}", f"--workdir={workdir}"],
                          env=env_with())
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: device.require={platform}, but JAX runs on cpu")
    assert "JAX: " in lines[0] and "plugin" in lines[0]
    assert not workdir.exists()                  # stopped before any work


def test_crc_jax_rounds_take_device_and_stop_on_a_missing_tpu(tmp_path):
    proc, _ = run_seconds([sys.executable, "-m", "crc_jax.project.cli", "next", str(tmp_path / "p"),
                           "--budget", "2", "--device", "tpu"], env=env_with())
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: --device=tpu, but JAX runs on cpu (1 device): JAX: ")
    proc, _ = run_seconds([sys.executable, "-m", "crc_jax.project.cli", "next", str(tmp_path / "p"),
                           "--budget", "2"], env=env_with(2))
    assert "devices: 2 cpu device(s) [cpu:0, cpu:1] (cpu)" in proc.stderr     # then its own error
    assert "--device=auto" in proc.stderr


# ------------------------------------- a JAX that cannot start at all: JAX_PLATFORMS, plugins

NO_START = "error: JAX could not start its backend: "


def assert_one_line_cannot_start(proc, *, says: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr[-3000:]
    assert proc.stderr.startswith(NO_START) and says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_jax_platforms_cuda_on_a_cpu_machine_is_one_line_in_experiments_main(tmp_path):
    workdir = tmp_path / "run"
    proc, _ = run_seconds([sys.executable, "-m", "experiments.main", "--config=digits",
                           "--config.smoke=True", f"--workdir={workdir}"],
                          env=env_with(JAX_PLATFORMS="cuda"))
    assert_one_line_cannot_start(proc, says="JAX_PLATFORMS=cuda is set")
    if not devices._hardware_visible("gpu"):
        assert "it started none of the platforms asked for ('cuda'); no NVIDIA GPU visible" \
            in proc.stderr
    assert not workdir.exists()


def test_jax_platforms_cuda_on_a_cpu_machine_is_one_line_in_crc_jax_next(tmp_path):
    proc, _ = run_seconds([sys.executable, "-m", "crc_jax.project.cli", "next", str(tmp_path / "p"),
                           "--budget", "2"], env=env_with(JAX_PLATFORMS="cuda"))
    assert_one_line_cannot_start(proc, says="JAX_PLATFORMS=cuda is set")
    assert not (tmp_path / "p").exists()


# A crc-jax command whose first JAX call is a jitted one: JAX's traceback filtering drops
# its own frames from the error, and the CLI must still know it for a JAX that cannot start.
CLI_FIRST_JAX_CALL_JITTED = """
import sys
import jax
from crc_jax.project import cli
cli.COMMANDS["status"] = lambda args: jax.jit(lambda x: x + 1)(1)
sys.exit(cli.main(["status", "anywhere"]))
"""


@pytest.mark.parametrize("env, says", [
    ({"JAX_PLATFORMS": "cuda"}, "JAX_PLATFORMS=cuda is set"),
    ({"JAX_PLATFORMS": "no_such_platform"}, "Unable to initialize backend 'no_such_platform'"),
    ({"PJRT_NAMES_AND_LIBRARY_PATHS": "broken:/nonexistent/libbroken.so"},   # a plugin error
     "Failed to open /nonexistent/libbroken.so"),
], ids=["cuda", "unknown", "plugin"])
def test_a_jax_that_cannot_start_is_one_line_wherever_the_cli_first_calls_it(env, says):
    proc, _ = run_seconds([sys.executable, "-c", CLI_FIRST_JAX_CALL_JITTED],
                          env=env_with(**env))
    assert_one_line_cannot_start(proc, says=says)


@pytest.mark.parametrize("module", ["train_step", "xla_cpu", "accel"])
def test_a_jax_that_cannot_start_is_one_line_in_the_benchmarks(module):
    """train_step starts JAX in its own process, xla_cpu measures in children (started
    first in a child of its own), accel asks `python -m crc_jax.runtime.devices`."""
    proc, _ = run_seconds([sys.executable, "-m", f"experiments.benchmarks.{module}"],
                          env=env_with(JAX_PLATFORMS="cuda"))
    assert_one_line_cannot_start(proc, says="JAX_PLATFORMS=cuda is set")
    assert proc.stdout == ""


def test_every_benchmark_runs_its_main_through_the_one_line_guard():
    bench = ROOT / "experiments" / "benchmarks"
    with_main = [p for p in sorted(bench.glob("*.py")) if "\ndef main(" in p.read_text()]
    assert len(with_main) >= 10
    for path in with_main:
        tail = path.read_text().split('if __name__ == "__main__":', 1)[1]
        assert "command(main)" in tail, path.name


def test_backend_failure_is_none_for_other_errors_and_a_started_jax():
    jax.devices()
    assert devices.backend_failure(ValueError("something else")) is None
    try:
        jax.jit(lambda x: x.no_such_attribute)(1.0)
    except AttributeError as err:
        assert devices.backend_failure(err) is None


def test_require_cpu_starts_jax_on_the_cpu_alone():
    code = ("from crc_jax.runtime import devices; devices.select('cpu'); import jax;"
            "from jax._src import xla_bridge as x;"
            "print(jax.config.jax_platforms, sorted(x.backends()), sorted(x._backend_errors))")
    proc, _ = run_seconds([sys.executable, "-c", code], env=env_with())
    # without select JAX also tries the TPU backend (and records its failure)
    assert proc.stdout.split() == ["cpu", "['cpu']", "[]"], proc.stderr


def test_jaxs_backend_warnings_pass_the_cli_logging(capsys):
    from crc_jax.runtime import command
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        command.setup_logging()
        logging.getLogger("jax._src.xla_bridge").warning(
            "An NVIDIA GPU may be present on this machine, but a CUDA-enabled jaxlib is not "
            "installed. Falling back to cpu.")
        logging.getLogger("jax._src.dispatch").warning("some other jax warning")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "Falling back to cpu." in err and "some other jax warning" not in err


# ------------------------------------------------------------ batch sizes on 1/2/4/8 devices

PAPER_CONFIGS = ("svhn_mt", "svhn_mt_pseudo_al", "cifar10_fixmatch", "cifar10_fixmatch:100",
                 "cifar100_fixmatch", "cifar10_fixmatch_pseudo_al", "cifar10_group_size",
                 "cifar10_last_vs_full", "transfer")
BATCH_SCRIPT = """
import json, logging, sys
import jax
from crc_jax import config as config_lib
from experiments.configs import load_config
records = []
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
out = {"devices": jax.device_count()}
for name in sys.argv[1:]:
    c = load_config(name)
    reference = c.train.batch_size
    config_lib.validate(c)
    out[name] = [reference, c.train.batch_size, c.train.requested_batch_size]
print("JSON" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def batches():
    """{device count: {config: [reference batch, batch used, recorded]}, and the log}."""
    out = {}
    for n in (1, 2, 4, 8):
        proc = subprocess.run([sys.executable, "-c", BATCH_SCRIPT, *PAPER_CONFIGS], cwd=ROOT,
                              env=env_with(n), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        got = json.loads(proc.stdout.split("JSON", 1)[1])
        assert got.pop("devices") == n
        out[n] = (got, proc.stderr)
    return out


def test_paper_batch_sizes_run_on_1_2_4_and_8_devices(batches):
    for n, (got, log) in batches.items():
        for name, (reference, used, recorded) in got.items():
            assert used % n == 0, (n, name)
            if reference % n == 0:
                assert (used, recorded) == (reference, 0), (n, name)
            else:   # the nearest multiple, the config's value recorded, and said in the log
                assert abs(used - reference) < n and recorded == reference, (n, name)
                assert (f"train.batch_size {reference} does not split over the {n} devices: "
                        f"the run uses {used}") in log


def test_svhn_mt_keeps_50_where_it_divides_and_records_the_move(batches):
    used = {n: got["svhn_mt"][1:] for n, (got, _) in batches.items()}
    assert used == {1: [50, 0], 2: [50, 0], 4: [52, 50], 8: [48, 50]}


def test_nearest_multiple():
    assert [config_lib.nearest_multiple(v, 4) for v in (1, 4, 5, 6, 7, 50)] == [4, 4, 4, 8, 8, 52]
    assert config_lib.nearest_multiple(50, 8) == 48 and config_lib.nearest_multiple(3, 8) == 8


def test_a_moved_batch_is_in_config_json_and_the_report(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "experiments.main", "--config=digits",
                           "--config.trials=1", "--config.al.steps=1", "--config.strategies=('random',)",
                           "--config.train.max_epochs=1", "--config.train.steps_per_epoch=2",
                           "--config.train.batch_size=15", "--config.train.progress=False",
                           "--config.dataset.train_size=200", "--config.dataset.test_size=50",
                           f"--workdir={workdir}"], cwd=ROOT, env=env_with(2),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "devices: 2 cpu device(s) [cpu:0, cpu:1]" in proc.stderr
    assert "train.batch_size 15 does not split over the 2 devices: the run uses 16" in proc.stderr
    train = json.loads((workdir / "config.json").read_text())["train"]
    assert (train["batch_size"], train["requested_batch_size"]) == (16, 15)
    note = "run: train.batch_size 16, not the config's 15, which did not split over the devices"
    assert note in (workdir / "report.md").read_text() and note in proc.stdout


# --------------------------------------------- crc_infinite's float64 kernels beside a TPU

PLACEMENT_SCRIPT = """
import json, sys
import jax
import numpy as np
from crc_jax import infinite, models
jax.config.update("jax_default_device", jax.devices()[1])   # stands for the accelerator
if sys.argv[1] == "tpu":
    infinite.default_platform = lambda: "tpu"                # the decision, forced
seen = []
kernel = infinite.infinite_kernel_fn(models.get("mlp", num_classes=3, width=8, depth=2))
def recording(a, b):
    seen.append(sorted(str(d) for d in a.devices()))
    return kernel(a, b)
x = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
k = infinite.infinite_trace_ntk(recording, x, num_classes=3, batch_size=4)
print("JSON" + json.dumps({"seen": seen, "k": k.tolist(), "dtype": str(k.dtype)}))
"""


def test_float64_kernels_run_on_the_host_cpu_when_the_default_device_is_a_tpu():
    runs = {}
    for platform in ("cpu", "tpu"):
        proc = subprocess.run([sys.executable, "-c", PLACEMENT_SCRIPT, platform], cwd=ROOT,
                              env=env_with(2), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[platform] = json.loads(proc.stdout.split("JSON", 1)[1])
    assert {d for s in runs["cpu"]["seen"] for d in s} == {"cpu:1"}  # the default device
    assert {d for s in runs["tpu"]["seen"] for d in s} == {"cpu:0"}  # the host CPU
    np.testing.assert_allclose(runs["tpu"]["k"], runs["cpu"]["k"], rtol=1e-12)


STRATEGY_PLACEMENT_SCRIPT = """
import json, sys
import jax
import numpy as np
from crc_jax import data, infinite, models
from crc_jax.acquisition import Context
from crc_jax.acquisition.crc import infinite as crc_infinite
jax.config.update("jax_default_device", jax.devices()[1])   # stands for the accelerator
if sys.argv[1] == "tpu":
    infinite.default_platform = lambda: "tpu"                # the decision, forced
seen = set()
made = infinite.in_float64
def recording(x):
    out = made(x)
    seen.update(str(d) for d in out.devices())
    return out
infinite.in_float64 = recording
x = np.asarray(data.load("digits").x_train[:30])
ctx = Context(apply_fn=None, variables=None, x=x, labeled=np.arange(6),
              unlabeled=np.arange(6, 30), num_classes=3,
              model=models.get("mlp", num_classes=3, width=8, depth=2))
scores = crc_infinite.make_crc_infinite(group_size=4).score_groups(ctx, np.arange(6, 30).reshape(-1, 4))
print("JSON" + json.dumps({"seen": sorted(seen), "scores": np.asarray(scores).tolist()}))
"""


def test_crc_infinite_scores_on_the_host_cpu_beside_a_tpu_and_score_alike():
    """The whole strategy (the kernel rows and the within-group blocks): every float64
    array on cpu:0 under the TPU decision, on the default device otherwise, same scores."""
    runs = {}
    for platform in ("cpu", "tpu"):
        proc = subprocess.run([sys.executable, "-c", STRATEGY_PLACEMENT_SCRIPT, platform], cwd=ROOT,
                              env=env_with(2), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[platform] = json.loads(proc.stdout.split("JSON", 1)[1])
    assert runs["cpu"]["seen"] == ["cpu:1"] and runs["tpu"]["seen"] == ["cpu:0"]
    assert min(runs["cpu"]["scores"]) > 0
    np.testing.assert_allclose(runs["tpu"]["scores"], runs["cpu"]["scores"], rtol=1e-12)


def test_float64_device_is_none_off_a_tpu_and_the_cpu_on_one(monkeypatch):
    assert infinite.float64_device() is None
    monkeypatch.setattr(infinite, "default_platform", lambda: "tpu")
    assert infinite.float64_device() == jax.devices("cpu")[0]


# ------------------------------------- docs/accelerators.md's first-run lines match the code

DOC = ROOT / "docs" / "accelerators.md"
EXPECTED_LINE = re.compile(r"devices: (?P<n>\d+) (?P<platform>gpu|tpu) device\(s\) \[[^\]]*\] "
                           r"\((?P<kind>[^)]*)\)(?: in (?P<procs>\d+) processes \(this is process "
                           r"k\))?; jax 0\.x\.y; (?P<option>--device|device\.require)=(?P<req>\w+)")


def as_typed(devices_count: int = 1) -> dict:
    """A shell's environment, as the docs' commands were typed: no test XLA_FLAGS."""
    env = env_with(devices_count)
    added = ("--xla_backend_optimization_level=0", xla_env.YNN_OFF)   # the tests', crc_jax's
    env["XLA_FLAGS"] = " ".join(f for f in env["XLA_FLAGS"].split() if f not in added)
    if not env["XLA_FLAGS"]:
        del env["XLA_FLAGS"]
    return env


def first_run_section() -> str:
    text = DOC.read_text()
    return text.split("## First run", 1)[1].split("\n## ", 1)[0]


def test_first_run_cpu_transcript_is_what_the_commands_print():
    """The `$ python -m crc_jax.runtime.devices ...` transcript tried on this CPU machine, rerun."""
    lines = first_run_section().splitlines()
    tried = [(lines[i][2:], lines[i + 1]) for i, line in enumerate(lines)
             if line.startswith("$ python -m crc_jax.runtime.devices")]
    assert [cmd.split()[-1] for cmd, _ in tried] == ["tpu", "gpu", "cpu"]
    for cmd, documented in tried:
        platform = cmd.split()[-1]
        if platform != "cpu" and devices._hardware_visible(platform):
            continue   # a machine with that hardware prints something else, rightly
        proc = subprocess.run([sys.executable, *cmd.split()[1:]], cwd=ROOT, env=as_typed(),
                              capture_output=True, text=True, timeout=300)
        printed = (proc.stdout + proc.stderr).strip()
        assert proc.returncode == (0 if platform == "cpu" else 2), printed
        assert printed == documented.replace("jax 0.10.2", f"jax {jax.__version__}"), cmd


def test_first_run_16_device_line_and_pod_error_are_what_the_commands_print():
    section = first_run_section()
    documented = re.search(r"`(devices: 16 cpu device\(s\)[^`]*)`", section).group(1)
    proc = subprocess.run([sys.executable, "-m", "crc_jax.runtime.devices", "--device", "cpu"], cwd=ROOT,
                          env=as_typed(16), capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip() == documented.replace("jax 0.10.2", f"jax {jax.__version__}")
    documented = re.search(r"`(error: jax\.distributed\.initialize\(\) failed:[^`]*)`",
                           " ".join(section.split())).group(1)
    proc = subprocess.run([sys.executable, "-m", "crc_jax.runtime.devices", "--device", "tpu",
                           "--distributed"], cwd=ROOT, env=as_typed(), capture_output=True,
                          text=True, timeout=300)
    assert (proc.returncode, proc.stderr.strip()) == (2, documented)


def test_first_run_expected_accelerator_lines_are_the_start_up_lines_format(monkeypatch):
    """Each "expected" line of the GPU/TPU checklist is what `describe` writes for that many
    devices of that kind (stand-in device objects: no accelerator here)."""
    from types import SimpleNamespace
    found = [m for m in EXPECTED_LINE.finditer(first_run_section())]
    assert {m["platform"] for m in found} == {"gpu", "tpu"} and len(found) == 5, found
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(jax, "__version__", "0.x.y")
    for m in found:
        n, procs = int(m["n"]), int(m["procs"] or 1)
        fake = [SimpleNamespace(platform=m["platform"], id=i, device_kind=m["kind"])
                for i in range(n)]
        monkeypatch.setattr(jax, "devices", lambda fake=fake: fake)
        monkeypatch.setattr(jax, "default_backend", lambda m=m: m["platform"])
        monkeypatch.setattr(jax, "process_count", lambda procs=procs: procs)
        monkeypatch.setattr(jax, "process_index", lambda: "k")
        assert devices.describe(m["req"], option=m["option"]) == m.group(0)


# ------------------------------------------------- two processes on one GPU: the study script

def test_study_script_starts_every_run_allocating_gpu_memory_on_demand(tmp_path):
    """experiments/run_digits_study.sh, copied into a scratch tree and run with a stand-in
    Python that records its environment: every run sees XLA_PYTHON_CLIENT_PREALLOCATE=false
    (two processes on one GPU), and a value set by the caller is kept."""
    (tmp_path / "experiments").mkdir()
    (tmp_path / "runs").mkdir()
    script = tmp_path / "experiments" / "run_digits_study.sh"
    script.write_text((ROOT / "experiments" / "run_digits_study.sh").read_text())
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "${XLA_PYTHON_CLIENT_PREALLOCATE:-unset}" >> "$SEEN"\n')
    fake.chmod(0o755)
    for preset, expected in ((None, "false"), ("true", "true")):
        seen = tmp_path / f"seen-{preset}"
        env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
        env.update(PYTHON=str(fake), STRATEGIES="random crc", SEEN=str(seen))
        if preset:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = preset
        subprocess.run(["bash", str(script)], env=env, check=True, timeout=60)
        assert seen.read_text().split() == [expected] * 3      # two strategies, supervised
