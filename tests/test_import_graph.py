"""The package's import graph (read with ast, nothing imported): no cycles, none hidden in a function.

An import inside a function is fine when it only defers a heavy dependency (torch for a fast CLI start);
it is not when it exists to dodge a cycle. So the graph is built from *every* import of a lymphcad module,
wherever it is written (module level, function body, ``if TYPE_CHECKING``), and must have no cycle: a
deferred import that would close one if written at the top fails here, named with its file and line.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "lymphcad"


@dataclass(frozen=True)
class Edge:
    """One import of a package module by another."""

    source: str
    target: str
    where: str  # "file:line"
    deferred: bool  # written inside a function, class body or ``if`` block, not at module level


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted name → file of every module under ``root/package`` (packages as their ``__init__``)."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _resolve(name: str, module: str, is_package: bool, level: int) -> str:
    """Absolute dotted name of a (possibly relative) import in ``module``."""
    if level == 0:
        return name
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def import_edges(root: Path, package: str) -> list[Edge]:
    """Every import of one of the package's modules by another, with where it is written."""
    modules = module_names(root, package)
    edges = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        top_level = {id(node) for node in tree.body}
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", module, is_package, node.level)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                # "import a.b.c" loads a.b.c (and its parents, which import nothing of their children here)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module and target.split(".")[0] == package:
                    where = f"{path.relative_to(root)}:{node.lineno}"  # type: ignore[attr-defined]
                    edges.append(Edge(module, target, where, id(node) not in top_level))
    return edges


def find_cycle(edges: list[Edge]) -> list[Edge] | None:
    """One cycle of the graph as its edges, or None (iterative depth-first search)."""
    graph: dict[str, list[Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, []).append(e)
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(graph):
        if state.get(start):
            continue
        path: list[Edge] = []
        stack = [(start, iter(graph.get(start, [])))]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            edge = next(it, None)
            if edge is None:
                state[node] = 2
                stack.pop()
                if path:
                    path.pop()
                continue
            if state.get(edge.target) == 1:
                cycle = [*path, edge]
                first = next(i for i, e in enumerate(cycle) if e.source == edge.target)
                return cycle[first:]
            if not state.get(edge.target):
                state[edge.target] = 1
                path.append(edge)
                stack.append((edge.target, iter(graph.get(edge.target, []))))
    return None


def _describe(cycle: list[Edge]) -> str:
    return "\n".join(
        f"  {e.source} → {e.target} ({e.where}{', inside a function' if e.deferred else ''})" for e in cycle
    )


def test_package_has_no_import_cycle_even_through_deferred_imports() -> None:
    edges = import_edges(SRC, PACKAGE)
    assert len(edges) > 100  # the walk found the package's imports
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle:\n" + _describe(cycle or [])


def _reachable(edges: list[Edge], start: str) -> set[str]:
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
    seen, todo = {start}, [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_inference_never_imports_training() -> None:
    edges = import_edges(SRC, PACKAGE)
    training = {"lymphcad.detector.train", "lymphcad.detector.fpr_train"}
    for use in ("lymphcad.detector.infer", "lymphcad.detector.model", "lymphcad.detector.fpr"):
        assert not _reachable(edges, use) & training, use
    # the second stage's model imports nothing of the detector (it sits below model and infer)
    assert not {e.target for e in edges if e.source == "lymphcad.detector.fpr"} & {
        m for m in module_names(SRC, PACKAGE) if m.startswith("lymphcad.detector.")
    }
    # detection (the command's batch runner) takes nothing from the training loop
    assert not _reachable(edges, "lymphcad.batch.detect") & training
    assert "lymphcad.detector.common" in {e.target for e in edges if e.source == "lymphcad.batch.detect"}


def _write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checker_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import g\n\ndef f():\n    return g()\n",
            "pkg/b.py": "import json\n\ndef g():\n    from pkg import a  # dodges the cycle\n    return a\n",
            "pkg/c.py": "from . import b\nfrom .a import f\n",
        },
    )
    edges = import_edges(tmp_path, "pkg")
    assert {(e.source, e.target, e.deferred) for e in edges} == {
        ("pkg.a", "pkg.b", False),
        ("pkg.b", "pkg.a", True),
        ("pkg.c", "pkg.b", False),
        ("pkg.c", "pkg.a", False),
    }
    cycle = find_cycle(edges)
    assert cycle is not None
    assert {e.source for e in cycle} == {"pkg.a", "pkg.b"}
    assert any(e.deferred and e.where == str(Path("pkg/b.py")) + ":4" for e in cycle)


@pytest.mark.parametrize(
    "b_text",
    [
        "def g():\n    import torch  # a heavy third-party import deferred: fine\n    return torch\n",
        "def g():\n    from pkg.c import h  # deferred, but closes no cycle\n    return h\n",
    ],
)
def test_checker_accepts_deferred_imports_that_close_no_cycle(tmp_path: Path, b_text: str) -> None:
    _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import g\n",
            "pkg/b.py": b_text,
            "pkg/c.py": "h = 1\n",
        },
    )
    assert find_cycle(import_edges(tmp_path, "pkg")) is None
