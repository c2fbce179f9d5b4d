"""Hostile or careless input to the `emb` commands, round two (issue 37): label files and
`emb sql --output`, one row per finding: a one-line reason, the valid rows still imported (the
import's rule: every valid row lands, each bad one is named by its line) and no data lost."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app
from resources.paths import DataPaths
from tests.al_helpers import query
from tests.helpers import write_image

runner = CliRunner()


@dataclass(frozen=True)
class LabelFile:
    what: str
    text: str  # the file's text; ID1 and ID2 stand for two catalog ids
    code: int  # exit code
    says: str  # in the output (ID1 as above)
    added: list[str]  # labels that land, in order
    encoding: str = "utf-8"


LABEL_FILES = [
    LabelFile(
        "a field over csv's 131,072-character limit",
        "image_id,label\nID1," + "z" * 200_000 + "\nID2,ok\n",
        1,
        "line 2: rejected: label for ID1 is 200000 characters, over the limit of 200",
        ["ok"],
    ),
    LabelFile(
        "an unclosed quote",
        'image_id,label\nID1,"cat\nID2,dog\n',
        1,
        'line 2: rejected: a quote (") opened on line 2 closes only on line 3',
        [],
    ),
    LabelFile(
        "an unclosed quote before good rows",
        'image_id,label\nID1,ok\nID2,"cat\n',
        1,
        'line 3: rejected: a quote (") opened on line 3',
        ["ok"],
    ),
    LabelFile(
        "UTF-16 with its byte-order mark",
        "image_id,label\nID1,cat\n",
        2,
        "is UTF-16 (or UTF-32) text, not UTF-8; save it as UTF-8 CSV",
        [],
        "utf-16",
    ),
    LabelFile(
        "UTF-16 without a byte-order mark",
        "image_id,label\nID1,cat\n",
        2,
        "is UTF-16 (or UTF-32) text",
        [],
        "utf-16-le",
    ),
    *[
        LabelFile(
            f"U+{ord(ch):04X} in a label",
            f"image_id,label\nID1,{ch}cat\nID2,cat\n",
            1,
            f"line 2: rejected: label for ID1 has an invisible format character (U+{ord(ch):04X})",
            ["cat"],
        )
        for ch in "\u202e\u200b\ufeff\u00ad"
    ],
]


@pytest.fixture
def two_images(data_dir: Path, tmp_path: Path) -> tuple[int, int]:
    for i in range(2):
        write_image(tmp_path / "images" / f"{i}.png", seed=i)
    scan_catalog(DataPaths(data_dir).catalog_db, tmp_path / "images")
    return tuple(r[0] for r in query(data_dir, "SELECT image_id FROM images ORDER BY 1"))


@pytest.mark.parametrize("case", LABEL_FILES, ids=[c.what for c in LABEL_FILES])
def test_a_hostile_label_file_is_named_line_by_line(
    case: LabelFile, two_images: tuple[int, int], data_dir: Path, tmp_path: Path
):
    one, two = two_images
    text = case.text.replace("ID1", str(one)).replace("ID2", str(two))
    file = tmp_path / "labels.csv"
    file.write_bytes(text.encode(case.encoding))
    out = runner.invoke(app, ["label", "import", str(file)])
    assert out.exit_code == case.code, out.output
    assert case.says.replace("ID1", str(one)) in out.output, out.output
    assert "Traceback" not in out.output and len(out.output) < 2000
    landed = query(data_dir, "SELECT label FROM labels WHERE source LIKE 'csv:%' ORDER BY label_id")
    assert [r[0] for r in landed] == case.added


@dataclass(frozen=True)
class Output:
    what: str
    target: str  # relative to the data folder, or "outside/..." for a path beside it
    force: bool
    refused: bool


OUTPUTS = [
    Output("the catalog itself", "catalog.duckdb", True, True),
    Output("the catalog, without --force", "catalog.duckdb", False, True),
    Output("a new file in the data folder", "notes.csv", True, True),
    Output("a file in a sub-folder of it", "parquet/images.parquet", True, True),
    Output("a symlink outside that leads to the catalog", "outside/link.csv", True, True),
    Output("a file outside", "outside/result.csv", False, False),
]


@pytest.mark.parametrize("case", OUTPUTS, ids=[c.what for c in OUTPUTS])
def test_sql_output_never_writes_into_the_data_folder(
    case: Output, two_images: tuple[int, int], data_dir: Path, tmp_path: Path
):
    catalog = DataPaths(data_dir).catalog_db
    before = catalog.read_bytes()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(catalog, outside / "link.csv")
    target = tmp_path / case.target if case.target.startswith("outside") else data_dir / case.target
    args = ["sql", "select 1 as x", "--format", "csv", "--output", str(target)]
    out = runner.invoke(app, [*args, "--force"] if case.force else args)
    if case.refused:
        assert out.exit_code == 2 and "inside the data folder" in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1
    else:
        assert out.exit_code == 0 and target.read_text() == "x\n1\n", out.output
    assert catalog.read_bytes() == before, "the catalog is untouched"
    assert query(data_dir, "SELECT count(*) FROM images") == [(2,)]
