"""Who may import whom: every import of the project's own modules, the ones inside functions included, read
from the source. A circle of imports, a leaf utility that reaches up, or the Optuna sweeper (sweep/search/)
importing more of the project than its leaf utilities fails here, naming the arrow."""

from __future__ import annotations

import ast

from helpers.cli import ROOT

PACKAGES = ("sweep", "models", "data", "hydra_plugins")
# Leaves: they import nothing of the project but each other, so any module may use them (sweep/search/ too).
LEAVES = {
    "sweep.paths",
    "sweep.atomic",
    "sweep.dblock",
    "sweep.redact",
    "sweep.sqlite_wal",
    "sweep.procid",
    "sweep.signals",
    "sweep.fastexit",
    "sweep.logs",
    "sweep.protocol",
}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = ast.parse(path.read_text(), str(path))
    return out


def _imports(name: str, tree: ast.Module, known: set[str], is_package: bool) -> set[str]:
    """The project modules `name` imports anywhere in its source (a `from pkg import sub` counts as sub)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            subs = [f"{base}.{a.name}" for a in node.names]
            candidates = [s for s in subs if s in known] or [base]
        else:
            continue
        for c in candidates:
            while c and c not in known:
                c = c.rpartition(".")[0]
            if c and c != name:
                found.add(c)
    return found


def _graph() -> dict[str, set[str]]:
    trees = _modules()
    known = set(trees)
    packages = {n for n in known if any(m.startswith(n + ".") for m in known)}
    return {n: _imports(n, t, known, n in packages) for n, t in trees.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if w not in graph:
                continue
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_no_import_circle_among_the_projects_modules():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_leaves_import_only_leaves():
    graph = _graph()
    assert LEAVES <= set(graph), sorted(LEAVES - set(graph))
    bad = sorted(f"{m} -> {d}" for m in LEAVES for d in graph[m] if d not in LEAVES)
    assert not bad, bad


def test_the_optuna_sweeper_imports_only_itself_and_the_leaves():
    graph = _graph()
    search = [m for m in graph if m == "sweep.search" or m.startswith("sweep.search.")]
    assert search
    bad = sorted(
        f"{m} -> {d}"
        for m in search
        for d in graph[m]
        if not (d == "sweep.search" or d.startswith("sweep.search.") or d in LEAVES)
    )
    assert not bad, bad


def test_the_checker_finds_a_circle_and_a_function_level_import():
    """The checker itself: an in-function import is an arrow, and a circle through it is found."""
    known = {"p", "p.a", "p.b"}
    a = ast.parse("def f():\n    from p import b\n")
    b = ast.parse("from p.a import x\n")
    graph = {"p": set(), "p.a": _imports("p.a", a, known, False), "p.b": _imports("p.b", b, known, False)}
    assert graph["p.a"] == {"p.b"} and graph["p.b"] == {"p.a"}
    assert _cycle(graph) in (["p.a", "p.b", "p.a"], ["p.b", "p.a", "p.b"])
