"""Adding a strategy, an SSL algorithm and a data set is a module with its registrations:
no list of names to edit. A module written here registers one of each; experiments.main
lists them in --help and runs them end to end (docs/design.md, "Adding a ...")."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TOY = textwrap.dedent('''
    """Toy registrations: 3 Gaussian blobs in 2-D, supervised under another name, and a
    strategy that takes the lowest unlabeled indices."""
    import dataclasses

    import numpy as np

    from crc_jax import data
    from crc_jax.acquisition.registry import register as register_strategy
    from crc_jax.ssl.base import register as register_ssl
    from crc_jax.ssl.supervised import make_supervised


    @data.register("toy_blobs", num_classes=3, flip=False)
    def load_blobs(data_dir):
        rng = np.random.default_rng(0)
        centers = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], np.float32)
        y = rng.integers(0, 3, 340).astype(np.int32)
        x = (centers[y] + 0.3 * rng.standard_normal((340, 2))).astype(np.float32)
        return x[:240], y[:240], x[240:], y[240:]


    @register_ssl("toy_ssl")
    def make_toy_ssl(**kwargs):
        return dataclasses.replace(make_supervised(**kwargs), name="toy_ssl")


    @register_strategy("toy_lowest")
    def make_toy_lowest():
        return lambda ctx, budget, key: np.sort(ctx.unlabeled)[:budget]
''')

RUNNER = textwrap.dedent('''
    import sys
    import toy_extension  # noqa: F401  (the registrations)
    from experiments import main
    sys.argv = ["experiments.main", *sys.argv[1:]]
    sys.exit(main.run_main())
''')


def run(tmp_path, *args):
    (tmp_path / "toy_extension.py").write_text(TOY)
    (tmp_path / "run_main.py").write_text(RUNNER)
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, str(tmp_path / "run_main.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)


def test_help_lists_what_a_module_registered(tmp_path):
    proc = run(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any("toy_lowest" in line for line in lines)
    assert any("dataset.name" in line and "toy_blobs" in line for line in lines)
    assert any("ssl.name" in line and "toy_ssl" in line for line in lines)


def test_a_smoke_run_uses_the_registered_strategy_ssl_and_data(tmp_path):
    workdir = tmp_path / "run"
    proc = run(tmp_path, "--config=moons_pi", "--config.smoke=True",
               "--config.dataset.name=toy_blobs", "--config.ssl.name=toy_ssl",
               "--config.strategies=('toy_lowest',)", "--config.al.initial_size=3",
               "--config.al.query_size=3", "--config.al.group_size=1", f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((workdir / "config.json").read_text())
    assert (config["dataset"]["name"], config["ssl"]["name"]) == ("toy_blobs", "toy_ssl")
    lines = (workdir / "toy_lowest" / "trial_0" / "journal.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in lines]
    labeled = set(steps[0]["initial"])
    for step in steps[:-1]:   # each acquisition: the lowest indices not yet labeled
        expected = sorted(set(range(240)) - labeled)[:3]
        assert step["acquired"] == expected
        labeled |= set(expected)
