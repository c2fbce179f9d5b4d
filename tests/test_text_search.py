"""Text search with the backbone's own ImageNet head: words resolve to classes through WordNet,
`image_tags` tags real photos, SQL and the Python call find them by word."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from embedding_assets.assets.search import image_tags
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.search.text_search import search_text
from embedding_assets.search.words import vocabulary
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.helpers import resources

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
    assert len(nothing.classes) == 0
    assert "no word of the query names one of the ImageNet classes" in nothing.describe()


def test_a_word_without_a_class_searches_its_nearest_wider_kind():
    deer = vocabulary().resolve("deer")
    assert deer.broader == {"deer": "ruminant"}
    assert len(deer.classes) > 0 and "nearest wider kind" in deer.describe()


def _materialize(data_dir: Path, tmp: Path, config: dict | None = None):
    return dg.materialize(
        [image_tags],
        resources=resources(data_dir),
        run_config={"ops": {"image_tags": {"config": config or {}}}},
        raise_on_error=False,
    )


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import SHARED_CIFAR

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
    assert ranks == (1, 20, 3 * PER_CLASS * 20)


@pytest.mark.parametrize("query, folder", [("trucks", "truck"), ("a cat", "cat")])
def test_text_query_ranks_the_named_class_first(tagged: Path, query: str, folder: str):
    found = search_text(DataPaths(tagged), query, k=10)
    hits = found.hits
    assert found.via == "tags" and query.split()[-1].rstrip("s") in found.understood
    assert len(hits) == 10 and [h.score for h in hits] == sorted(
        (h.score for h in hits), reverse=True
    )
    right = sum(_folder(h.path) == folder for h in hits)
    assert right >= 0.7 * len(hits), [h.path for h in hits]
    # Most photos of the class lack its tag: they are found by resembling the tagged ones.
    alike = [h for h in hits if h.matched_by == "resemblance"]
    assert len(alike) >= 3 and all(h.like for h in alike), hits
    assert sum(_folder(h.path) == folder for h in alike) >= 0.7 * len(alike), hits


def test_a_second_run_reuses_and_a_headless_backbone_says_why(tagged: Path, tmp_path: Path):
    again = _materialize(tagged, tmp_path)
    assert again.success
    meta = again.asset_materializations_for_node("image_tags")[0].metadata
    assert "reused" in meta  # nothing tagged again
    graph = next((tagged / "tags").glob("*.neighbours.npz"))
    with np.load(graph) as found:
        neighbours = found["neighbours"]
    graph.write_bytes(graph.read_bytes()[:100])  # damaged: not reused but written again
    again = _materialize(tagged, tmp_path)
    meta = again.asset_materializations_for_node("image_tags")[0].metadata
    assert "reused" not in meta
    with np.load(graph) as found:
        assert (found["neighbours"] == neighbours).all()
    random = _materialize(tagged, tmp_path, {"model": "resnet18", "weights": "none"})
    assert random.success
    meta = random.asset_materializations_for_node("image_tags")[0].metadata
    assert meta["status"].value == "skipped" and meta["reason"].value


def test_emb_search_text_prints_csv_json_and_refuses_nonsense(tagged: Path):
    import csv
    import io
    import json

    from typer.testing import CliRunner

    from embedding_assets.cli.app import app
    from resources.paths import DATA_DIR_ENV

    runner, env = CliRunner(), {DATA_DIR_ENV: str(tagged)}
    out = runner.invoke(app, ["search", "--text", "trucks", "-k", "5", "--format", "csv"], env=env)
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert 2 <= len(rows) <= 5 and set(rows[0]) == {
        "rank",
        "path",
        "image_id",
        "score",
        "classes",
        "matched_by",
        "like",
    }
    assert sum(_folder(r["path"]) == "truck" for r in rows) >= 0.7 * len(rows)
    out = runner.invoke(app, ["search", "--text", "a cat", "--format", "json"], env=env)
    answer = json.loads(out.stdout)
    assert answer["results"] and "cat" in answer["understood"]
    out = runner.invoke(app, ["search", "--text", "qwzzx"], env=env)
    assert out.exit_code == 2 and "names no class" in out.output


def test_serve_answers_text_queries_from_memory_with_4xx_for_bad_ones(tagged: Path, tmp_path: Path):
    from fastapi.testclient import TestClient

    from embedding_assets.web.api import ServeOptions, create_app

    db = DataPaths(tagged).catalog_db
    client = TestClient(create_app(db, ServeOptions(max_k=20)), base_url="http://127.0.0.1")
    found = client.get("/search", params={"text": "a photo of trucks", "k": 8})
    assert found.status_code == 200, found.text
    body = found.json()
    assert 2 <= len(body["results"]) <= 8 and "truck" in body["query"]["understood"]
    assert sum(_folder(h["path"]) == "truck" for h in body["results"]) >= 0.7 * len(body["results"])
    shutil.move(str(tagged / "tags"), str(tmp_path / "tags"))  # served from memory from now on
    try:
        again = client.get("/search", params={"text": "a photo of trucks", "k": 8})
        assert again.json()["results"] == body["results"]
    finally:
        shutil.move(str(tmp_path / "tags"), str(tagged / "tags"))
    assert client.get("/search", params={"text": "qwzzx"}).status_code == 422
    assert client.get("/search", params={"text": "x" * 201}).status_code == 422
    assert client.get("/search", params={"text": "cat", "k": 21}).status_code == 422
    assert client.get("/search").status_code == 422
    assert client.get("/search", params={"text": "cat", "image_id": 1}).status_code == 422
    untagged = TestClient(create_app(tmp_path / "catalog.duckdb"), base_url="http://127.0.0.1")
    missing = untagged.get("/search", params={"text": "cat"})
    assert missing.status_code == 503 and "image_tags" in missing.json()["detail"]


def test_words_no_image_is_tagged_with_say_so_and_name_the_closest_tags(data_dir: Path):
    """The README's "a red truck" on images of other things: a line that says no image is
    tagged so, with the tags the images do carry nearest to a truck, and exit code 1."""
    import json

    import numpy as np
    from typer.testing import CliRunner

    from embedding_assets.cli.app import app
    from embedding_assets.search.tags import NEIGHBOURS, Tagged, write_serving

    sports_car, tabby, clock = 817, 281, 530  # ImageNet classes in the head's order
    tagged = Tagged(
        np.arange(1, 6),
        np.array([[clock, tabby]] * 4 + [[sports_car, clock]]),
        np.array([[0.9, 0.05]] * 5),
        np.full((5, NEIGHBOURS), -1),
    )
    write_serving(
        DataPaths(data_dir), "backbone-224px", tagged, [f"/photos/{i}.png" for i in range(1, 6)]
    )
    found = search_text(DataPaths(data_dir), "a red truck", k=5)
    assert found.hits == []
    assert found.understood.endswith(
        "; no image here is tagged as truck (nearest tags here in WordNet: sports car (on 1 "
        "images), digital clock (on 5 images), tabby (on 4 images))"
    ), found.understood
    runner = CliRunner()
    out = runner.invoke(app, ["search", "--text", "a red truck"])
    assert out.exit_code == 1 and "no image here is tagged as truck" in out.output
    assert "rank" not in out.output, "no header over no rows"
    assert "answered by the ImageNet tags of backbone-224px, the backbone's classifier head" in (
        out.output
    )
    out = runner.invoke(app, ["search", "--text", "a red truck", "--format", "json"])
    assert out.exit_code == 1 and json.loads(out.stdout)["results"] == []
    out = runner.invoke(app, ["search", "--text", "digital clock"])
    assert out.exit_code == 0 and out.output.count("/photos/") == 5
    assert "two models, so two model keys" in " ".join(
        runner.invoke(app, ["search", "--help"]).output.split()
    )
