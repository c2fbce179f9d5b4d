"""The shape the code keeps for the next engineer (issue 38): assets are thin, long argument
lists are settings objects, and only the one reuse mechanism (`assets/reuse.py`) writes input
fingerprints."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "embedding_assets"
MAX_PARAMETERS = 6
MAX_ASSET_LINES = 60
WRITERS = ("fingerprints.remember", "fingerprints.forget")


def _functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def _parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    if names and names[0].arg in ("self", "cls"):
        names = names[1:]
    return names + [x for x in (a.vararg, a.kwarg) if x is not None]


def _is_cli_command(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A typer command declares its options as parameters, as a Dagster Config declares its
    fields: every default is a typer.Option or typer.Argument (or a shared one, by name)."""
    defaults = [*fn.args.defaults, *(d for d in fn.args.kw_defaults if d is not None)]
    options = [
        d
        for d in defaults
        if isinstance(d, ast.Call) and ast.unparse(d.func) in ("typer.Option", "typer.Argument")
    ]
    shared = [d for d in defaults if isinstance(d, ast.Name) and d.id.isupper()]
    return bool(options) and len(options) + len(shared) == len(defaults)


def test_no_function_takes_more_than_six_parameters():
    long = [
        f"{path.relative_to(REPO)}:{fn.lineno} {fn.name} ({len(_parameters(fn))})"
        for path in sorted(PACKAGE.rglob("*.py"))
        for fn in _functions(path)
        if len(_parameters(fn)) > MAX_PARAMETERS and not _is_cli_command(fn)
    ]
    assert not long, "group these into a settings object or record: " + ", ".join(long)


def test_asset_functions_are_thin():
    thick = [
        f"{path.name}:{fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
        for path in sorted((PACKAGE / "assets").glob("*.py"))
        for fn in ast.parse(path.read_text()).body
        if isinstance(fn, ast.FunctionDef)
        and any("asset" in ast.unparse(d) for d in fn.decorator_list)
        and fn.end_lineno - fn.lineno + 1 > MAX_ASSET_LINES
    ]
    assert not thick, "move the work into a domain function: " + ", ".join(thick)


def test_only_the_reuse_mechanism_records_fingerprints():
    writers = [
        str(path.relative_to(REPO))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "common" / "fingerprints.py"
        and any(
            word in path.read_text() for word in ("fingerprints.remember", "fingerprints.forget")
        )
    ]
    assert writers == ["embedding_assets/assets/reuse.py"], writers
