"""Issue 28 on the command line: the label rules on `emb label set` and `emb label import` (the
same as the web's), a 50,000-row import with bad rows mixed in, an import that fails midway,
and `emb sql`'s output file, row limit and timeout."""

from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path

import duckdb
import pytest
import typer
from typer.testing import CliRunner

from embedding_assets.catalog import labels as label_log
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.al_helpers import query

runner = CliRunner()


@pytest.fixture
def catalog(data_dir: Path, labeled_folder: Path) -> Path:
    db = DataPaths(data_dir).catalog_db
    scan_catalog(db, labeled_folder)
    return db


def _some_id(data_dir: Path) -> int:
    return query(data_dir, "SELECT min(image_id) FROM usable_images")[0][0]


def _labels(data_dir: Path, source: str) -> list[str]:
    return [r[0] for r in query(data_dir, f"SELECT label FROM labels WHERE source = '{source}'")]


# -- the label rules, one place for every path --------------------------------------------------
@pytest.mark.parametrize(
    ("label", "rule"),
    [
        ("cat\u0007\u0000", "control character (U+0007"),
        ("two\nlines", "control character (U+000A"),
        ("   ", "empty label"),
        ("y" * 201, "201 characters, over the limit of 200"),
        ("x\udcff", "not valid UTF-8"),
    ],
)
def test_label_set_refuses_what_the_rules_refuse(
    catalog: Path, data_dir: Path, label: str, rule: str
):
    image_id = _some_id(data_dir)
    out = runner.invoke(app, ["label", "set", str(image_id), label])
    assert out.exit_code == 1, out.output
    lines = [line for line in out.output.splitlines() if "rejected:" in line]
    assert len(lines) == 1 and lines[0].startswith("rejected: ") and rule in lines[0]
    assert "\x07" not in out.output and "\x00" not in out.output
    assert _labels(data_dir, "cli") == []


def test_label_set_trims_and_normalizes(catalog: Path, data_dir: Path):
    image_id = _some_id(data_dir)
    out = runner.invoke(app, ["label", "set", str(image_id), "  cafe\u0301 "])
    assert out.exit_code == 0, out.output
    out = runner.invoke(app, ["label", "set", str(image_id), "z" * 200])
    assert out.exit_code == 0, out.output
    assert _labels(data_dir, "cli") == ["caf\u00e9", "z" * 200]
    bad_source = runner.invoke(app, ["label", "set", str(image_id), "ok", "--source", "a\x1bb"])
    assert bad_source.exit_code == 1 and "source has a control character" in bad_source.output


def test_import_applies_the_same_rules_per_row(catalog: Path, data_dir: Path, tmp_path: Path):
    image_id = _some_id(data_dir)
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(
        "image_id,label\n"
        f"{image_id},cat\u0007\u0000\n"  # 2
        f"{image_id},{'y' * 300}\n"  # 3
        f"{image_id},  cafe\u0301  \n"  # 4: ok, stored NFC and trimmed
        f"99999999999999999999999,dog\n"  # 5: past 64 bits
        f'{image_id},"multi\nline"\n'  # 6-7: a quoted newline
        f"{image_id},a\u2028b\n"  # 8
    )
    out = runner.invoke(app, ["label", "import", str(csv_file)])
    assert out.exit_code == 1, out.output
    assert "line 2: rejected: label for " in out.output and "(U+0007" in out.output
    assert "line 3: rejected: label for " in out.output and "300 characters" in out.output
    assert "line 5: rejected: image_id 99999999999999999999999 is out of range" in out.output
    assert 'line 6: rejected: a quote (") opened on line 6 closes only on line 7' in out.output
    assert "(U+2028" in out.output
    assert "1 label(s) added, 5 row(s) rejected" in out.output
    assert "y" * 300 not in out.output, "an over-long label is not echoed"
    assert _labels(data_dir, "csv:labels.csv") == ["caf\u00e9"]


def test_web_and_cli_share_the_rules():
    from embedding_assets.web import catalog_reads

    assert catalog_reads.MAX_LABEL_CHARS == label_log.MAX_LABEL_CHARS == 200
    assert label_log.clean_label("  cafe\u0301\u00a0") == "caf\u00e9"
    for bad in ("a\x00", "", " \t ", "b" * 201, "\x7f", "x\u2029y"):
        with pytest.raises(label_log.LabelError):
            label_log.clean_label(bad)


