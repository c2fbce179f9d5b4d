"""Text search with the backbone's own ImageNet head: words resolve to classes through WordNet,
`image_tags` tags real photos, SQL and the Python call find them by word."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest

from embedding_assets.assets.search import image_tags
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.search.tags import search_text
from embedding_assets.search.words import vocabulary
from resources.duckdb_store import connect
from resources.gpu import GPUResource
from resources.storage import DataPaths, StorageResource

PER_CLASS = 15


def test_words_resolve_plurals_phrases_and_unknown_words():
    vocab = vocabulary()
    trucks = vocab.resolve("a photo of trucks")
    assert trucks.matched["trucks"][0] == "truck" and len(trucks.classes) > 1  # every kind of truck
    tabby = vocab.resolve("Tabby Cat")
    assert [vocab.names[c] for c in tabby.classes] == ["tabby, tabby cat"]
    red = vocab.resolve("a red truck")
    assert "red" in red.unknown and "'red' names no class" in red.describe()
    assert set(red.classes) == set(trucks.classes)
    nothing = vocab.resolve("qwzzx")
    assert len(nothing.classes) == 0 and "no word of the query names a class" in nothing.describe()


def test_a_word_without_a_class_searches_its_nearest_wider_kind():
    deer = vocabulary().resolve("deer")
    assert deer.broader == {"deer": "ruminant"}
    assert len(deer.classes) > 0 and "nearest wider kind" in deer.describe()


def _materialize(data_dir: Path, tmp: Path, config: dict | None = None):
    return dg.materialize(
        [image_tags],
        resources={
            "storage": StorageResource(data_dir=str(data_dir)),
            "gpu": GPUResource(device="cpu", lock_dir=str(tmp / "locks")),
        },
        run_config={"ops": {"image_tags": {"config": config or {}}}},
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import SHARED_CIFAR

    if not SHARED_CIFAR.is_dir():
        pytest.skip("../shared/data/cifar10/test is absent (a fresh clone has no ../shared)")
    tmp = tmp_path_factory.mktemp("text")
    folder = tmp / "photos"
    for name in ("truck", "cat", "ship"):
        (folder / name).mkdir(parents=True)
        for f in sorted((SHARED_CIFAR / name).iterdir())[:PER_CLASS]:
            shutil.copy(f, folder / name / f.name)
    data_dir = tmp / "data"
    scan_catalog(DataPaths(data_dir).catalog_db, folder)
    result = _materialize(data_dir, tmp)
    assert result.success
    return data_dir


def _folder(path: str) -> str:
    return Path(path).parent.name


def test_sql_finds_images_by_a_hypernym(tagged: Path):
    with connect(DataPaths(tagged).catalog_db, read_only=True) as con:
        rows = con.execute(
            "SELECT path FROM image_tags_expanded WHERE term = 'truck' ORDER BY score DESC LIMIT 10"
        ).fetchall()
        ranks = con.execute("SELECT min(rank), max(rank), count(*) FROM image_tags").fetchone()
    assert len(rows) == 10
    assert sum(_folder(p) == "truck" for (p,) in rows) >= 7
    assert ranks == (1, 5, 3 * PER_CLASS * 5)


@pytest.mark.parametrize("query, folder", [("trucks", "truck"), ("a cat", "cat")])
def test_text_query_ranks_the_named_class_first(tagged: Path, query: str, folder: str):
    resolution, hits = search_text(DataPaths(tagged), query, k=10)
    assert len(resolution.classes) > 0
    # Only images with a matching class among their top 5 tags are hits: at 32 px few are.
    assert len(hits) >= 2 and [h.score for h in hits] == sorted(
        (h.score for h in hits), reverse=True
    )
    right = sum(_folder(h.path) == folder for h in hits)
    assert right >= 0.7 * len(hits), [h.path for h in hits]


def test_a_second_run_reuses_and_a_headless_backbone_says_why(tagged: Path, tmp_path: Path):
    again = _materialize(tagged, tmp_path)
    assert again.success
    meta = again.asset_materializations_for_node("image_tags")[0].metadata
    assert "reused" in meta  # nothing tagged again
    random = _materialize(tagged, tmp_path, {"model": "resnet18", "weights": "none"})
    assert random.success
    meta = random.asset_materializations_for_node("image_tags")[0].metadata
    assert meta["status"].value == "skipped" and meta["reason"].value
