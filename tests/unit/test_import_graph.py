"""The shape of the house: no import circle in ``bridge/``, no module over ~600 lines,
and data flowing one way (codecs never import the runtime, brokers, backends or tools).

Imports are read with ``ast`` (nothing is imported), including the ones under
``TYPE_CHECKING`` and inside functions: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bridge"
MAX_LINES = 620  # "about 600": a module past this wants splitting by concern


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        targets.update(c for c in candidates if c in known and c != name)
    return targets


MODULES = _modules()
GRAPH = {name: _imports(name, path, set(MODULES)) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_was_read() -> None:
    assert "bridge.protocol.machinery" in GRAPH["bridge.protocol.celery_canvas"]
    assert len(MODULES) > 40


def test_no_import_circle() -> None:
    assert _cycles(GRAPH) == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_size(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concern"


# Lower layers never import upper ones (../shared/DESIGN.md: protocol → runtime →
# brokers/backends, tools on top).
CODECS = ("bridge.protocol",)
NOT_BELOW_CODECS = ("bridge.brokers", "bridge.backends", "bridge.handlers", "bridge.worker",
                    "bridge.app", "bridge.cli", "bridge.migrate", "bridge.relay")
TOOLS = ("bridge.cli", "bridge.migrate", "bridge.relay", "bridge.ui")


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _within(n, CODECS)))
def test_codecs_import_no_runtime(name: str) -> None:
    wrong = sorted(t for t in GRAPH[name] if _within(t, NOT_BELOW_CODECS))
    assert wrong == [], f"{name} (a codec) imports {wrong}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not _within(n, TOOLS)))
def test_only_tools_import_tools(name: str) -> None:
    wrong = sorted(t for t in GRAPH[name] if _within(t, TOOLS))
    assert wrong == [], f"{name} imports the tools {wrong}"
