"""The browser pages of `emb serve` (/label, /map, /atlas, /search/page) in headless Chromium,
against a real data folder: scanned images, real embeddings, a published index, clusters,
anomaly scores, a PCA map, a label-queue round and the map export, all made by the Dagster
assets. The server runs as its own
process, as `emb serve` does, so label writes and asset runs contend for the catalog for real.

Needs Debian's `chromium` for the browser tests (skipped without one); the token and thumbnail
checks run without a browser."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from embedding_assets.assets.analytics import anomaly_scores, clusters, projections
from embedding_assets.assets.map_export import map_export
from embedding_assets.assets.neighbors import neighbor_graph
from embedding_assets.assets.search import image_tags
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding.run import RunOptions, run_embeddings
from embedding_assets.web.api import SERVE_CONFIG_ENV, ServeOptions, create_app
from embedding_assets.web.atlas import INSTALL, viewer_dir
from resources.duckdb_store import connect
from resources.paths import DataPaths
from tests.al_helpers import AL_ASSETS
from tests.dagster_server import free_port, wait_for_http
from tests.helpers import resources
from tests.search_setup import LEVELS, PARAMS, class_image, materialize_index
from tests.test_e2e_browser import CHROMIUM_ARGS, chromium_path

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts" / "web_pages"
# scattergl needs WebGL: without a GPU Chromium draws it with SwiftShader, off unless asked for
WEBGL_ARGS = [a for a in CHROMIUM_ARGS if a != "--disable-gpu"] + [
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
TIMEOUT_MS = 30_000
LOOPBACK = "http://127.0.0.1"  # the Host the server answers to (TestClient's own is testserver)
QUEUE = {"label_queue": {"config": {"batch_size": 8}}}


@dataclass
class World:
    data: Path
    db: Path
    url: str = ""


def build(tmp: Path) -> World:
    """Three classes of 6 labeled images plus 12 unlabeled ones, through the real assets (the
    tags with the default backbone: the embeddings' random-weight one has no ImageNet head)."""
    folder = tmp / "images"
    for c, level in enumerate(LEVELS):
        for i in range(6):
            class_image(folder / f"class_{c}" / f"img_{i}.png", level, c * 100 + i)
    for i in range(12):
        class_image(folder / "unlabeled" / f"u_{i}.png", LEVELS[i % 3], 1000 + i)
    paths = DataPaths(tmp / "data")
    scan_catalog(paths.catalog_db, folder)
    run_embeddings(paths, PARAMS, RunOptions(workers=0))
    assert materialize_index(paths.root, tmp).success
    result = dg.materialize(
        [clusters, anomaly_scores, projections, image_tags, *AL_ASSETS, neighbor_graph, map_export],
        resources=resources(paths.root),
        run_config={"ops": {"projections": {"config": {"methods": ["pca"]}}, **QUEUE}},
        raise_on_error=False,
    )
    assert result.success
    return World(paths.root, paths.catalog_db)


def query(world: World, sql: str, params: list | None = None) -> list[tuple]:
    with connect(world.db, read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build(tmp_path_factory.mktemp("web"))


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[World]:
    with serving(world):
        yield world


@contextmanager
def serving(world: World) -> Iterator[World]:
    """`emb serve`'s app in its own process (one worker) on a free port."""
    port = free_port()
    env = {**os.environ, SERVE_CONFIG_ENV: json.dumps({"db_path": str(world.db)})}
    env.pop("EMB_WEB_TOKEN", None)
    cmd = [sys.executable, "-m", "uvicorn", "embedding_assets.web.api:app_from_env"]
    cmd += ["--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    world.url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{world.url}/label/round", proc)
        yield world
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser(server: World):
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # expect()'s own default is 5 s, too short for DuckDB-WASM's first count on a loaded
    # 2-core machine (seen with the suite on two workers): the pages' timeout applies to both
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=executable, args=WEBGL_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, request):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    page.screenshot(path=ARTIFACTS / f"{request.node.name}.png")
    page.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def web_labels(world: World) -> list[tuple[int, str]]:
    return query(world, "SELECT image_id, label FROM labels WHERE source = 'web' ORDER BY label_id")


# -- without a browser --------------------------------------------------------------------------
def test_writes_need_the_token_and_thumbnails_need_a_known_id(world: World):
    app = create_app(world.db, ServeOptions(reload_seconds=0))
    token = app.state.pages.token
    (some_id,) = query(world, "SELECT min(image_id) FROM usable_images")[0]
    (broken_id,) = query(world, "SELECT coalesce(max(image_id), 0) + 1000 FROM images")[0]
    with TestClient(app, base_url=LOOPBACK) as client:
        body = {"image_ids": [some_id], "label": "x"}
        assert client.post("/label/answer", json=body).status_code == 403
        wrong = {"X-Emb-Token": token[:-1] + ("A" if token[-1] != "A" else "B")}
        assert client.post("/label/answer", json=body, headers=wrong).status_code == 403
        evil = {"X-Emb-Token": token, "Origin": "https://evil.example"}
        assert client.post("/label/answer", json=body, headers=evil).status_code == 403
        assert query(world, "SELECT count(*) FROM labels WHERE label = 'x'")[0][0] == 0
        assert token in client.get("/label").text, "the page carries the token"
        assert client.get(f"/thumb/{broken_id}").status_code == 404
        assert client.get("/thumb/-1").status_code == 404
        assert client.get("/thumb/..%2F..%2Fetc%2Fpasswd").status_code in (404, 422)
        thumb = client.get(f"/thumb/{some_id}")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert thumb.content[:2] == b"\xff\xd8"
        assert list((world.data / "thumbnails").glob(f"{some_id}-*.jpg")), "cached as a file"
        big = {"image_ids": [some_id], "label": "y" * 10_000}
        assert (
            client.post("/label/answer", json=big, headers={"X-Emb-Token": token}).status_code
            == 422
        )
        js = client.get("/web/plotly.min.js")
        assert js.status_code == 200 and len(js.content) > 1_000_000, "plotly served offline"


needs_atlas = pytest.mark.skipif(viewer_dir() is None, reason=f"no Atlas viewer: {INSTALL}")


@needs_atlas
def test_atlas_serves_the_map_export_not_the_catalog(world: World, tmp_path: Path):
    """/atlas's data is the Parquet file map_export wrote: every mapped image with its label,
    prediction, cluster, thumbnail URL on this server and 10 nearest neighbours; the cluster
    names sit at each cluster; a projection the export lacks, or no export, says what to run."""
    app = create_app(world.db, ServeOptions(reload_seconds=0))
    (mapped,) = query(world, "SELECT count(*) FROM projections")[0]
    labels = dict(query(world, "SELECT image_id, label FROM current_labels"))
    with TestClient(app, base_url=LOOPBACK) as client:
        assert client.get("/atlas", follow_redirects=False).headers["location"] == "/atlas/pca/"
        assert '<div id="app"' in client.get("/atlas/pca/").text, "the viewer, served here"
        meta = client.get("/atlas/pca/data/metadata.json").json()
        data = meta["props"]["data"]
        assert (
            data["projection"] == {"x": "pca_x", "y": "pca_y"}
            and meta["database"]["type"] == "wasm"
        )
        names = [label["text"] for label in meta["props"]["embeddingViewLabels"]]
        named = {int(n.split(" (")[1].rstrip(")")) for n in names}
        assert named == {c for (c,) in query(world, "SELECT DISTINCT cluster FROM clusters")}
        colour = meta["props"]["defaultChartsConfig"]["embedding"]["data"]
        assert colour == {
            "x": "pca_x",
            "y": "pca_y",
            "text": "text",
            "image": "thumbnail",
            "neighbors": "neighbors",
            "category": "label",  # 18 of the 30 images are labeled
        }
        assert all(n.split(" (")[0] in set(labels.values()) for n in names), names
        umap = client.get("/atlas/umap/data/metadata.json")
        assert umap.status_code == 404 and "projections" in umap.json()["detail"]
        odd = client.get(f"/atlas/{'x' * 5000}/data/metadata.json")
        assert odd.status_code == 404 and len(odd.text) < 200, "the path is not echoed back"
        body = client.get("/atlas/pca/data/dataset.parquet")
    table = pq.read_table(io.BytesIO(body.content)).to_pylist()
    assert len(table) == mapped
    ids = {row["image_id"] for row in table}
    for row in table:
        assert row["thumbnail"] == f"{LOOPBACK}/thumb/{row['image_id']}"
        assert row["label"] == labels.get(row["image_id"])
        assert row["predicted"] is not None and row["cluster"] is not None
        near = row["neighbors"]["ids"]
        assert len(near) == 10 and row["image_id"] not in near and set(near) <= ids
        assert row["neighbors"]["distances"] == sorted(row["neighbors"]["distances"])

    again = dg.materialize([map_export], resources=resources(world.data))
    meta = again.asset_materializations_for_node("map_export")[0].metadata
    assert "reused" in meta, "nothing it shows changed: the file is kept"

    export = world.data / "map_points.parquet"
    whole = export.read_bytes()
    export.write_bytes(whole[: len(whole) // 2])  # damaged (a full disk, a bad copy)
    with TestClient(
        create_app(world.db, ServeOptions(reload_seconds=0)), base_url=LOOPBACK
    ) as client:
        broken = client.get("/atlas/pca/data/metadata.json")
    assert broken.status_code == 503 and "materialize `map_export` again" in broken.text
    rebuilt = dg.materialize([map_export], resources=resources(world.data))
    assert "reused" not in rebuilt.asset_materializations_for_node("map_export")[0].metadata
    assert pq.read_table(export).num_rows == mapped, "a damaged export is written again"

    empty = DataPaths(tmp_path / "none")
    with connect(empty.catalog_db):  # a catalog with its tables and nothing mapped yet
        pass
    with TestClient(
        create_app(empty.catalog_db, ServeOptions(reload_seconds=0)), base_url=LOOPBACK
    ) as client:
        missing = client.get("/atlas/pca/data/metadata.json")
    assert missing.status_code == 503 and "map_export" in missing.json()["detail"]


def test_atlas_opens_coloured_with_names_inside_the_points(tmp_path: Path):
    """Coloured by label when most images have one, else by cluster; a cluster name at the
    edge of the points moves a margin inside, where the viewer does not cut it."""
    import pyarrow as pa

    from embedding_assets.web.atlas import read_export

    def export(labels: list) -> Path:
        path = tmp_path / f"{len([x for x in labels if x])}.parquet"
        pq.write_table(
            pa.table(
                {
                    "cluster": [0, 0, 1, 1],
                    "pca_x": [0.0, 0.1, 10.0, 9.9],
                    "pca_y": [0.0, 0.0, 100.0, 100.0],
                    "label": labels,
                    "predicted": [None] * 4,
                    "tag": ["a", "a", "b", "b"],
                },
                schema=pa.schema(
                    [
                        ("cluster", pa.int32()),
                        ("pca_x", pa.float32()),
                        ("pca_y", pa.float32()),
                        ("label", pa.string()),
                        ("predicted", pa.string()),
                        ("tag", pa.string()),
                    ]
                ),
            ),
            path,
        )
        return path

    few = read_export(export(["x", None, None, None]))
    assert few.colour_by == "cluster"
    assert [(n["x"], n["y"], n["text"]) for n in few.labels["pca"]] == [
        (pytest.approx(0.8), pytest.approx(8.0), "x (0)"),  # 8% in from the corner
        (pytest.approx(9.2), pytest.approx(92.0), "b (1)"),
    ]
    assert read_export(export(["x", "x", "y", None])).colour_by == "label"


def test_a_cluster_the_map_draws_in_two_places_is_named_in_both(tmp_path: Path):
    import numpy as np
    import pyarrow as pa

    from embedding_assets.web.atlas import read_export

    rng = np.random.default_rng(0)
    spots = [
        (0, (0, 0), "a", 10),
        (0, (10, 10), "b", 10),
        (1, (10, 0), "c", 10),
        (1, (0, 10), "d", 1),
    ]
    rows = [
        (cluster, x + rng.normal(0, 0.1), y + rng.normal(0, 0.1), label)
        for cluster, (x, y), label, n in spots
        for _ in range(n)
    ]
    cluster, x, y, label = (list(c) for c in zip(*rows, strict=True))
    none = [None] * len(rows)
    path = tmp_path / "map.parquet"
    pq.write_table(
        pa.table(
            {
                "cluster": cluster,
                "pca_x": x,
                "pca_y": y,
                "label": label,
                "predicted": none,
                "tag": none,
            },
            schema=pa.schema(
                [("cluster", pa.int32()), ("pca_x", pa.float32()), ("pca_y", pa.float32())]
                + [(c, pa.string()) for c in ("label", "predicted", "tag")]
            ),
        ),
        path,
    )
    names = {n["text"]: (round(n["x"]), round(n["y"])) for n in read_export(path).labels["pca"]}
    assert names == {"a (0)": (1, 1), "b (0)": (9, 9), "c (1)": (9, 1)}, "d's lone point: no name"


HOLD_WRITER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_pages_answer_while_a_run_holds_the_catalog(world: World):
    """Page data is a quick 503 (the page retries); thumbnails still come from the cache, or
    from the served index's snapshot."""
    app = create_app(world.db, ServeOptions(reload_seconds=0))
    ids = [r[0] for r in query(world, "SELECT image_id FROM usable_images ORDER BY 1")]
    with TestClient(app, base_url=LOOPBACK) as client:
        assert client.get(f"/search?image_id={ids[0]}&k=2").status_code == 200  # index loaded
        assert client.get(f"/thumb/{ids[0]}").status_code == 200
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_WRITER, str(world.db), "30"], stdout=subprocess.PIPE
        )
        try:
            assert holder.stdout.readline().strip() == b"holding"
            started = time.monotonic()
            busy = client.get("/label/data")
            assert busy.status_code == 503 and "busy" in busy.json()["detail"]
            assert time.monotonic() - started < 10
            assert client.get(f"/thumb/{ids[0]}").status_code == 200, "known: no catalog read"
            assert client.get(f"/thumb/{ids[-1]}").status_code == 200, "from the snapshot"
        finally:
            holder.kill()
            holder.wait()


def test_thumbnails_are_small_and_cached(tmp_path: Path):
    from PIL import Image

    from embedding_assets.web.thumbnails import Thumbnails

    source = tmp_path / "wide.png"
    Image.new("RGB", (600, 300), (200, 10, 10)).save(source)
    thumbs = Thumbnails(tmp_path / "thumbnails", max_px=128, memory_items=2)
    data = thumbs.get(7, source, "abc")
    assert Image.open(io.BytesIO(data)).size == (128, 64)
    source.unlink()  # from now on only the caches can answer
    assert thumbs.get(7, source, "abc") == data
    assert Thumbnails(tmp_path / "thumbnails").get(7, source, "abc") == data, "file cache"
    with pytest.raises(FileNotFoundError):
        thumbs.get(7, source, "changed")  # new content: not the old thumbnail


# -- in the browser -----------------------------------------------------------------------------
def current_id(page) -> int:
    return int(page.locator(".card.current").get_attribute("data-image-id"))


def test_label_by_keyboard_then_the_next_round_appears(server: World, page):
    from playwright.sync_api import expect

    page.goto(f"{server.url}/label")
    expect(page.locator(".card")).to_have_count(8)
    ((n_labels, accuracy),) = query(server, "SELECT n_labels, accuracy FROM learning_curve")
    expect(page.locator("#curve circle")).to_have_count(1)
    notes = page.locator("#curve .curvenote")  # one dot, said in words, not a range of labels
    expect(notes.first).to_have_text(
        f"round 1: {n_labels} labels, accuracy {accuracy:.3f} (5-fold cv)"
    )
    expect(notes.last).to_have_text("one point a round: a line from the next round")
    expect(page.locator("#curve")).not_to_contain_text("–")
    uncertainties = [float(t.split()[1]) for t in page.locator(".card .unc").all_inner_texts()]
    assert uncertainties == sorted(uncertainties, reverse=True), "most uncertain first"
    classes = page.locator("button.cls").all_inner_texts()
    assert [c[1:] for c in classes[:3]] == ["class_0", "class_1", "class_2"]
    expect(page.locator("img").first).to_have_js_property("complete", True)

    first = current_id(page)
    page.keyboard.press("1")
    expect(page.locator("#msg")).to_have_text(f"labeled #{first} as class_0")
    second = current_id(page)
    page.keyboard.press("s")
    expect(page.locator("#msg")).to_have_text(f"skipped #{second}")
    page.keyboard.press("u")
    assert current_id(page) == second
    page.keyboard.press("n")
    page.keyboard.type("odd_one")
    page.keyboard.press("Enter")
    expect(page.locator("#msg")).to_have_text(f"labeled #{second} as odd_one")
    third = current_id(page)
    page.keyboard.press("4")  # the new class is key 4 now
    expect(page.locator("#msg")).to_have_text(f"labeled #{third} as odd_one")
    page.keyboard.press("u")  # undo: #third comes back, the next answer replaces the label
    assert current_id(page) == third
    page.keyboard.press("3")
    expect(page.locator("#msg")).to_have_text(f"labeled #{third} as class_2")
    expect(page.locator(".card")).to_have_count(5)
    assert web_labels(server) == [
        (first, "class_0"),
        (second, "odd_one"),
        (third, "odd_one"),
        (third, "class_2"),
    ]
    assert query(server, "SELECT label FROM current_labels WHERE image_id = ?", [third]) == [
        ("class_2",)
    ]

    # What label_sensor + the automation do after new labels: retrain, predict, a new round.
    assert dg.materialize(
        AL_ASSETS, resources=resources(server.data), run_config={"ops": QUEUE}
    ).success
    assert query(server, "SELECT max(round) FROM label_requests") == [(2,)]
    expect(page.locator("#banner")).to_be_visible()
    expect(page.locator("#bannertext")).to_contain_text("round 2")
    page.get_by_role("button", name="Show the next round").click()
    expect(page.locator("#roundinfo")).to_contain_text("round 2")
    expect(page.locator("#curve circle")).to_have_count(2)
    low, high = query(server, "SELECT min(n_labels), max(n_labels) FROM learning_curve")[0]
    expect(page.locator("#curve")).to_contain_text(f"{low}–{high} labels")
    labeled = {first, second, third}
    shown = {
        int(i)
        for i in page.locator(".card").evaluate_all("cards => cards.map(c => c.dataset.imageId)")
    }
    assert shown and not shown & labeled, "the next round asks about other images"
    fourth = current_id(page)  # Enter accepts the prediction
    predicted = page.locator(".card.current div").first.inner_text().split()[1]
    page.keyboard.press("Enter")
    expect(page.locator("#msg")).to_have_text(f"labeled #{fourth} as {predicted}")
    assert web_labels(server)[-1] == (fourth, predicted)


def test_label_page_starts_from_no_labels(browser, tmp_path: Path):
    """A folder with no labels: the page shows the cold-start round (no predictions, images
    that cover the data), says how to name the first class, and labels with it."""
    from playwright.sync_api import expect

    for i in range(12):
        class_image(tmp_path / "images" / "unlabeled" / f"u_{i}.png", LEVELS[i % 3], 2000 + i)
    paths = DataPaths(tmp_path / "data")
    scan_catalog(paths.catalog_db, tmp_path / "images")
    run_embeddings(paths, PARAMS, RunOptions(workers=0))
    result = dg.materialize(
        AL_ASSETS, resources=resources(paths.root), run_config={"ops": QUEUE}, raise_on_error=False
    )
    assert result.success
    cold = World(paths.root, paths.catalog_db)
    with serving(cold):
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{cold.url}/label")
        expect(page.locator(".card")).to_have_count(8)
        expect(page.locator(".card").first).to_contain_text("no prediction yet")
        expect(page.locator(".card").first).to_contain_text("asked to cover the data")
        expect(page.locator("#noclasses")).to_contain_text("No classes yet: press n")
        expect(page.locator("#curve .curvenote").first).to_have_text(
            "no classifier yet: the curve starts with the"
        )
        first = current_id(page)
        page.keyboard.press("n")
        page.keyboard.type("grey")
        page.keyboard.press("Enter")
        expect(page.locator("#msg")).to_have_text(f"labeled #{first} as grey")
        expect(page.locator("button.cls")).to_have_text(["1grey"])
        page.screenshot(path=ARTIFACTS / "test_label_page_starts_from_no_labels.png")
        page.close()
    assert web_labels(cold) == [(first, "grey")]


def test_map_lasso_labels_points_and_hover_shows_the_thumbnail(server: World, page):
    from playwright.sync_api import expect

    page.goto(f"{server.url}/map")
    page.wait_for_function("window.embMap && window.embMap.rendered !== null")
    n = page.evaluate("embMap.data.n")
    assert n == query(server, "SELECT count(*) FROM projections")[0][0]
    names = page.evaluate("embMap.data.label.names")
    assert names == sorted(r[0] for r in query(server, "SELECT DISTINCT label FROM current_labels"))

    # hover a point: its thumbnail shows
    point = page.evaluate(
        """() => { const gd = document.getElementById('plot'), L = gd._fullLayout;
                  const r = gd.querySelector('.nsewdrag').getBoundingClientRect();
                  const d = embMap.data;
                  return [r.left + L.xaxis.l2p(d.x[0]), r.top + L.yaxis.l2p(d.y[0]), d.ids[0]]; }"""
    )
    page.mouse.move(point[0], point[1])
    expect(page.locator("#tip")).to_be_visible()
    expect(page.locator("#tip img")).to_have_attribute("src", f"/thumb/{point[2]}")

    # lasso a rectangle around the left half of the points
    box = page.locator(".nsewdrag").bounding_box()
    mid = page.evaluate(
        "() => { const xs = [...embMap.data.x].sort((a, b) => a - b); "
        "return xs[Math.floor(xs.length / 2)]; }"
    )
    split = box["x"] + page.evaluate(
        f"document.getElementById('plot')._fullLayout.xaxis.l2p({mid})"
    )
    left, top, bottom = box["x"] + 2, box["y"] + 2, box["y"] + box["height"] - 2
    page.mouse.move(left, top)
    page.mouse.down()
    for x, y in ((split - 1, top), (split - 1, bottom), (left, bottom), (left, top + 1)):
        page.mouse.move(x, y, steps=8)
    page.mouse.up()
    page.wait_for_function("embMap.selected.length > 0")
    chosen = page.evaluate("embMap.selected.map(i => embMap.data.ids[i])")
    assert 0 < len(chosen) < n, chosen
    expect(page.locator("#count")).to_have_text(f"{len(chosen)} selected")
    page.fill("#labelinput", "lassoed")
    page.click("#labelsel")
    expect(page.locator("#msg")).to_contain_text(f"labeled {len(chosen)} image(s) as lassoed")
    got = query(server, "SELECT image_id FROM labels WHERE label = 'lassoed' AND source = 'web'")
    assert sorted(r[0] for r in got) == sorted(chosen)

    # colour modes redraw without errors, and a selection goes to the search page
    for mode in ("cluster", "predicted", "anomaly", "label"):
        page.select_option("#colour", mode)
    page.evaluate(f"embMap.select([{chosen[0]}])")
    page.click("#searchsel")
    page.wait_for_url(f"**/search/page?image_id={chosen[0]}")
    expect(page.locator(".hit").first).to_be_visible()


@needs_atlas
def test_atlas_draws_the_points_with_cluster_names_and_filters_by_label(server: World, page):
    """Embedding Atlas on the real embeddings: every point, a name per cluster, and a click on
    a label in its chart cross-filters the map to that label's images; nothing is fetched
    from outside this server (the viewer, DuckDB-WASM and the fonts are all local)."""
    import re

    from playwright.sync_api import expect

    outside: list[str] = []
    local = (server.url, "data:", "blob:")
    page.on("request", lambda r: None if r.url.startswith(local) else outside.append(r.url))
    (n,) = query(server, "SELECT count(*) FROM projections")[0]
    page.goto(f"{server.url}/atlas")
    page.wait_for_url("**/atlas/pca/**")
    expect(page.get_by_text(f"{n} / {n} points")).to_be_visible()
    expect(page.locator("canvas").first).to_be_visible()
    view = page.locator("canvas").first.bounding_box()
    for (cluster,) in query(server, "SELECT DISTINCT cluster FROM clusters"):
        name = page.locator("svg text", has_text=f"({cluster})").first
        expect(name).to_be_visible()
        box = name.bounding_box()
        assert view["y"] <= box["y"] and box["y"] + box["height"] <= view["y"] + view["height"]
        assert view["x"] <= box["x"] and box["x"] + box["width"] <= view["x"] + view["width"]
    colour = page.locator("select", has=page.locator("option", has_text="label (VARCHAR)"))
    expect(colour.first).to_have_value('"label"')  # coloured when it opens, not "--"
    # the export is the labels when map_export ran (the label page's test has added some since)
    shown = pq.read_table(server.data / "map_points.parquet", columns=["label"]).column("label")
    label = min(v for v in shown.to_pylist() if v is not None)
    count = shown.to_pylist().count(label)
    page.locator("div.whitespace-nowrap", has_text=re.compile(f"^{label}$")).first.click()
    expect(page.get_by_text(f"{count} / {n} points")).to_be_visible()
    assert not outside, f"requests left the machine: {outside[:5]}"


def test_search_page_by_upload(server: World, page, tmp_path: Path):
    from playwright.sync_api import expect

    query_image = class_image(tmp_path / "bright.png", LEVELS[2], 4242)
    page.goto(f"{server.url}/search/page")
    page.set_input_files("#file", str(query_image))
    # the first upload loads the embedding model in the server: allow for a slow machine
    expect(page.locator(".hit").first).to_be_visible(timeout=120_000)
    assert page.locator(".hit").count() >= 5
    sims = [float(t) for t in page.locator(".hit .sim").all_inner_texts()]
    assert sims == sorted(sims, reverse=True)
    expect(page.locator(".hit img").first).to_have_js_property("complete", True)
    width = page.locator(".hit img").first.evaluate("img => img.naturalWidth")
    assert width > 0, "the result thumbnail decoded"


def test_search_page_by_words(server: World, page):
    from playwright.sync_api import expect

    ((tag, count),) = query(
        server,
        "SELECT tag, count(*) FROM image_tags WHERE rank = 1 GROUP BY 1 ORDER BY 2 DESC LIMIT 1",
    )
    word = tag.split(",")[0]  # "window screen, ..." -> the first name of the commonest tag
    page.goto(f"{server.url}/search/page")
    page.fill("#words", word)
    page.press("#words", "Enter")
    expect(page.locator(".hit").first).to_be_visible()
    assert page.locator(".hit").count() >= count
    assert word in page.locator(".hit").first.inner_text()
    captions = page.locator(".hit").all_inner_texts()  # own tags, or the tagged ones it is like
    assert all(word in c or re.search(r"like #\d+", c) for c in captions), captions
    assert f"?text={word.replace(' ', '%20')}" in page.url
    expect(page.locator("#msg")).to_contain_text("the backbone's classifier head")
    expect(page.locator("#twomodels")).to_contain_text("two models, so two model keys")
    tagged = {t for (t,) in query(server, "SELECT DISTINCT term FROM image_tags_expanded")}
    words = ("truck", "goldfish", "volcano", "tabby cat", "lighthouse", "pizza", "jellyfish")
    absent = next(w for w in words if w not in tagged)
    page.fill("#words", f"a red {absent}")
    page.press("#words", "Enter")
    expect(page.locator("h3")).to_have_text(f"No image of “a red {absent}” here")
    expect(page.locator("#msg")).to_contain_text(f"no image here is tagged as {absent}")
    expect(page.locator("#msg")).to_contain_text("nearest tags here in WordNet: ")
    page.fill("#words", "qwzzx")
    page.press("#words", "Enter")
    expect(page.locator("#msg.err")).to_contain_text("names no class")
