"""Curation assets in real Dagster runs on real image files with planted faults: a wrong
label, a dark image, a tiny one, a copy across splits; the tables, the leak check and the
review round they give."""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from embedding_assets.assets.curation import (
    batch_drift,
    image_quality,
    label_issues,
    no_split_leaks,
    uniqueness,
)
from embedding_assets.assets.neighbors import neighbor_graph
from embedding_assets.assets.search import near_duplicates
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app
from embedding_assets.embedding.run import RunOptions, run_embeddings
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.helpers import resources
from tests.search_setup import PARAMS
from tests.search_setup import class_image as noisy_image

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# Three classes of noisy images, one tint each, none too dark or too bright. Tints, not grey
# levels: the random-weight backbone's L2-normalised features barely tell grey levels apart,
# and a class-1 image then ranked among the label issues by a hair (a machine's float
# rounding decided whether the planted wrong label ranked first).
LEVELS = ((190, 80, 80), (80, 190, 80), (80, 80, 190))


def class_image(path: Path, level: tuple[int, int, int], seed: int, size: int = 40) -> Path:
    """40 px: at least the quality check's smallest normal side (32)."""
    return noisy_image(path, level, seed, size=size)


def _folder(root: Path) -> dict[str, Path]:
    """train/ and test/ splits of three tinted classes, with planted faults."""
    for split, count in (("train", 10), ("test", 4)):
        for c, level in enumerate(LEVELS):
            for i in range(count):
                class_image(
                    root / split / f"class_{c}" / f"{split}_{i}.png",
                    level,
                    c * 1000 + i + (split == "test") * 500,
                )
    planted = {
        "wrong": class_image(root / "train" / "class_0" / "actually_light.png", LEVELS[2], 9001),
        "dark": root / "train" / "class_0" / "underexposed.png",
        "tiny": root / "train" / "class_1" / "tiny.png",
        "leak": root / "test" / "class_2" / "copied_from_train.png",
    }
    rng = np.random.default_rng(3)
    dark = rng.integers(0, 6, (40, 40, 3), dtype=np.uint8) + np.uint8([6, 0, 0])  # class 0's tint
    Image.fromarray(dark).save(planted["dark"])
    class_image(planted["tiny"], LEVELS[1], 9002, size=8)  # class 1's tint, too small
    shutil.copy(root / "train" / "class_2" / "train_3.png", planted["leak"])
    return planted


@dataclass(frozen=True)
class Curated:
    """A data folder after one curation run over the planted folder."""

    data_dir: Path
    db: Path
    planted: dict[str, Path]
    result: dg.ExecuteInProcessResult


def _curate(data_dir: Path, tmp: Path) -> Curated:
    planted = _folder(tmp / "images")
    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, tmp / "images")
    run_embeddings(paths, PARAMS, RunOptions(workers=0))
    result = dg.materialize(
        [image_quality, label_issues, neighbor_graph, uniqueness, near_duplicates, no_split_leaks],
        resources=resources(data_dir),
        run_config={
            **QUIET,
            "ops": {
                "near_duplicates": {"config": {"threshold": 0.99999}},
                # 64 PCA dimensions (the default, for thousands of images) overfit 46 labeled
                # ones: out-of-fold accuracy 0.61, against 0.96 with 8
                "label_issues": {"config": {"pca_dim": 8}},
            },
        },
        raise_on_error=False,
    )
    assert result.success
    return Curated(data_dir, paths.catalog_db, planted, result)


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Curated:
    """One curation run for the tests that only read its tables (a run costs seconds)."""
    tmp = tmp_path_factory.mktemp("curated")
    return _curate(tmp / "data", tmp)


