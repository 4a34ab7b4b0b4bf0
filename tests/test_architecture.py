"""Architecture facts, read from the source: the library (`src/deltamem`) imports nothing from the
lab (`evals`, `baselines`), and no import circle exists inside `src/` (function-level imports
count: a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

SRC = REPO_ROOT / "src"
LAB = ("evals", "baselines")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports anywhere in its body, relative imports resolved."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return found


def library_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SRC.rglob("*.py") if p.name != "run.py"}
    return {name: {m for m in imported_modules(path) if m in modules and m != name} for name, path in modules.items()}


def test_the_library_never_imports_the_lab():
    """`src/deltamem` only; `src/run.py`, the entry point, composes library and lab."""
    offenders = {
        module_name(p): sorted(m for m in imported_modules(p) if m.split(".")[0] in LAB)
        for p in (SRC / "deltamem").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles of the graph (depth-first search; a package and its submodules are one unit)."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # `__init__` re-exporting its own submodules
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_circle_inside_src():
    graph = library_graph()
    assert "deltamem.kernels.chunk_scan" in graph and "deltamem.kernels.chunk_common" in graph
    assert find_cycles(graph) == []


def test_the_checker_sees_a_circle_and_a_lab_import(tmp_path, monkeypatch):
    """The two checks above can fail: a planted circle and a planted lab import are found."""
    fake = tmp_path / "src" / "pkg"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("def f():\n    from . import b\n")
    (fake / "b.py").write_text("from pkg.a import f\nimport evals.runner\n")
    monkeypatch.setattr(__import__(__name__), "SRC", tmp_path / "src")
    graph = library_graph()
    assert "pkg.b" in graph["pkg.a"] and "pkg.a" in graph["pkg.b"]
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]
    assert "evals.runner" in imported_modules(fake / "b.py")
