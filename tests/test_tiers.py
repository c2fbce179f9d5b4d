"""The test tiers are read from what tests use (tests/tiers.py), and the unit tier is guarded:
a materializing test never lands in it, and one that slips through fails and says why."""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import dagster as dg
import pytest

from tests import tiers
from tests.tiers import TierError

HERE = Path(__file__).parent


def _tier(tmp_path: Path, source: str, name: str = "test_it") -> str:
    path = tmp_path / f"test_sample_{len(list(tmp_path.iterdir()))}.py"
    path.write_text(textwrap.dedent(source))
    return tiers.tier_of([(str(path), name)])


def test_plain_functions_are_unit(tmp_path: Path):
    assert _tier(tmp_path, "def test_it():\n    assert sorted([2, 1]) == [1, 2]\n") == "unit"


def test_a_materialization_anywhere_below_the_test_is_integration(tmp_path: Path):
    source = """
        import dagster as dg

        def _build(data):
            return dg.materialize([], resources={})

        def _helper(data):
            return _build(data)

        def test_it():
            assert _helper(1)
    """
    assert _tier(tmp_path, source) == "integration"
    assert _tier(tmp_path, source, "_build") == "integration"


def test_emb_run_through_the_cli_is_integration_other_commands_are_not(tmp_path: Path):
    run = 'def test_it():\n    CliRunner().invoke(app, ["run", "--image-dir", "x"])\n'
    sql = 'def test_it():\n    CliRunner().invoke(app, ["sql", "select 1"])\n'
    assert _tier(tmp_path, run) == "integration"
    assert _tier(tmp_path, sql) == "unit"


def test_servers_and_child_processes_are_integration_browsers_and_dagster_dev_e2e(
    tmp_path: Path,
):
    popen = "import subprocess\n\ndef test_it():\n    subprocess.Popen(['emb', 'serve'])\n"
    browser = "def test_it():\n    with sync_playwright() as pw:\n        pass\n"
    assert _tier(tmp_path, popen) == "integration"
    assert _tier(tmp_path, browser) == "e2e"


def test_the_real_suite_lands_where_its_fixtures_say():
    def tier(module: str, *names: str) -> str:
        return tiers.tier_of([(str(HERE / module), name) for name in names])

    # the `curated` fixture materializes: a test that only reads its tables is integration
    reads = "test_copies_are_least_unique_and_a_cross_split_copy_warns"
    assert tier("test_dagster_curation.py", reads) == "integration"
    assert tier("test_dagster_curation.py", "_key") == "unit"
    # dagster_dev is imported from tests.dagster_server and followed there
    assert (
        tier("test_e2e_graphql.py", "test_materialize_everything_then_labels_trigger_one_retrain")
        == "e2e"
    )
    # `emb run` through the runner that the CLI calls, from another test module's helper
    assert tier("test_movable_data.py", "_run") == "integration"
    with pytest.raises(KeyError, match="no_such_test"):
        tier("test_movable_data.py", "no_such_test")


def test_the_unit_tier_refuses_dagster_runs_and_servers(request: pytest.FixtureRequest):
    assert request.node.get_closest_marker("unit") is not None
    with pytest.raises(TierError, match="starts a Dagster run"):
        dg.DagsterInstance.create_run()
    with socket.socket() as sock, pytest.raises(TierError, match="listens on a socket"):
        sock.listen()
