"""The layout's promises (README, "Repository map"): no import cycles between modules or between
the package's folders, imports at the top of each file, files a reader can hold in their head."""
from __future__ import annotations

import ast
from pathlib import Path

import reid_utils

PACKAGE = Path(reid_utils.__file__).parent
MAX_LINES = 500
MAX_DEFERRED_IMPORTS = 5  # outside the CLI, which defers on purpose to keep --help fast


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str, known: dict) -> list[tuple[str, bool]]:
    """(imported reid_utils module, inside a function?) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] == "reid_utils":
                    for alias in child.names:  # `from . import loop` imports a module
                        sub = f"{target}.{alias.name}"
                        found.append((sub if sub in known else target, in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names if a.name.split(".")[0] == "reid_utils")
            visit(child, nested)

    visit(tree, False)
    return found


def graph(collapse: bool = False) -> dict[str, set[str]]:
    known = modules()

    def node(name: str) -> str:
        parts = name.split(".")
        return ".".join(parts[:2]) if collapse else name

    edges: dict[str, set[str]] = {node(n): set() for n in known}
    for name, path in known.items():
        for target, _ in imports(path, name, known):
            if node(target) != node(name):
                edges[node(name)].add(node(target))
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := dfs(m)):
                return cycle
        state[n] = 2
        stack.pop()
        return None

    for n in sorted(edges):
        if n not in state and (cycle := dfs(n)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_no_import_cycle_between_modules():
    assert find_cycle(graph()) is None


def test_no_import_cycle_between_folders():
    assert find_cycle(graph(collapse=True)) is None


def test_imports_at_the_top_outside_the_cli():
    known = modules()
    deferred = [
        f"{name} -> {target}"
        for name, path in known.items()
        if name != "reid_utils.cli"
        for target, in_function in imports(path, name, known)
        if in_function
    ]
    assert len(deferred) <= MAX_DEFERRED_IMPORTS, deferred


def test_no_file_over_the_size_limit():
    roots = [PACKAGE, PACKAGE.parent / "tests", PACKAGE.parent / "notebooks", PACKAGE.parent / "benchmarks"]
    long = {str(p): n for root in roots if root.is_dir() for p in root.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_metrics_never_import_models_and_models_never_import_config():
    known = modules()
    for name, path in known.items():
        targets = {t for t, _ in imports(path, name, known)}
        if name.startswith("reid_utils.metrics"):
            assert not any(t.startswith(("reid_utils.models", "reid_utils.engine")) for t in targets), name
        if name.startswith("reid_utils.models"):
            assert not any(t.startswith(("reid_utils.config", "reid_utils.data", "reid_utils.engine")) for t in targets), name
