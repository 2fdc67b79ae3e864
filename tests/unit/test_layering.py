"""The house rules of the layout, kept by a test: layering drifts unless something fails.

- No import cycle inside ``src/hopper`` (imports inside functions count: a cycle hidden in
  a function is still two modules that cannot be understood apart).
- The flow path (``flows/``, ``hopper.ingest``) never imports watchdog.
- The watcher never imports ``flows/``: it reaches the flows only through events.
- Settings are read from the environment only where a process starts (the CLI, a reader
  child, :class:`hopper.home.Home`) and passed down from there, never deep in the library.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, name: str) -> set[str]:
    """Hopper modules ``path`` imports, anywhere but under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module → the Hopper modules it imports (names that are modules, not attributes)."""
    files = {_module_name(p): p for p in (SRC / "hopper").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = {m for m in _imports(path, name) if m in files and m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_hopper() -> None:
    graph = import_graph()
    assert graph.get("hopper.ingest")  # the graph is not empty
    assert cycles(graph) == []


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


@pytest.mark.parametrize("statement", ["import flows.ingest", "import hopper.ingest"])
def test_the_flow_path_never_imports_watchdog(statement: str) -> None:
    loaded = _loaded_after(statement)
    assert "hopper.ingest" in loaded
    assert not {m for m in loaded if m == "watchdog" or m.startswith("watchdog.")}


def test_the_watcher_never_imports_the_flows() -> None:
    loaded = _loaded_after("import hopper.watch.daemon, hopper.cli")
    assert "hopper.watch.daemon" in loaded
    assert not {m for m in loaded if m == "flows" or m.startswith("flows.")}
    graph = import_graph()
    watch = [m for m in graph if m.startswith("hopper.watch")]
    assert watch and not any(i.startswith("flows") for m in watch for i in graph[m])


ENTRY_POINTS = {"hopper.home", "hopper.isolate.child"}


def test_settings_are_read_only_where_a_process_starts() -> None:
    readers = set()
    for path in (SRC / "hopper").rglob("*.py"):
        name = _module_name(path)
        if "HopperSettings()" in path.read_text(encoding="utf-8"):
            readers.add(name)
    assert "hopper.home" in readers  # the check sees something
    deep = {m for m in readers - ENTRY_POINTS if not m.startswith("hopper.cli")}
    assert deep == set()
    flows = [p for p in (ROOT / "flows").glob("*.py") if "HopperSettings(" in p.read_text()]
    assert flows == []
