"""The shape of crc_jax (docs/design.md, "Layout"): no import cycles, the two applications
(crc_jax/run, crc_jax/project, the latter with its CLI) never import each other, and the
library imports neither; the folders hold what the design says: process plumbing in
crc_jax/runtime (below the mathematics), CRC's files in crc_jax/acquisition/crc, the
page and the ML backend over one shared web module.

Every import counts, at module level or inside a function (a lazy import is still a
dependency); `from pkg import name` counts as importing pkg.name when that is a module.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "crc_jax"
APPS = ("crc_jax.run", "crc_jax.project", "crc_jax.project.cli")


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


# The top level of the library: the mathematics and what every part shares; process
# plumbing lives in runtime/, CRC in acquisition/crc/, each application in its folder.
TOP_LEVEL = {"crc_jax", "crc_jax.config", "crc_jax.errors", "crc_jax.registry",
             "crc_jax.durable", "crc_jax.ntk", "crc_jax.infinite", "crc_jax.train",
             "crc_jax.state", "crc_jax.optim", "crc_jax.feeding", "crc_jax.multistep"}
PACKAGES = {"crc_jax.runtime", "crc_jax.acquisition", "crc_jax.data", "crc_jax.models",
            "crc_jax.ssl", "crc_jax.run", "crc_jax.project"}


def test_the_top_level_holds_the_library_core_and_its_folders():
    top = {m for m in MODULES if m.count(".") <= 1}
    assert top == TOP_LEVEL | PACKAGES


def test_runtime_is_plumbing_below_the_mathematics():
    """crc_jax.runtime imports nothing of crc_jax but itself and the errors users see."""
    bad = {m: sorted(i for i in GRAPH[m] if not i.startswith("crc_jax.runtime")
                     and i != "crc_jax.errors")
           for m in GRAPH if m.startswith("crc_jax.runtime")}
    assert not {m: i for m, i in bad.items() if i}


def registered_strategies(name: str) -> set[str]:
    """The strategy names module `name` registers (`@register("crc", ...)` decorators)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "register"
                        and dec.args and isinstance(dec.args[0], ast.Constant)):
                    found.add(dec.args[0].value)
    return found


def test_crc_lives_in_its_own_subpackage():
    crc = {m: registered_strategies(m) for m in MODULES if m.startswith("crc_jax.acquisition")}
    outside = {m: sorted(s for s in names if s.startswith("crc"))
               for m, names in crc.items() if not m.startswith("crc_jax.acquisition.crc")}
    assert not {m: s for m, s in outside.items() if s}
    inside = set().union(*(names for m, names in crc.items()
                           if m.startswith("crc_jax.acquisition.crc")))
    assert inside == {"crc", "crc_greedy", "crc_infinite"}


def test_the_page_and_the_ml_backend_share_one_web_module():
    page, backend, web = ("crc_jax.project.server", "crc_jax.project.ml_backend",
                          "crc_jax.project.web")
    assert web in GRAPH[page] and web in GRAPH[backend]
    assert page not in GRAPH[backend] and backend not in GRAPH[page]
    assert not GRAPH[web] & {page, backend}


def test_the_labeling_apps_cli_is_inside_the_app():
    assert "crc_jax.project.cli" in MODULES
    scripts = (ROOT / "pyproject.toml").read_text().split("[project.scripts]")[1]
    assert 'crc-jax = "crc_jax.project.cli:main"' in scripts.split("[")[0]