@pytest.fixture
def curated(shared_run: Curated, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Curated:
    """The shared run, with EMB_DATA_DIR on its data folder for the CLI (the test's own
    DAGSTER_HOME). Read only: a test that writes takes `own_run`."""
    monkeypatch.setenv("EMB_DATA_DIR", str(shared_run.data_dir))
    return shared_run


@pytest.fixture
def own_run(data_dir: Path, tmp_path: Path) -> Curated:
    return _curate(data_dir, tmp_path)


def _by_path(db: Path, sql: str) -> dict[str, tuple]:
    with connect(db, read_only=True) as con:
        rows = con.execute(sql).fetchall()
    return {"/".join(Path(r[0]).parts[-3:]): r[1:] for r in rows}


def _key(path: Path) -> str:
    return "/".join(path.parts[-3:])


def test_quality_flags_come_from_the_catalogs_decode(curated: Curated):
    db, planted, result = curated.db, curated.planted, curated.result
    flags = _by_path(
        db, "SELECT i.path, q.flags FROM image_quality q JOIN images i USING (image_id)"
    )
    assert "too_dark" in flags[_key(planted["dark"])][0]
    assert "odd_size" in flags[_key(planted["tiny"])][0]
    clean = [f for name, (f,) in flags.items() if Path(name).name.startswith(("train_", "test_"))]
    assert len(clean) == 42 and not any(clean), [(n, f) for n, (f,) in flags.items() if f]
    meta = result.asset_materializations_for_node("image_quality")[0].metadata
    assert meta["flagged"].value == 2 and "underexposed.png" in meta["flagged_images"].value


def test_the_wrong_label_ranks_first_and_a_review_round_exports_it(
    curated: Curated, tmp_path: Path
):
    db, planted = curated.db, curated.planted
    with connect(db, read_only=True) as con:
        top = con.execute(
            "SELECT i.path, l.given_label, l.suggested_label FROM label_issues l "
            "JOIN images i USING (image_id) ORDER BY l.score DESC LIMIT 1"
        ).fetchone()
    assert Path(top[0]).name == planted["wrong"].name and top[1:] == ("class_0", "class_2")
    out = tmp_path / "review.csv"
    res = CliRunner().invoke(app, ["queue", "--label-issues", "3", "--export", str(out)])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert 1 <= len(rows) <= 3 and Path(rows[0]["path"]).name == planted["wrong"].name
    assert rows[0]["label"] == "class_0" and rows[0]["suggested_label"] == "class_2"


def test_copies_are_least_unique_and_a_cross_split_copy_warns(curated: Curated):
    db, planted, result = curated.db, curated.planted, curated.result
    scores = _by_path(
        db, "SELECT i.path, u.uniqueness FROM uniqueness u JOIN images i USING (image_id)"
    )
    copy = scores[_key(planted["leak"])][0]
    original = "train/class_2/train_3.png"
    assert copy < 1e-4 and copy < min(
        v for name, (v,) in scores.items() if name not in (original, _key(planted["leak"]))
    )
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "no_split_leaks" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["leaks"].value == 1
    assert check.metadata["images_per_split"].value == {"test": 13, "train": 33}
    with connect(db, read_only=True) as con:
        [(a, b)] = con.execute("SELECT split_a, split_b FROM split_leaks").fetchall()
    assert {a, b} == {"train", "test"}


def _drift(data_dir: Path, tmp_path: Path) -> dg.ExecuteInProcessResult:
    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, tmp_path / "images")
    run_embeddings(paths, PARAMS, RunOptions(workers=0))
    return dg.materialize(
        [batch_drift],
        resources=resources(data_dir),
        run_config=QUIET,
    )


def test_a_batch_of_a_new_kind_drifts_and_a_like_batch_does_not(
    own_run: Curated, data_dir: Path, tmp_path: Path
):
    db = own_run.db
    for c, level in enumerate(LEVELS):  # batch 2: more of the same
        for i in range(5):
            class_image(
                tmp_path / "images" / "more" / f"class_{c}" / f"m{i}.png", level, 7000 + 10 * c + i
            )
    like = _drift(data_dir, tmp_path)
    for i in range(15):  # batch 3: a kind of image never seen before
        rng = np.random.default_rng(8000 + i)
        checker = np.indices((40, 40)).sum(axis=0) // 4 % 2 * 200 + rng.integers(0, 40, (40, 40))
        path = tmp_path / "images" / "new" / f"n{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(checker.astype(np.uint8)).convert("RGB").save(path)
    novel = _drift(data_dir, tmp_path)
    with connect(db, read_only=True) as con:
        rows = con.execute(
            "SELECT images, drifted, p_value, reference FROM batch_drift ORDER BY batch_id"
        ).fetchall()
        holm_and_effect = con.execute(
            "SELECT p_holm >= p_value, effect_size FROM batch_drift ORDER BY batch_id"
        ).fetchall()
        ood = con.execute(
            "SELECT avg(ood_score) FILTER (batch_id = (SELECT max(batch_id) FROM batch_drift)),"
            " avg(ood_score) FILTER (batch_id < (SELECT max(batch_id) FROM batch_drift)) "
            "FROM ood_scores"
        ).fetchone()
    assert [(n, d) for n, d, _, _ in rows] == [(15, False), (15, True)], rows
    assert rows[1][2] < 0.01 and rows[1][3].startswith("all earlier batches (61 images)")
    assert ood[0] > 0.9 > ood[1]
    assert all(ok for ok, _ in holm_and_effect) and holm_and_effect[1][1] > 0.05
    assert like.asset_materializations_for_node("batch_drift")[0].metadata["drifted"].value == 0
    meta = novel.asset_materializations_for_node("batch_drift")[0].metadata
    assert meta["drifted"].value == 1 and "newest_batch_map" in meta


def test_uniqueness_strategy_scores_the_pool_from_the_table(curated: Curated):
    from embedding_assets.embedding.sets import current_set
    from embedding_assets.learning.rounds import stored_uniqueness

    db, planted = curated.db, curated.planted
    key = current_set(db).model_key
    with connect(db, read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT image_id FROM uniqueness ORDER BY 1").fetchall()]
        copy_id = con.execute(
            "SELECT image_id FROM images WHERE path = ?", [str(planted["leak"].resolve())]
        ).fetchone()[0]
    scores = stored_uniqueness(db, key, np.asarray(ids + [10**9]))
    assert scores[-1] == -1.0, "an image the asset has not scored comes last"
    assert scores[ids.index(copy_id)] < np.median(scores[:-1]), "a copy is not unique"
    with pytest.raises(LookupError, match="materialize it first"):  # the asset: a dg.Failure
        stored_uniqueness(db, "another-model", np.asarray(ids))
