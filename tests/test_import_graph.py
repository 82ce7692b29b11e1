"""The package's import graph: imports flow one way, from the apps down to the ground floor.

    apps         cli/ and the `python -m devinterp.<app>` shims (train.py, report.py, dashboard.py)
    views        views/ (the report, the dashboard)
    workflows    training/, analysis/
    monitor      monitor/ (runs devinterp did not train: it uses the trainer's schedule and the analysis)
    integrations integrations/ (thin callbacks for other frameworks, over the monitor)
    callbacks    callbacks/
    estimators   slt/, hessian/, transitions/
    data         models/, tasks/, store/
    ground       core/

An import may stay on its floor (between packages that do not import each other back) or go down,
never up; no two modules and no two packages import each other, directly or around a loop; nothing
outside the apps imports an app. Imports inside functions are seen too, and each carries a comment
saying why it is not at the top (a heavy optional dependency: ray, dash, wandb).
"""
import ast
from collections import defaultdict
from pathlib import Path

import pytest

import devinterp

ROOT = Path(devinterp.__file__).parent
FLOORS = [["core"], ["models", "tasks", "store"], ["slt", "hessian", "transitions"], ["callbacks"],
          ["training", "analysis"], ["monitor"],
          ["integrations"], ["views"], ["cli", "train", "report", "dashboard"]]
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}
APPS = set(FLOORS[-1])


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in ROOT.rglob("*.py")}


def imported_modules(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The devinterp modules an import statement loads: `from a.b import c` is module a.b.c when
    that is a module, else a.b."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module if is_package else module.rsplit(".", 1)[0]
            for _ in range(node.level - 1):
                anchor = anchor.rsplit(".", 1)[0]
            base = f"{anchor}.{base}".rstrip(".")
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
    return [name for name in names if name in MODULES]


def import_edges() -> dict[str, set[str]]:
    edges = defaultdict(set)
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[module].update(m for m in imported_modules(node, module, path.name == "__init__.py")
                                     if m != module)
    return edges


def package(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in edges.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


EDGES = import_edges()
PACKAGE_EDGES = {p: {package(b) for a in EDGES if package(a) == p for b in EDGES[a]} - {p}
                 for p in {package(m) for m in MODULES if m != "devinterp"}}


def test_every_package_has_a_floor():
    assert set(PACKAGE_EDGES) == set(FLOOR), "place new packages on a floor in FLOORS"


def test_no_module_imports_itself_around_a_loop():
    assert cycles(EDGES) == []


def test_no_package_imports_itself_around_a_loop():
    assert cycles(PACKAGE_EDGES) == []


def test_imports_go_down_or_stay_on_their_floor():
    upward = sorted(f"{a} -> {b}" for a, targets in EDGES.items() for b in targets
                    if package(a) in FLOOR and package(b) in FLOOR and FLOOR[package(b)] > FLOOR[package(a)])
    assert upward == []


def test_no_library_module_imports_an_app():
    assert sorted(f"{a} -> {b}" for a, targets in EDGES.items() for b in targets
                  if package(a) not in APPS and package(b) in APPS) == []


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py")))
def test_imports_inside_functions_say_why(path):
    lines = (ROOT / path).read_text().splitlines()
    unexplained = [f"{path}:{node.lineno}: {lines[node.lineno - 1].strip()}"
                   for function in ast.walk(ast.parse("\n".join(lines)))
                   if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))
                   and "#" not in lines[node.lineno - 1]]
    assert unexplained == []
