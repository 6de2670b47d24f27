"""The benchmarks issue 21 added: the PyTorch FixMatch peer, the train-step options, bench-cpu.

torch is not in the locked set: the peer's tests skip without it (the benchmark then
prints one line instead of the peer's row).
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_torch_peer_is_wrn28_2_with_crc_jax_parameter_count():
    pytest.importorskip("torch")
    from experiments.benchmarks import torch_peer

    model = torch_peer.build(num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 1_467_610  # = crc_jax's wrn28_2


def test_torch_peer_step_learns_and_updates_the_ema():
    torch = pytest.importorskip("torch")
    from experiments.benchmarks import torch_peer

    torch.manual_seed(0)
    torch.set_num_threads(1)   # tiny tensors: OpenMP threads only spin on a busy machine
    model = torch_peer.build(num_classes=3, depth=10, widen=1)
    step = torch_peer.FixMatchStep(model, mu=1, lr=0.05, threshold=0.0)
    x_l, y_l = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    x_u = torch.rand(4, 3, 8, 8)
    ema_before = [p.clone() for p in step.ema.parameters()]
    losses = [float(step(x_l, y_l, x_u, x_u + 0.01)) for _ in range(8)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, step.ema.parameters()))


def test_interleave_round_trips():
    torch = pytest.importorskip("torch")
    from experiments.benchmarks.torch_peer import de_interleave, interleave

    x = torch.arange(30).reshape(15, 2)
    assert torch.equal(de_interleave(interleave(x, 5), 5), x)
    assert not torch.equal(interleave(x, 5), x)


def test_train_step_benchmark_chunks_and_skips_the_peer_off_shape(capsys):
    from experiments.benchmarks import train_step

    train_step.main(["--model", "mlp", "--image_size", "4", "--channels", "1", "--batch_size", "4",
                     "--mu", "1", "--steps", "3", "--steps_per_dispatch", "2",
                     "--algorithms", "fixmatch"])
    out = capsys.readouterr().out
    assert "| fixmatch (2 steps a call) | 12 |" in out
    assert "PyTorch peer: skipped (it is WRN-28-2 on 32x32x3 only)" in out
    assert "YNNPACK default:" in out


def test_bench_cpu_rejects_an_unknown_part():
    out = subprocess.run([sys.executable, "-m", "experiments.benchmarks.cpu_all", "--parts",
                          "xla_cpu,nope"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "unknown ['nope']" in out.stderr
