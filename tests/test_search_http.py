"""HTTP search: answers by id and by upload, and turns hostile uploads into 4xx, not crashes."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from embedding_assets.search.searcher import Searcher
from embedding_assets.web.api import ServeOptions, create_app
from resources.storage import DataPaths
from tests.dagster_server import free_port
from tests.search_setup import class_image, searchable

LOOPBACK = "http://127.0.0.1"  # the Host the server answers to (TestClient's own is testserver)


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims width x height pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("http")
    assert searchable(tmp / "data", tmp).success
    return DataPaths(tmp / "data").catalog_db


@pytest.fixture(scope="module")
def client(db: Path) -> TestClient:
    return TestClient(
        create_app(db, ServeOptions(max_k=20, max_upload_bytes=200_000)), base_url=LOOPBACK
    )


def _upload(client, data: bytes, k: int = 5, name: str = "q.png"):
    return client.post("/search", files={"file": (name, data, "image/png")}, data={"k": str(k)})


def _png(level: int, seed: int, tmp: Path) -> bytes:
    return class_image(tmp / f"q{level}_{seed}.png", level, seed).read_bytes()


def test_health_and_search_by_id(client: TestClient, db: Path):
    health = client.get("/health")
    assert health.status_code == 200 and health.json()["vectors"] == 25
    query = Searcher(db).id_of_path(db.parent.parent / "images" / "class_1" / "img_4.png")
    res = client.get("/search", params={"image_id": query, "k": 5})
    assert res.status_code == 200
    body = res.json()
    assert body["query"] == {"image_id": query} and len(body["results"]) == 5
    assert {r["label"] for r in body["results"]} == {"class_1"}
    assert client.get("/search", params={"image_id": 424242}).status_code == 404


def test_k_is_bounded(client: TestClient):
    assert client.get("/search", params={"image_id": 1, "k": 0}).status_code == 422
    assert client.get("/search", params={"image_id": 1, "k": 21}).status_code == 422
    assert client.get("/search", params={"image_id": "abc"}).status_code == 422


def test_upload_finds_the_class(client: TestClient, tmp_path: Path):
    res = _upload(client, _png(220, 7, tmp_path))
    assert res.status_code == 200, res.text
    assert {r["label"] for r in res.json()["results"]} == {"class_2"}


def test_bad_uploads_get_4xx_with_a_message(client: TestClient, tmp_path: Path):
    cases = {
        "garbage": (b"this is not an image at all", 400, "not an image"),
        "empty": (b"", 400, "empty upload"),
        "truncated": (_png(30, 1, tmp_path)[:60], 400, "corrupt or truncated"),
        "bomb over our limit": (png_header_only(8000, 8000), 413, "over the 40000000 limit"),
        "bomb over Pillow's": (png_header_only(60000, 60000), 413, "decompression bomb"),
        "too large a body": (b"\x00" * 300_000, 413, "over 200000 bytes"),
    }
    for name, (data, status, message) in cases.items():
        res = _upload(client, data)
        assert res.status_code == status, (name, res.text)
        assert message in res.json()["detail"], (name, res.json())
    assert client.post("/search", data={"k": "5"}).status_code == 422  # no file at all
    assert client.get("/health").status_code == 200  # still alive


def test_no_index_is_a_503_that_says_why(tmp_path: Path):
    res = TestClient(create_app(tmp_path / "missing.duckdb"), base_url=LOOPBACK).get("/health")
    assert res.status_code == 503 and "No catalog at" in res.json()["detail"]


def test_real_socket_survives_bad_uploads(db: Path, tmp_path: Path):
    port = free_port()
    config = uvicorn.Config(create_app(db), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/health").json()["status"] == "ok"
            garbage = http.post("/search", files={"file": ("x.png", io.BytesIO(b"nope"))})
            assert garbage.status_code == 400
            bomb = http.post("/search", files={"file": ("b.png", png_header_only(9000, 9000))})
            assert bomb.status_code == 413
            ok = http.post(
                "/search", files={"file": ("q.png", _png(128, 3, tmp_path))}, data={"k": "3"}
            )
            assert ok.status_code == 200 and len(ok.json()["results"]) == 3
            assert {r["label"] for r in ok.json()["results"]} == {"class_1"}
            assert http.get("/health").status_code == 200
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
