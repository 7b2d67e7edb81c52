"""dbtflow's import graph (ast over src/dbtflow): no cycle, lazy imports only in the CLI, lazy exports that agree."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

SRC = REPO / "src"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that runs (at import time or in a function), skipping `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        found.extend(_imports(node))
    return found


def _lazy_exports(tree: ast.Module) -> dict[str, str]:
    """A package's `_EXPORTS` literal (public name -> defining module, relative)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            return dict(ast.literal_eval(node.value))
    return {}


def _parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__ and a/b/__init__ first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the dbtflow modules it imports (lazy package exports resolved to their modules)."""
    trees = {module_name(p, src): (p, ast.parse(p.read_text())) for p in sorted((src / "dbtflow").rglob("*.py"))}
    exports = {name: _lazy_exports(tree) for name, (_, tree) in trees.items()}
    graph: dict[str, set[str]] = {}
    for name, (path, tree) in trees.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
                continue
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in trees:
                    targets.add(f"{base}.{alias.name}")
                elif alias.name in exports.get(base, {}):
                    defined_in = exports[base][alias.name]
                    targets.add(f"{base}{defined_in}" if defined_in.startswith(".") else defined_in)
                else:
                    targets.add(base)
        targets = {t for t in targets if t in trees}
        graph[name] = {p for t in targets for p in [*_parents(t), t] if p in trees and p != name} - set(_parents(name))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "dbtflow.run._flow" in graph and "dbtflow.run._invoke" in graph["dbtflow.run._flow"]  # the graph is real
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_a_cycle_is_found_and_named(tmp_path: Path):
    """The check can fail: a cycle hidden behind a function-level import, or through a lazy export, is named."""
    pkg = tmp_path / "dbtflow"
    (pkg / "run").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "run" / "__init__.py").write_text('_EXPORTS = {"Reporter": "._reporter"}\n')
    (pkg / "run" / "_invoke.py").write_text("from dbtflow.run import Reporter\n")
    (pkg / "run" / "_reporter.py").write_text("def f():\n    from dbtflow.run._invoke import x\n")
    assert find_cycle(import_graph(tmp_path)) == ["dbtflow.run._invoke", "dbtflow.run._reporter", "dbtflow.run._invoke"]


def test_function_level_imports_say_why_and_never_hide_a_cycle():
    """Modules import at the top. An import on use (the CLI's, to keep `dbtflow --help` fast; dbt's in a
    module the CLI validates with before dbt loads) says so; outside the CLI it is never of dbtflow itself,
    which could only hide a cycle."""
    misplaced, unexplained = [], []
    for path in sorted((SRC / "dbtflow").rglob("*.py")):
        lines = path.read_text().splitlines()
        for func in ast.walk(ast.parse(path.read_text())):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in _imports(func):
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                modules = [n.module or "" for n in [node] if isinstance(n, ast.ImportFrom)]
                modules += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if "cli" not in path.relative_to(SRC).parts and any(m.startswith("dbtflow") for m in modules):
                    misplaced.append(where)
                elif not any("lazy" in line for line in lines[max(0, node.lineno - 12) : node.lineno]):  # its group's
                    unexplained.append(where)
    assert not misplaced, f"function-level imports of dbtflow outside the CLI: {misplaced}"
    assert not unexplained, f"lazy imports without a `# lazy: ...` comment: {unexplained}"


def test_lazy_exports_match_what_type_checkers_see():
    for path in sorted((SRC / "dbtflow").rglob("__init__.py")):
        tree = ast.parse(path.read_text())
        exported = _lazy_exports(tree)
        checked = {
            alias.asname or alias.name
            for node in tree.body
            if isinstance(node, ast.If) and _is_type_checking(node)
            for imp in node.body
            if isinstance(imp, ast.ImportFrom)
            for alias in imp.names
        }
        assert set(exported) == checked, f"{path.relative_to(REPO)}: _EXPORTS and its TYPE_CHECKING imports differ"


def test_the_cli_imports_neither_prefect_nor_dbt_nor_pydantic_before_a_command_runs():
    """`dbtflow --help` and a bad option stay fast: the heavy libraries load inside the commands."""
    import subprocess
    import sys

    code = "import sys; import dbtflow.cli; print(sorted({'prefect', 'dbt', 'pydantic'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]", f"importing dbtflow.cli loads {loaded}"
