"""Text search beyond each image's own tags: a query's tag matches spread to the images that
resemble them (the neighbour graph `image_tags` stores), each hit says why it answered, and a
query no image is confidently tagged with answers nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from embedding_assets.cli.app import app
from embedding_assets.search.tags import NEIGHBOURS, Tagged, nearest_images, write_serving
from embedding_assets.search.text_answers import OWN_TAGS, RESEMBLANCE
from embedding_assets.search.text_search import search_text
from resources.paths import DataPaths

TABBY, CLOCK, TRUCK = 281, 530, 867  # ImageNet classes in the head's order


def _two_kinds(tag_of_clock: np.ndarray) -> Tagged:
    """Six clocks (ids 1-6) and six cats (7-12), each kind its own neighbourhood: every cat
    is tagged tabby (and truck, barely); clock i is tagged `digital clock` with probability
    `tag_of_clock[i]` where that is above 0, else tabby and truck (the head's mistakes on
    blurry photos)."""
    ids = np.arange(1, 13)
    classes = [[CLOCK, TABBY] if p > 0 else [TABBY, TRUCK] for p in tag_of_clock]
    probs = [[p, 0.3] if p > 0 else [0.3, 0.01] for p in tag_of_clock]
    clocks, cats = ids[:6], ids[6:]
    neighbours = np.full((12, NEIGHBOURS), -1)
    for i in range(12):
        own = clocks if i < 6 else cats
        others = own[own != ids[i]]
        neighbours[i, : len(others)] = others
    return Tagged(
        ids,
        np.array(classes + [[TABBY, TRUCK]] * 6),
        np.array(probs + [[0.8, 0.01]] * 6, dtype=np.float32),
        neighbours,
    )


def _serve(data_dir: Path, tagged: Tagged) -> None:
    names = [f"/photos/{'clock' if i <= 6 else 'cat'}/{i}.png" for i in tagged.image_ids]
    write_serving(DataPaths(data_dir), "backbone-224px", tagged, names)


def test_images_that_lack_the_tag_are_found_by_resembling_the_tagged_ones(data_dir: Path):
    # One clock in six is tagged as one: the other five are found through it.
    _serve(data_dir, _two_kinds(np.array([0.9, 0.01, 0.0, 0.0, 0.0, 0.0])))
    found = search_text(DataPaths(data_dir), "digital clock", k=12)
    assert [h.image_id for h in found.hits][:1] == [1] and found.hits[0].matched_by == OWN_TAGS
    assert sorted(h.image_id for h in found.hits) == [1, 2, 3, 4, 5, 6], "no cat answers"
    by_resemblance = [h for h in found.hits if h.matched_by == RESEMBLANCE]
    assert len(by_resemblance) == 5 and all(1 in h.like for h in by_resemblance)
    assert [h.image_id for h in by_resemblance if h.classes] == [2]  # tagged, barely
    runner = CliRunner()
    out = runner.invoke(app, ["search", "--text", "digital clock", "-k", "6"])
    assert out.exit_code == 0 and out.output.count("like #1") == 5, out.output
    out = runner.invoke(app, ["search", "--text", "digital clock", "--format", "json"])
    results = json.loads(out.stdout)["results"]
    assert {r["matched_by"] for r in results} == {OWN_TAGS, RESEMBLANCE}
    assert results[-1]["like"][0] == 1


def test_a_tag_on_a_stray_image_answers_nothing(data_dir: Path):
    # One clock's `digital clock` probability is low and no similar image carries any.
    _serve(data_dir, _two_kinds(np.array([0.09, 0, 0, 0, 0, 0])))
    found = search_text(DataPaths(data_dir), "digital clock", k=5)
    assert found.hits == []
    assert (
        "no image here is tagged as digital clock but stray images (at most 0.09), none with "
        "similar ones" in found.understood
    ), found.understood
    _serve(data_dir, _two_kinds(np.full(6, 0.12)))  # all six: a neighbourhood of clocks
    assert len(search_text(DataPaths(data_dir), "digital clock", k=10).hits) == 6
    assert search_text(DataPaths(data_dir), "tabby", k=3).hits, "the cats still answer"


def test_tags_written_before_the_neighbour_graph_answer_from_own_tags(data_dir: Path):
    _serve(data_dir, _two_kinds(np.array([0.9, 0.01, 0.0, 0.0, 0.0, 0.0])))
    next((data_dir / "tags").glob("*.neighbours.npz")).unlink()
    found = search_text(DataPaths(data_dir), "digital clock", k=12)
    assert [h.image_id for h in found.hits] == [1, 2]  # the images whose own tags say clock
    assert {h.matched_by for h in found.hits} == {OWN_TAGS}


def test_a_damaged_neighbours_file_is_one_line_saying_what_to_run(data_dir: Path):
    import pytest

    from embedding_assets.search.tags import readable

    _serve(data_dir, _two_kinds(np.array([0.9, 0.01, 0.0, 0.0, 0.0, 0.0])))
    assert readable(DataPaths(data_dir), "backbone-224px")
    next((data_dir / "tags").glob("*.neighbours.npz")).write_text("garbage")
    assert not readable(DataPaths(data_dir), "backbone-224px")  # image_tags writes it again
    with pytest.raises(LookupError, match=r"neighbours\.npz is not a neighbours file.*emb run"):
        search_text(DataPaths(data_dir), "digital clock", k=3)


def test_neighbours_are_other_images_of_the_same_kind():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 200))
    vectors = np.repeat(centres, 20, axis=0) + 0.1 * rng.normal(size=(60, 200))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 160)
    neighbours = nearest_images(vectors.astype(np.float32), ids)
    assert neighbours.shape == (60, NEIGHBOURS)
    assert not (neighbours == ids[:, None]).any(), "an image is not its own neighbour"
    kind = (ids - 100) // 20
    assert ((neighbours - 100) // 20 == kind[:, None]).all()
    assert (nearest_images(vectors[:1].astype(np.float32), ids[:1]) == -1).all()
