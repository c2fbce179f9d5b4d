"""The layout stays true: no import circles, imports only downward through the layers, and
table names spelled in SQL only by `common/tables.py` (README, "Layout")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("embedding_assets", "resources", "sensors")
# Lower layers first. A module may import its own package and any package of a lower layer;
# packages on one layer do not import each other.
LAYERS = (
    ("resources",),
    ("embedding_assets.common",),
    ("embedding_assets.catalog",),
    ("embedding_assets.embedding",),
    ("embedding_assets.search", "embedding_assets.analytics"),
    ("embedding_assets.learning",),
    ("embedding_assets.curation",),
    ("embedding_assets.configs",),
    ("embedding_assets.assets",),
    ("sensors",),
    ("embedding_assets.definitions",),
    ("embedding_assets.web",),
    ("embedding_assets.cli",),
)
TABLES_MODULE = "embedding_assets.common.tables"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for package in PACKAGES
        for p in (REPO / package).rglob("*.py")
        if "__pycache__" not in p.parts
    }


def imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, anywhere in the file (a function-level import is a
    dependency too): `from a.b import c` is a.b.c when that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
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
                out.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return out


def layer_of(module: str) -> tuple[int, str] | None:
    """(layer, package) of a module; None for the bare `embedding_assets` package."""
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                return rank, package
    return None


def wrong_directions(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(edges.items()):
        here = layer_of(module)
        for target in sorted(targets):
            there = layer_of(target)
            if here is None or there is None or here[1] == there[1]:
                continue
            if there[0] >= here[0]:
                bad.append(f"{module} -> {target}")
    return bad


def test_no_import_circles():
    assert circles(graph()) == []


def test_imports_only_go_down_the_layers():
    assert wrong_directions(graph()) == []


def test_every_module_is_on_a_layer():
    assert [m for m in graph() if layer_of(m) is None and m != "embedding_assets"] == []


@pytest.mark.parametrize(
    "edges, expected",
    [
        ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set()}, []),
    ],
)
def test_the_circle_finder_finds_circles(edges, expected):
    assert circles(edges) == expected


def test_the_direction_check_refuses_a_climb():
    edges = {
        "embedding_assets.catalog.scan": {"embedding_assets.curation.drift"},
        "embedding_assets.search.versions": {"embedding_assets.analytics.store"},
        "embedding_assets.assets.search": {"embedding_assets.search.versions"},
    }
    assert wrong_directions(edges) == [
        "embedding_assets.catalog.scan -> embedding_assets.curation.drift",
        "embedding_assets.search.versions -> embedding_assets.analytics.store",
    ]


def table_names() -> list[str]:
    source = (REPO / "embedding_assets/common/tables.py").read_text()
    return re.findall(r'^[A-Z_]+ = "([a-z_]+)"', source, re.M)


def test_table_names_come_from_the_tables_module():
    """The project's own SQL (upper-case keywords) takes table names from `common.tables`;
    the lower-case examples a message shows users are left alone."""
    names = "|".join(table_names())
    sql = re.compile(rf"\b(?:FROM|JOIN|INTO|UPDATE|TABLE|COPY)\s+({names})\b")
    spelled = []
    for module, path in modules().items():
        if module == TABLES_MODULE or not module.startswith(("embedding_assets", "sensors")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                spelled += [f"{module}: {m}" for m in sql.findall(node.value)]
    assert spelled == []
