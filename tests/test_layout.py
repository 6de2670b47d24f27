"""The shape of crc_jax (docs/design.md, "Layout"): no import cycles, the two applications
(crc_jax/run, crc_jax/project) never import each other, and the library imports neither.

Every import counts, at module level or inside a function (a lazy import is still a
dependency); `from pkg import name` counts as importing pkg.name when that is a module.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "crc_jax"
APPS = ("crc_jax.run", "crc_jax.project", "crc_jax.cli")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The crc_jax modules `name` imports (resolved to modules where they are modules)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES}
    return found - {name}


GRAPH = {name: imports_of(name) for name in MODULES}


def owner(name: str) -> str:
    return next((app for app in APPS if name == app or name.startswith(app + ".")), "library")


def test_the_graph_is_read():   # the walk itself must see imports, or the tests below pass empty
    assert "crc_jax.durable" in GRAPH["crc_jax.run.loop"]
    assert "crc_jax.acquisition.spec" in GRAPH["crc_jax.acquisition"]


def test_no_import_cycles():
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(GRAPH[node]):
            # a package's __init__ importing its own submodules is how packages re-export
            if node == nxt.rpartition(".")[0] and MODULES[node].name == "__init__.py":
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("a, b", [("crc_jax.run", "crc_jax.project"),
                                  ("crc_jax.project", "crc_jax.run")])
def test_the_applications_never_import_each_other(a, b):
    bad = {m: sorted(i for i in GRAPH[m] if owner(i) == b) for m in GRAPH if owner(m) == a}
    assert not {m: i for m, i in bad.items() if i}


def test_the_library_imports_neither_application():
    bad = {m: sorted(i for i in GRAPH[m] if owner(i) != "library")
           for m in GRAPH if owner(m) == "library"}
    assert not {m: i for m, i in bad.items() if i}
