"""Who may import whom, and who writes the MLflow store: every import of the project's own modules (those inside
functions included) and every call that writes the store, read from the source. A circle, an arrow that points
up the house, a utility that reaches up, the Optuna sweeper (sweep/search/) importing more of the project than
sweep/util/, the reader importing the writer, a store write outside sweep/record/, or an unexplained
in-function import fails here, naming the arrow or the line."""

from __future__ import annotations

import ast

from helpers.cli import ROOT

PACKAGES = ("sweep", "models", "data", "hydra_plugins")
# The house, top to bottom (README "Layout"): an arrow may only point to a lower layer, or stay inside one
# package of a layer (sweep/record/ -> sweep/record/). A module is in the layer of its longest matching prefix.
LAYERS = [
    ("entry", ("sweep.run", "sweep.report", "sweep.crosscheck", "hydra_plugins")),
    ("pre-flight", ("sweep.preflight",)),
    ("app", ("sweep.job", "sweep.parent", "sweep.optuna_hook", "sweep.study")),
    ("config", ("sweep.config",)),
    ("parts", ("sweep.record", "sweep.analysis", "sweep.search", "sweep.training")),
    ("base", ("sweep.keys", "sweep.protocol", "sweep.util", "models", "data", "sweep")),
]
UTIL = "sweep.util"


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


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _layer(module: str) -> tuple[int, str]:
    """(layer index, the package or module that placed it there) for `module`."""
    return max(
        ((i, p) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes if _within(module, p)),
        key=lambda ip: len(ip[1]),
    )


def _arrows(graph: dict[str, set[str]], source: str) -> list[tuple[str, str]]:
    return sorted((m, d) for m in graph if _within(m, source) for d in graph[m])


def test_every_arrow_points_down_or_stays_in_its_package():
    graph = _graph()
    bad = []
    for m, deps in graph.items():
        layer, home = _layer(m)
        for d in deps:
            d_layer, d_home = _layer(d)
            if d_layer > layer or (d_layer == layer and d_home == home and home != "sweep"):
                continue
            bad.append(f"{m} ({LAYERS[layer][0]}) -> {d} ({LAYERS[d_layer][0]})")
    assert not bad, bad


def test_the_utilities_import_only_each_other():
    graph = _graph()
    bad = [f"{m} -> {d}" for m, d in _arrows(graph, UTIL) if not _within(d, UTIL)]
    assert not bad, bad


def test_keys_and_protocol_import_nothing_of_the_project():
    graph = _graph()
    assert not graph["sweep.keys"] and not graph["sweep.protocol"], (graph["sweep.keys"], graph["sweep.protocol"])


def test_the_optuna_sweeper_imports_only_itself_and_the_utilities():
    graph = _graph()
    arrows = _arrows(graph, "sweep.search")
    bad = [f"{m} -> {d}" for m, d in arrows if not (_within(d, "sweep.search") or _within(d, UTIL))]
    assert arrows and not bad, bad


def test_the_writer_imports_no_config_and_the_reader_neither_writer_config_nor_training():
    graph = _graph()
    writer = [
        f"{m} -> {d}"
        for m, d in _arrows(graph, "sweep.record")
        if not any(_within(d, p) for p in ("sweep.record", "sweep.keys", UTIL))
    ]
    reader = [
        f"{m} -> {d}"
        for m, d in _arrows(graph, "sweep.analysis")
        if not any(_within(d, p) for p in ("sweep.analysis", "sweep.keys", "sweep.protocol", UTIL))
    ]
    assert not writer and not reader, (writer, reader)


# MlflowClient's methods that change the store. A record.Run has writers of its own (a job holds it as
# `mlflow_run`); two share a name with the client's and are allowed on it.
STORE_WRITES = {
    "set_tag", "delete_tag", "log_metric", "log_param", "log_batch", "log_artifact", "log_artifacts",
    "log_dict", "log_figure", "log_image", "log_table", "log_text", "log_inputs", "log_outputs", "log_model",
    "create_run", "set_terminated", "update_run", "delete_run", "restore_run", "create_experiment",
    "delete_experiment", "set_experiment_tag", "rename_experiment",
}  # fmt: skip
RUN_WRITES = {"log_text", "log_inputs"}


def _store_writes(tree: ast.Module) -> list[tuple[int, str]]:
    """Calls of a store-writing method other than a record.Run's, and imports of MLflow's fluent API (it writes
    through global state)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in STORE_WRITES:
            owner = node.func.value
            if isinstance(owner, ast.Name) and owner.id == "record":  # the writer's own functions
                continue
            if node.func.attr in RUN_WRITES and isinstance(owner, ast.Name) and owner.id == "mlflow_run":
                continue
            out.append((node.lineno, node.func.attr))
        elif isinstance(node, ast.Import) and any(a.name == "mlflow" for a in node.names):
            out.append((node.lineno, "import mlflow"))
    return out


def test_no_module_outside_record_writes_to_mlflow():
    bad = [
        f"{name}:{line} {what}"
        for name, tree in _modules().items()
        if not _within(name, "sweep.record")
        for line, what in _store_writes(tree)
    ]
    assert not bad, bad


def test_the_writer_check_sees_a_write_and_lets_a_run_write():
    tree = ast.parse(
        "def f(client, mlflow_run):\n    client.set_tag('r', 'k', 'v')\n    mlflow_run.log_text('x', 'p')\n"
    )
    assert _store_writes(tree) == [(2, "set_tag")]


def _unexplained_imports(path) -> list[int]:
    """Lines of imports of the project's own modules inside functions with no comment on them or just above."""
    lines = path.read_text().splitlines()
    out = []
    for fn in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if not getattr(node, "level", 0) and not any(m.split(".")[0] in PACKAGES for m in mods):
                continue
            first = node.lineno - 1  # a block of imports shares the comment above its first line
            while first > 0 and lines[first - 1].strip().startswith(("from ", "import ")):
                first -= 1
            said = "#" in "".join(lines[first : node.end_lineno]) or lines[first - 1].strip().startswith("#")
            if not said:
                out.append(node.lineno)
    return sorted(set(out))


def test_an_in_function_import_of_the_project_says_why():
    """The project's own modules are imported at the top; one imported inside a function (to keep a light module
    light, or to load a writer only when tracking is on) carries a comment on its line or the line above."""
    bad = [
        f"{path.relative_to(ROOT)}:{line}"
        for pkg in PACKAGES
        for path in sorted((ROOT / pkg).rglob("*.py"))
        for line in _unexplained_imports(path)
    ]
    assert not bad, bad


def test_no_import_circle_among_the_projects_modules():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checker_finds_a_circle_and_a_function_level_import():
    """The checker itself: an in-function import is an arrow, and a circle through it is found."""
    known = {"p", "p.a", "p.b"}
    a = ast.parse("def f():\n    from p import b\n")
    b = ast.parse("from p.a import x\n")
    graph = {"p": set(), "p.a": _imports("p.a", a, known, False), "p.b": _imports("p.b", b, known, False)}
    assert graph["p.a"] == {"p.b"} and graph["p.b"] == {"p.a"}
    assert _cycle(graph) in (["p.a", "p.b", "p.a"], ["p.b", "p.a", "p.b"])
