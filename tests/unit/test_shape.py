"""The shape of the source, held by tests (issue 11): budgets a newcomer can rely on.

* No module of ``src/ductile`` over 500 lines, except ``plugin.py``: plugin
  authors copy it into a plugin folder as one stdlib-only file.
* No function over 60 lines (ruff's C901 and PLR0915 hold complexity and
  statement counts; this holds length, which they do not).
* No import cycle between ductile's modules (imports made only for type
  checking excluded): the import-linter contracts give the layers, this
  catches a cycle inside one layer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[2] / "src" / "ductile"
MODULE_BUDGET = 500
FUNCTION_BUDGET = 60
#: Exempt from the module budget, with the reason.
ONE_FILE_BY_CONTRACT = {SRC / "plugin.py"}


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_module_is_over_its_budget() -> None:
    over = {
        str(p.relative_to(SRC)): n
        for p in _modules()
        if p not in ONE_FILE_BY_CONTRACT and (n := len(p.read_text().splitlines())) > MODULE_BUDGET
    }
    assert not over, f"modules over {MODULE_BUDGET} lines: {over}"


def test_no_function_is_over_its_budget() -> None:
    over = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > FUNCTION_BUDGET:
                    over.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert not over, f"functions over {FUNCTION_BUDGET} lines: {over}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    graph = grimp.build_graph("ductile", exclude_type_checking_imports=True, cache_dir=None)
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    assert not _cycles(edges)
