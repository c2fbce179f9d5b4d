"""Search as a service: answers from memory while a run holds the DuckDB writer, switches to a
newly published index without a restart or a failed request, grows the index in place (and
drops removed images), and answers batches."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.embedding.run import RunOptions, run_embeddings
from embedding_assets.search.searcher import Searcher
from embedding_assets.web.api import ServeOptions, create_app
from resources.duckdb_store import connect
from resources.storage import DataPaths
from tests.dagster_server import free_port, wait_for_http
from tests.search_setup import PARAMS, class_image, materialize_index, searchable
from tests.test_search_http import _png

HOLD_WRITER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("INSERT INTO labels (image_id, label, source) VALUES (1, 'held', 'test')")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


class Server:
    """A real uvicorn server on loopback in a thread, stopped on exit."""

    def __init__(self, db: Path, **options) -> None:
        self.app = create_app(db, ServeOptions(**options))
        self.port = free_port()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> httpx.Client:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        return self.http

    def __exit__(self, *exc) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.app.state.live.stop()


def _ids(db: Path) -> dict[str, int]:
    with connect(db, read_only=True) as con:
        rows = con.execute("SELECT image_id, path FROM images").fetchall()
    return {Path(p).parent.name + "/" + Path(p).name: i for i, p in rows}


def _grow(data_dir: Path, tmp: Path, new: dict[str, int]) -> dict:
    """Add images (name -> grey level) to the folder, re-scan, embed, index, publish."""
    for n, (name, level) in enumerate(new.items()):
        class_image(tmp / "images" / name, level, seed=5000 + n)
    return _reindex(data_dir, tmp)


def _reindex(data_dir: Path, tmp: Path) -> dict:
    paths = DataPaths(data_dir)
    scan_catalog(paths.catalog_db, tmp / "images")
    run_embeddings(paths, PARAMS, RunOptions(workers=0))
    result = materialize_index(data_dir, tmp)
    assert result.success
    return result.asset_materializations_for_node("similarity_index")[0].metadata


def test_search_answers_while_a_run_holds_the_writer(data_dir: Path, tmp_path: Path):
    assert searchable(data_dir, tmp_path).success
    db = DataPaths(data_dir).catalog_db
    query = _ids(db)["class_1/img_4.png"]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITER, str(db), "30"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(Exception, match="[Ll]ock"):  # the catalog really is locked
            connect(db, read_only=True, timeout_s=0.2).__enter__()
        # the server starts and answers with the writer held: nothing it does opens DuckDB
        with Server(db, reload_seconds=0.1) as http:
            for _ in range(50):
                res = http.get("/search", params={"image_id": query, "k": 5}, timeout=2)
                assert res.status_code == 200, res.text
                assert {r["label"] for r in res.json()["results"]} == {"class_1"}
            assert http.get("/search", params={"image_id": 10**9}).status_code == 404
            assert http.get("/health").json()["status"] == "ok"
    finally:
        holder.kill()
        holder.wait()


def test_hot_reload_switches_versions_without_failing_requests(data_dir: Path, tmp_path: Path):
    assert searchable(data_dir, tmp_path).success
    db = DataPaths(data_dir).catalog_db
    query = _ids(db)["class_0/img_3.png"]
    with Server(db, reload_seconds=0.1) as http:
        before = http.get("/health").json()
        assert before["vectors"] == 25 and before["reloads"] == 0
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=str(http.base_url), timeout=10) as client:
                while not stop.is_set() and len(statuses) < 20_000:  # bounded
                    statuses.append(client.get("/search", params={"image_id": query}).status_code)

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            meta = _grow(data_dir, tmp_path, {"class_0/new_a.png": 30, "class_0/new_b.png": 30})
            deadline = time.monotonic() + 20
            while http.get("/health").json()["index_version"] == before["index_version"]:
                assert time.monotonic() < deadline, "the new version was never picked up"
                time.sleep(0.1)
        finally:
            stop.set()
            worker.join(timeout=30)
        after = http.get("/health").json()
        assert after["index_version"] == meta["version"].value and after["vectors"] == 27
        assert after["reloads"] == 1
        assert statuses and set(statuses) == {200}, "no request failed during the switch"
        new_id = _ids(db)["class_0/new_a.png"]
        res = http.get("/search", params={"image_id": new_id, "k": 3}).json()
        assert {r["label"] for r in res["results"]} == {"class_0"}


def test_index_grows_in_place_and_drops_removed_images(data_dir: Path, tmp_path: Path):
    assert searchable(data_dir, tmp_path).success
    db = DataPaths(data_dir).catalog_db
    first = Searcher(db).record
    meta = _grow(data_dir, tmp_path, {"class_2/new_c.png": 220, "class_1/new_d.png": 128})
    assert meta["build"].value.startswith(f"updated {first.version} in place: +2 -0"), meta
    ids = _ids(db)
    grown = Searcher(db)
    assert grown.index.ntotal == 27 and grown.record.version == meta["version"].value
    hits = grown.by_id(ids["class_2/new_c.png"], 5)
    assert {h.label for h in hits} == {"class_2"}
    assert {h.label for h in grown.by_id(ids["class_1/new_d.png"], 5)} == {"class_1"}

    gone = ids["class_1/img_0.png"]
    (tmp_path / "images" / "class_1" / "img_0.png").unlink()
    meta = _reindex(data_dir, tmp_path)
    assert meta["build"].value.endswith("+0 -1 images"), meta["build"].value
    shrunk = Searcher(db)
    assert shrunk.index.ntotal == 26
    for other in ("class_1/img_1.png", "class_1/img_2.png"):
        assert gone not in {h.image_id for h in shrunk.by_id(ids[other], 20)}

    # beyond rebuild_fraction the index is rebuilt from scratch
    folder = tmp_path / "images" / "class_2"
    for n in range(10):
        class_image(folder / f"bulk_{n}.png", 220, seed=7000 + n)
    meta = _reindex(data_dir, tmp_path)
    assert meta["build"].value.startswith("full build (10 changes"), meta["build"].value
    assert Searcher(db).index.ntotal == 36
    folder = DataPaths(data_dir).indexes_dir / first.model_key
    assert len(list(folder.glob("*.faiss"))) == 4
    kept = {p.stem for p in folder.glob("*.snapshot")}
    assert kept == {meta["version"].value, shrunk.record.version}, "older snapshots pruned"


def test_batch_endpoints_and_bounds(data_dir: Path, tmp_path: Path):
    assert searchable(data_dir, tmp_path).success
    db = DataPaths(data_dir).catalog_db
    ids = _ids(db)
    with Server(db, max_k=7, max_batch=3, reload_seconds=0) as http:
        queries = [ids["class_0/img_1.png"], 424242, ids["class_2/img_2.png"]]
        res = http.post("/search/batch", json={"image_ids": queries, "k": 4})
        assert res.status_code == 200, res.text
        items = res.json()["results"]
        assert [i["status"] for i in items] == [200, 404, 200]
        assert {r["label"] for r in items[0]["results"]} == {"class_0"} and len(
            items[0]["results"]
        ) == 4
        assert "424242" in items[1]["error"]
        assert {r["label"] for r in items[2]["results"]} == {"class_2"}
        assert http.post("/search/batch", json={"image_ids": queries * 2}).status_code == 413
        assert http.post("/search/batch", json={"image_ids": []}).status_code == 422
        assert http.post("/search/batch", json={"image_ids": queries, "k": 8}).status_code == 422
        files = [
            ("files", ("dark.png", _png(30, 11, tmp_path), "image/png")),
            ("files", ("light.png", _png(220, 12, tmp_path), "image/png")),
        ]
        res = http.post("/search/batch/upload", files=files, data={"k": "3"})
        assert res.status_code == 200, res.text
        labels = [{r["label"] for r in item["results"]} for item in res.json()["results"]]
        assert labels == [{"class_0"}, {"class_2"}]
        bad = [files[0], ("files", ("broken.png", b"not an image", "image/png"))]
        res = http.post("/search/batch/upload", files=bad, data={"k": "3"})
        assert res.status_code == 400 and res.json()["detail"].startswith("broken.png: ")
        spec = http.get("/openapi.json").json()
        assert {"/search", "/search/batch", "/search/batch/upload", "/health"} <= set(spec["paths"])


def test_emb_serve_with_two_workers(data_dir: Path, tmp_path: Path):
    """The CLI's server: worker processes configured through the environment, on loopback."""
    assert searchable(data_dir, tmp_path).success
    db = DataPaths(data_dir).catalog_db
    query = _ids(db)["class_2/img_1.png"]
    port = free_port()
    emb = Path(sys.executable).parent / "emb"
    proc = subprocess.Popen(
        [str(emb), "serve", "--port", str(port), "--workers", "2", "--max-k", "6", "--verbose"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(20):  # spread over both workers
                res = http.get("/search", params={"image_id": query, "k": 6})
                assert res.status_code == 200 and len(res.json()["results"]) == 6
                assert {r["label"] for r in res.json()["results"]} == {"class_2"}
            assert http.get("/search", params={"image_id": query, "k": 7}).status_code == 422
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    lines = out.splitlines()
    base = f"http://127.0.0.1:{port}"
    assert lines[0] == f"emb serve on {base} (2 workers; Ctrl+C stops it)", out
    assert f"{base}/label " in out and f"{base}/atlas/ " in out and f"{base}/docs " in out
    assert f"Write token from {data_dir / 'web_token'} (made on first start" in out
    served = [line for line in lines if "GET /search?" in line]
    assert len(served) == 1 and "k=7" in served[0] and "422" in served[0], "errors only"
    assert lines[-1] == "emb serve stopped.", out
