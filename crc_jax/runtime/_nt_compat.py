"""Import neural-tangents 0.6.5 on a current JAX.

neural-tangents' last release (0.6.5, December 2023; the project is unmaintained) imports
JAX internals that later JAX releases moved or made private. `import_neural_tangents()`
gives each moved name back at its old address, *only when it is missing*, before the
import, so on an old JAX (where every name still exists) it changes nothing. It also keeps
`neural_tangents.experimental` (which imports TensorFlow's jax2tf at package import) from
running: crc_jax uses `stax` and `empirical_ntk_fn`, never the TF-based experimental code.

Private: imported only where neural-tangents is used, never at `import crc_jax`.
The maths behind the restored names is guarded by tests/test_nt_compat.py (closed-form
arc-cosine kernels) and the empirical-NTK oracle tests in tests/test_ntk.py.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_done = False


def _restore(module: types.ModuleType, name: str, value, moved_in: str) -> None:
    """Set module.name = value unless it already exists (`moved_in` documents why)."""
    del moved_in  # the reason lives in the call site; kept as an argument so each line says it
    if not hasattr(module, name):
        setattr(module, name, value)


def _patch_jax() -> None:
    import jax
    import jax.core
    import jax.extend.core as extend_core
    import jax.interpreters.ad as ad
    from jax._src import ad_util
    from jax._src import core as src_core
    from jax._src import util as src_util

    core = jax.core
    # Moved to jax.extend.core (jax 0.4.36 deprecated the jax.core aliases; removed by 0.7).
    for name in ("Jaxpr", "JaxprEqn", "Literal", "Var", "Primitive"):
        _restore(core, name, getattr(extend_core, name), "jax 0.4.36 → jax.extend.core")
    # Made private (still public in jax 0.10 but listed defensively for 0.11/0.12).
    for name in ("ShapedArray", "Value", "AbstractValue", "eval_context"):
        _restore(core, name, getattr(src_core, name), "jax 0.6–0.11 → jax._src.core")
    # jax.interpreters.ad.zeros_like_p: removed from the public module in jax 0.6.
    _restore(ad, "zeros_like_p", ad_util.zeros_like_p, "jax 0.6 → jax._src.ad_util")
    # jax.util (safe_map/safe_zip) was removed as a module in jax 0.7.
    if "jax.util" not in sys.modules:
        try:
            importlib.import_module("jax.util")
        except ImportError:
            util: Any = types.ModuleType("jax.util")
            util.safe_map, util.safe_zip = src_util.safe_map, src_util.safe_zip
            sys.modules["jax.util"] = util
            setattr(jax, "util", util)  # noqa: B010 (jax has no such attribute for mypy)
    util = sys.modules["jax.util"]
    for name in ("safe_map", "safe_zip"):
        _restore(util, name, getattr(src_util, name), "jax 0.7 → jax._src.util")


def _skip_experimental() -> None:
    """Register an empty `neural_tangents.experimental` so its jax2tf import never runs."""
    name = "neural_tangents.experimental"
    if name not in sys.modules:
        stub = types.ModuleType(name)
        stub.__doc__ = ("Not loaded by crc_jax: it imports TensorFlow's jax2tf "
                        "(see crc_jax.runtime._nt_compat).")
        stub.__path__ = []  # a package, so `import neural_tangents.experimental.x` fails cleanly
        sys.modules[name] = stub


def import_neural_tangents():
    """`import neural_tangents`, with the moved JAX names restored first. Idempotent.
    Without the `infinite` extra: one `MissingExtra` line naming it."""
    global _done
    from crc_jax.runtime import extras

    extras.require("infinite", "the infinite-width NTK (neural-tangents)")
    if not _done:
        _patch_jax()
        _skip_experimental()
        _done = True
    import neural_tangents
    return neural_tangents
