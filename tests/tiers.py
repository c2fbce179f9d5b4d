"""Which tier a test belongs to, read from what its code uses (not from a hand-kept list).

A test's tier is the heaviest thing reachable from its own body and from the fixtures it uses,
following calls into functions and classes of the tests package (one module's helpers, or
those it imports from `tests.*`):

- e2e: `dagster dev`, Chromium (Playwright), a Ray cluster in a network namespace, an S3 server;
- integration: a Dagster run (`materialize`, `execute_in_process`, `emb run` / `emb demo`
  through the CLI), a server on loopback (uvicorn), or a child process;
- unit: everything else (plain functions on small arrays and tiny files).

An explicit `@pytest.mark.integration` / `e2e` can only raise a test's tier, never lower it.
The unit tier is also guarded while it runs (conftest.py): a unit test that starts a Dagster
run or listens on a socket fails and says which tier it belongs to.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

TIERS = ("unit", "integration", "e2e")

# Calls (last name of the callee) and, for CLI arguments, the first word of an argument list.
E2E_CALLS = frozenset({"dagster_dev", "sync_playwright", "ThreadedMotoServer"})
E2E_WORDS = frozenset({"unshare"})  # the Ray tests' own network namespace
INTEGRATION_CALLS = frozenset(
    {
        "materialize",
        "materialize_to_memory",
        "execute_in_process",
        "run_everything",  # what `emb run` calls
        "Popen",
        "subprocess.run",
        "uvicorn.Server",
        "Server",
    }
)
INTEGRATION_WORDS = frozenset({"run", "demo"})  # `emb run ...`, `emb demo`


@dataclass
class Uses:
    """What one function's own code calls and names, and what it refers to in the tests
    package (to be followed)."""

    calls: set[str] = field(default_factory=set)
    words: set[str] = field(default_factory=set)
    refs: set[str] = field(default_factory=set)


def _callee(node: ast.expr) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        names = [node.attr]
        if isinstance(node.value, ast.Name):
            names.append(f"{node.value.id}.{node.attr}")
        return names
    return []


def _first_word(args: list[ast.expr]) -> str | None:
    if args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
        return args[0].value
    return None


def _uses_of(node: ast.AST) -> Uses:
    uses = Uses()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            callee = _callee(sub.func)
            uses.calls.update(callee)
            word = _first_word(sub.args[1:] if callee[:1] == ["invoke"] else sub.args)
            if word:
                uses.words.add(word)
        elif isinstance(sub, ast.List | ast.Tuple) and (word := _first_word(sub.elts)):
            uses.words.add(word)
        if isinstance(sub, ast.Name):
            uses.refs.add(sub.id)
    return uses


@dataclass
class Module:
    """One parsed module: its top-level functions and classes, and names imported from tests."""

    defs: dict[str, Uses]
    imports: dict[str, tuple[str, str]]  # local name -> (module file, name there)


@cache
def _module(path: str) -> Module:
    tree = ast.parse(Path(path).read_text(), filename=path)
    defs: dict[str, Uses] = {}
    imports: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs[node.name] = _uses_of(node)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tests."):
            source = Path(path).parent / (node.module.split(".", 1)[1].replace(".", "/") + ".py")
            if source.is_file():
                for alias in node.names:
                    imports[alias.asname or alias.name] = (str(source), alias.name)
    return Module(defs, imports)


def _reachable(path: str, name: str) -> tuple[set[str], set[str]]:
    """(calls, words) of a function and of everything in the tests package it refers to."""
    calls: set[str] = set()
    words: set[str] = set()
    seen: set[tuple[str, str]] = set()
    start = _module(path)
    if name not in start.defs and name not in start.imports:
        raise KeyError(f"{name} is not a top-level function or class of {path}")
    todo = [(path, name)]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        module = _module(key[0])
        if key[1] in module.imports:
            todo.append(module.imports[key[1]])
            continue
        uses = module.defs.get(key[1])
        if uses is None:
            continue
        calls |= uses.calls
        words |= uses.words
        known = module.defs.keys() | module.imports.keys()
        todo.extend((key[0], ref) for ref in uses.refs & known)
    return calls, words


def tier_of(functions: list[tuple[str, str]]) -> str:
    """The tier of a test made of these (module file, top-level name) functions: the test
    itself and each fixture it uses."""
    calls: set[str] = set()
    words: set[str] = set()
    for path, name in functions:
        c, w = _reachable(path, name)
        calls |= c
        words |= w
    if calls & E2E_CALLS or words & E2E_WORDS:
        return "e2e"
    if calls & INTEGRATION_CALLS or words & INTEGRATION_WORDS:
        return "integration"
    return "unit"


class TierError(AssertionError):
    """A test in the unit tier did something only integration tests may do."""


def heavier(a: str, b: str) -> str:
    return max(a, b, key=TIERS.index)
