"""Data flows one way: no import cycle anywhere in ``sim/`` (module-level and function-level
imports alike), and ``sim/`` never imports matplotlib, Hydra or OmegaConf."""
from __future__ import annotations

import ast
from pathlib import Path

SIM = Path(__file__).resolve().parents[2] / "sim"
#: Packages that belong to ``experiments/``: charts and configuration files.
FORBIDDEN = ("matplotlib", "hydra", "omegaconf")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path, root: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (also inside functions and
    ``TYPE_CHECKING`` blocks), as absolute dotted names; ``from a import b`` gives ``a.b``, which
    :func:`import_graph` resolves to the module ``a.b`` or, if ``b`` is a name, to ``a``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            out.update(f"{prefix}.{alias.name}" for alias in node.names)
    return out


def import_graph(root: Path = SIM) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports (names that are not modules, like
    ``sim.engine.Simulation``, resolve to their module; a package's ``__init__`` is the package)."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        edges = set()
        for target in imported_names(path, root):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_the_import_walker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "engine.py").write_text("from pkg.backends import Backend\n")
    (pkg / "backends.py").write_text("def f():\n    from pkg.engine import build\n")
    (pkg / "sub" / "leaf.py").write_text("from ..engine import x\nfrom . import other\n")
    (pkg / "sub" / "other.py").write_text("import numpy\n")
    graph = import_graph(pkg)
    assert graph["pkg.sub.leaf"] == {"pkg.engine", "pkg.sub.other"}
    assert find_cycle(graph) == ["pkg.backends", "pkg.engine", "pkg.backends"]


def test_sim_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and graph["sim.engine"] >= {"sim.backends", "sim.shard"}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in sim/: " + " -> ".join(cycle)


def test_sim_never_imports_plotting_or_configuration_frameworks():
    offenders = sorted(
        (module_name(path, SIM), name)
        for path in SIM.rglob("*.py") for name in imported_names(path, SIM)
        if name.split(".")[0] in FORBIDDEN)
    assert not offenders, offenders
