"""neural-tangents through crc_jax.runtime._nt_compat: the maths, not just the import.

The compatibility module restores JAX internals that neural-tangents 0.6.5 imports. If a
restored name ever means something else in a later JAX, the import may still succeed
while the kernels go wrong; these tests compare neural-tangents' infinite-width NNGP and
NTK of ReLU MLPs with the closed-form arc-cosine recursion (Cho & Saul 2009; Jacot et al.
2018; Lee et al. 2019), written here independently, in float64.
"""

import subprocess
import sys

import jax
import numpy as np
import pytest

from crc_jax.runtime import _nt_compat


def arccos_kernels(x1, x2, *, depth, w_std, b_std):
    """(NNGP, NTK) of serial([Dense, Relu] * depth, Dense) in NTK parameterization.

    Dense: Σ ← σw²·Σ + σb² (the first layer sees x·x'/d_in), Θ ← Σ + σw²·Θ.
    ReLU:  Σ ← √(k k') (sin θ + (π − θ) cos θ) / 2π,  Θ ← Θ · (π − θ) / 2π,
    with cos θ = Σ(x, x') / √(Σ(x, x) Σ(x', x')).
    """
    d = x1.shape[1]
    cross = w_std ** 2 * x1 @ x2.T / d + b_std ** 2
    diag1 = w_std ** 2 * np.sum(x1 * x1, 1) / d + b_std ** 2
    diag2 = w_std ** 2 * np.sum(x2 * x2, 1) / d + b_std ** 2
    ntk = cross.copy()
    for _ in range(depth):
        norm = np.sqrt(np.outer(diag1, diag2))
        theta = np.arccos(np.clip(cross / norm, -1.0, 1.0))
        relu_cross = norm * (np.sin(theta) + (np.pi - theta) * np.cos(theta)) / (2 * np.pi)
        relu_dot = (np.pi - theta) / (2 * np.pi)
        # E[relu(u)²] = k/2 on the diagonal (θ = 0)
        diag1, diag2 = w_std ** 2 * diag1 / 2 + b_std ** 2, w_std ** 2 * diag2 / 2 + b_std ** 2
        cross = w_std ** 2 * relu_cross + b_std ** 2
        ntk = cross + w_std ** 2 * ntk * relu_dot
    return cross, ntk


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("w_std,b_std", [(1.0, 0.0), (1.5, 0.1)])
def test_stax_relu_mlp_kernels_equal_arccos_recursion(depth, w_std, b_std):
    stax = _nt_compat.import_neural_tangents().stax
    rng = np.random.default_rng(depth)
    x1, x2 = rng.normal(size=(6, 5)), rng.normal(size=(4, 5))
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=w_std, b_std=b_std, parameterization="ntk"), stax.Relu()]
    _, _, kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=w_std, b_std=b_std, parameterization="ntk"))
    with jax.enable_x64(True):
        k = kernel_fn(x1, x2, ("nngp", "ntk"))
        nngp, ntk = np.asarray(k.nngp, np.float64), np.asarray(k.ntk, np.float64)
    assert nngp.dtype == np.float64
    ref_nngp, ref_ntk = arccos_kernels(x1, x2, depth=depth, w_std=w_std, b_std=b_std)
    np.testing.assert_allclose(nngp, ref_nngp, rtol=1e-6)
    np.testing.assert_allclose(ntk, ref_ntk, rtol=1e-6)


def test_arccos_reference_is_not_trivially_close_to_a_linear_kernel():
    """The recursion must see the ReLU: without it the NTK would be depth·(linear kernel)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    _, ntk = arccos_kernels(x, x, depth=2, w_std=1.0, b_std=0.0)
    linear = x @ x.T / 4
    assert np.max(np.abs(ntk - 3 * linear)) > 0.1


def test_restore_is_a_no_op_where_the_name_exists():
    import types
    module = types.SimpleNamespace(existing="original")
    _nt_compat._restore(module, "existing", "replacement", "test")
    _nt_compat._restore(module, "missing", "restored", "test")
    assert module.existing == "original" and module.missing == "restored"


def test_patch_keeps_public_jax_names_that_still_exist():
    import jax.core
    before = {n: getattr(jax.core, n) for n in ("ShapedArray", "eval_context") if hasattr(jax.core, n)}
    _nt_compat.import_neural_tangents()
    for name, obj in before.items():
        assert getattr(jax.core, name) is obj


def test_import_crc_jax_does_not_import_neural_tangents_and_nt_does_not_import_tensorflow():
    code = ("import sys, crc_jax; assert 'neural_tangents' not in sys.modules; "
            "from crc_jax.runtime._nt_compat import import_neural_tangents; import_neural_tangents(); "
            "assert 'tensorflow' not in sys.modules, 'neural_tangents.experimental ran'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