# -- one transaction, 50,000 rows ----------------------------------------------------------------
def _big_catalog(db: Path, n: int) -> list[str]:
    import pyarrow as pa

    paths = [f"/imgs/class_{i % 10}/img_{i:06d}.png" for i in range(n)]
    with connect(db) as con:
        con.register("t", pa.table({"path": paths}))
        con.execute(
            "INSERT INTO images (path, root, sha256, bytes, status, first_seen, last_seen) "
            "SELECT path, '/imgs', md5(path), 100, 'ok', now(), now() FROM t"
        )
    return paths


def _big_csv(file: Path, paths: list[str], ids: dict[str, int]) -> dict[str, int]:
    """50,000 rows, 5 % of them bad in six ways; returns how many of each kind."""
    rng = random.Random(0)
    kinds: dict[str, int] = {}
    rows: list[list[str]] = []
    for i, path in enumerate(paths):
        r = rng.random()
        kind, row = "ok", [path if rng.random() < 0.8 else str(ids[path]), f"class_{i % 10}"]
        if r < 0.02:
            kind, row = "unknown image", [f"/imgs/nope_{i}.png", "cat"]
        elif r < 0.03:
            kind, row = "empty label", [path, "  "]
        elif r < 0.035:
            kind, row = "malformed row", [path]
        elif r < 0.04:
            kind, row = "control character", [path, "cat\u0007\u0000"]
        elif r < 0.045:
            kind, row = "over the limit", [path, "y" * 300]
        elif r < 0.05:
            kind, row = "out of range", [str(10**25 + i), "cat"]
        kinds[kind] = kinds.get(kind, 0) + 1
        rows.append(row)
    with file.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return kinds


def test_50k_row_import_with_bad_rows_is_one_quick_transaction(data_dir: Path, tmp_path: Path):
    db = DataPaths(data_dir).catalog_db
    paths = _big_catalog(db, 50_000)
    ids = dict(query(data_dir, "SELECT path, image_id FROM images"))
    file = tmp_path / "big.csv"
    kinds = _big_csv(file, paths, ids)
    started = time.monotonic()
    result = label_log.import_csv(db, file)
    seconds = time.monotonic() - started
    assert result.inserted == kinds["ok"]
    assert len(result.rejected) == sum(kinds.values()) - kinds["ok"]
    for kind, n in kinds.items():
        if kind != "ok":
            assert sum(kind in r.reason for r in result.rejected) == n, kind
    assert query(data_dir, "SELECT count(*) FROM labels")[0][0] == kinds["ok"]
    assert seconds < 20, f"50,000 rows took {seconds:.1f} s"


def test_an_import_that_fails_midway_writes_nothing(
    catalog: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The rows are inserted, then the commit fails (a full disk, a kill): no row stays."""
    ids = [r[0] for r in query(data_dir, "SELECT image_id FROM usable_images")]
    file = tmp_path / "labels.csv"
    file.write_text("image_id,label\n" + "".join(f"{i},late\n" for i in ids))
    before = query(data_dir, "SELECT count(*) FROM labels")[0][0]
    real_connect = label_log.connect

    class FailingCommit:
        def __init__(self, con):
            self._con = con

        def __getattr__(self, name):
            return getattr(self._con, name)

        def commit(self):
            (inserted,) = self._con.execute(
                "SELECT count(*) FROM labels WHERE label = 'late'"
            ).fetchall()[0]
            assert inserted == len(ids), "the rows were in the transaction"
            raise duckdb.IOException("disk full (simulated)")

    from contextlib import contextmanager

    @contextmanager
    def failing(*args, **kwargs):
        with real_connect(*args, **kwargs) as con:
            yield FailingCommit(con)

    monkeypatch.setattr(label_log, "connect", failing)
    with pytest.raises(duckdb.IOException):
        label_log.import_csv(catalog, file)
    monkeypatch.setattr(label_log, "connect", real_connect)
    assert query(data_dir, "SELECT count(*) FROM labels")[0][0] == before
    assert query(data_dir, "SELECT count(*) FROM labels WHERE label = 'late'") == [(0,)]


# -- emb sql: output files, row limit, timeout ---------------------------------------------------
def _sql_app() -> typer.Typer:
    """`emb sql` with every option (cli/sql.py's command), as the app registers it."""
    from embedding_assets.cli.sql import sql_command

    cmd = typer.Typer()
    cmd.callback()(lambda: None)
    cmd.command("sql")(sql_command)
    return cmd


def test_output_file_is_not_overwritten_without_force(catalog: Path, tmp_path: Path):
    out = tmp_path / "result.csv"
    out.write_text("precious\n")
    res = runner.invoke(app, ["sql", "select 1 as a", "-f", "csv", "-o", str(out)])
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and "--force" in res.output
    assert out.read_text() == "precious\n"


def test_force_replaces_the_file_through_a_temp_file(catalog: Path, tmp_path: Path):
    cmd = _sql_app()
    out = tmp_path / "result.csv"
    out.write_text("precious\n")
    res = runner.invoke(cmd, ["sql", "select 1 as a", "-f", "csv", "-o", str(out), "--force"])
    assert res.exit_code == 0, res.output
    assert out.read_text() == "a\n1\n" and "replaced" in res.output
    bad = runner.invoke(cmd, ["sql", "select * from nope", "-f", "csv", "-o", str(out), "--force"])
    assert bad.exit_code == 2
    assert out.read_text() == "a\n1\n", "a failed query leaves the old file"
    pq = tmp_path / "result.parquet"
    for _ in range(2):
        res = runner.invoke(
            cmd, ["sql", "select * from images", "-f", "parquet", "-o", str(pq), "--force"]
        )
        assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dagster_home",
        "data",
        "images",
        "result.csv",
        "result.parquet",
    ], "no temp file left"


def test_terminal_output_is_cut_at_the_limit_and_files_get_everything(
    catalog: Path, tmp_path: Path
):
    q = "select * from range(100000) t(i)"
    res = runner.invoke(app, ["sql", q])
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert len(lines) <= 1_005 and "first 1000 rows" in lines[-1] and "--output" in lines[-1]
    res = runner.invoke(app, ["sql", q, "-f", "json"])
    assert res.exit_code == 0
    assert len(json.loads(res.stdout)) == 1000 and "first 1000 rows" in res.stderr
    out = tmp_path / "all.csv"
    res = runner.invoke(app, ["sql", q, "-f", "csv", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert sum(1 for _ in out.open()) == 100_001
    everything = runner.invoke(_sql_app(), ["sql", q, "--limit", "0", "-f", "csv"])
    assert everything.exit_code == 0 and everything.output.count("\n") >= 100_001


def test_ten_million_rows_to_the_terminal_are_bounded(catalog: Path):
    started = time.monotonic()
    res = runner.invoke(app, ["sql", "select * from range(10000000)"])
    assert res.exit_code == 0
    assert len(res.output.splitlines()) <= 1_005
    assert time.monotonic() - started < 20


def test_a_long_query_stops_at_the_timeout_in_one_line(catalog: Path):
    from embedding_assets.cli.sql import QueryTimeout, run_query

    slow = "select sum(hash(i)) from range(1000000000000) t(i)"
    started = time.monotonic()
    res = runner.invoke(_sql_app(), ["sql", slow, "--timeout", "1"])
    assert time.monotonic() - started < 15
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output
    assert "stopped after 1 s" in res.output and "--timeout" in res.output
    with pytest.raises(QueryTimeout):
        run_query(catalog, slow, timeout_s=0.5)
    assert run_query(catalog, "select 42 as x", timeout_s=0.5).splitlines()[2].strip() == "42"


def test_next_steps_name_emb_as_the_shell_finds_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A summary's `emb sql ...` must run when pasted: bare `emb` only when PATH finds this
    one, else its path (relative below the working directory)."""
    import sys

    from embedding_assets.cli.console import emb_command

    beside = Path(sys.executable).with_name("emb")
    monkeypatch.setenv("PATH", str(beside.parent))
    assert emb_command() == "emb"
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(beside.parents[2])
    assert emb_command() == str(beside.relative_to(beside.parents[2]))  # e.g. .venv/bin/emb
    monkeypatch.chdir(tmp_path)
    assert emb_command() == str(beside)


def test_emb_ui_runs_dg_dev_with_the_community_dialog_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`dagster dev` now warns it is superseded by `dg dev`; Dagster's "Join the community"
    dialog covered the lineage on a first visit (instance setting `nux`)."""
    import sys

    import yaml

    from embedding_assets.cli import runner as run_mod
    from embedding_assets.cli.app import ui_command

    args = ui_command(3001, "127.0.0.1")
    assert args[0] == str(Path(sys.executable).with_name("dg")) and args[1] == "dev"
    assert args[2:6] == ["-p", "3001", "-h", "127.0.0.1"] and args[6] in ("-w", "-m")

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("EMB_DATA_DIR", str(tmp_path / "data"))
    run_mod.ensure_home()
    yaml_path = tmp_path / "data" / "dagster" / "dagster.yaml"
    assert yaml.safe_load(yaml_path.read_text())["nux"] == {"enabled": False}
    older = run_mod.INSTANCE_YAML.replace(run_mod.NUX_YAML, "")  # what emb wrote before
    yaml_path.write_text(older)
    run_mod.ensure_home()
    assert yaml.safe_load(yaml_path.read_text())["nux"] == {"enabled": False}, "upgraded"
    assert yaml_path.read_text().startswith(older)
