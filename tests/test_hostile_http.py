"""Hostile HTTP requests to `emb serve`'s app, round two (issue 37): one row per finding, each a
4xx with a short reason and nothing written. The next attacker's finding is one more row."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.web.api import ServeOptions, create_app
from resources.paths import DataPaths
from tests.al_helpers import query
from tests.helpers import write_image


@dataclass(frozen=True)
class Attack:
    what: str
    method: str
    url: str
    body: str | None  # raw JSON text: NaN and Infinity are what a hostile client sends
    status: int
    says: str  # in the answer's text


ATTACKS = [
    Attack("NaN id", "POST", "/search/batch", '{"image_ids":[NaN],"k":3}', 422, '"input":"NaN"'),
    Attack("infinite k", "POST", "/search/batch", '{"image_ids":[1],"k":Infinity}', 422, "finite"),
    Attack("NaN label id", "POST", "/label/answer", '{"image_ids":[NaN],"label":"x"}', 422, "NaN"),
    Attack(
        "true as id", "POST", "/label/answer", '{"image_ids":[true],"label":"x"}', 422, "integer"
    ),
    Attack('"1" as id', "POST", "/label/answer", '{"image_ids":["1"],"label":"x"}', 422, "integer"),
    Attack(
        "true in a batch", "POST", "/search/batch", '{"image_ids":[true],"k":3}', 422, "integer"
    ),
    Attack("1.0 as a path id", "GET", "/thumb/1.0", None, 422, "whole number"),
    Attack("+1 as a path id", "GET", "/thumb/+1", None, 422, "whole number"),
    Attack("1.0 as a query id", "GET", "/search?image_id=1.0", None, 422, "whole number"),
    *[
        Attack(
            f"U+{ord(ch):04X} in a label", "POST", "/label/answer", body, 422, f"U+{ord(ch):04X}"
        )
        for ch in "\u202e\u2066\u200b\u200d\ufeff\U000e0041\uffff\u00ad\u3164\u2800"
        for body in ['{"image_ids":[ID],"label":' + json.dumps(ch + "god") + "}"]
    ],
]


def _png(width: int, height: int, *chunks: tuple[bytes, bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    head = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + b"".join(chunk(*c) for c in chunks)


# A PNG that claims 6000 x 6000 pixels (under the pixel limit) and holds next to none of them.
TRUNCATED = {
    "header and end only": _png(6000, 6000, (b"IEND", b"")),
    "a few rows, then the end": _png(
        6000, 6000, (b"IDAT", zlib.compress(bytes(999))), (b"IEND", b"")
    ),
    "cut inside its data (97 bytes)": _png(6000, 6000, (b"IDAT", zlib.compress(bytes(99_999))))[
        :97
    ],
}


@pytest.mark.parametrize("name", TRUNCATED)
def test_a_truncated_upload_is_a_400(served, name: str):
    client, _, _ = served
    data = TRUNCATED[name]
    one = client.post("/search", files={"file": ("q.png", data, "image/png")}, data={"k": "3"})
    assert one.status_code == 400 and "truncated" in one.json()["detail"], one.text
    many = [("files", ("a.png", data, "image/png"))]
    batch = client.post("/search/batch/upload", files=many, data={"k": "3"})
    assert batch.status_code == 400 and batch.json()["detail"].startswith("a.png: "), batch.text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[TestClient, Path, int]:
    tmp = tmp_path_factory.mktemp("hostile_http")
    write_image(tmp / "images" / "a.png", seed=1)
    data = tmp / "data"
    scan_catalog(DataPaths(data).catalog_db, tmp / "images")
    (image_id,) = query(data, "SELECT image_id FROM images")[0]
    app = create_app(DataPaths(data).catalog_db, ServeOptions(reload_seconds=0))
    return TestClient(app, base_url="http://127.0.0.1"), data, image_id


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.what for a in ATTACKS])
def test_a_hostile_request_is_a_4xx_that_writes_nothing(served, attack: Attack):
    client, data, image_id = served
    token = client.app.state.pages.token
    body = None if attack.body is None else attack.body.replace("ID", str(image_id))
    headers = {"Content-Type": "application/json", "X-Emb-Token": token}
    answer = client.request(attack.method, attack.url, content=body, headers=headers)
    assert answer.status_code == attack.status, answer.text
    assert attack.says in answer.text and len(answer.text) < 600, answer.text
    assert query(data, "SELECT count(*) FROM labels") == [(0,)]


def test_a_plain_id_and_a_plain_label_still_pass(served):
    """The same requests, sent right, are answered: the rows above refuse the attack only."""
    client, data, image_id = served
    token = client.app.state.pages.token
    answer = client.post(
        "/label/answer",
        json={"image_ids": [image_id], "label": "cat\u00a0dog"},  # a no-break space: a space
        headers={"X-Emb-Token": token},
    )
    assert answer.status_code == 200, answer.text
    assert client.get(f"/thumb/{image_id}").status_code == 200
    assert query(data, "SELECT label FROM labels WHERE source = 'web'") == [("cat dog",)]


def test_docs_load_nothing_from_outside(served):
    """/docs worked only online (Swagger UI from a CDN): now a page of this server's own."""
    import re

    client, _, _ = served
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for route in ("/search", "/search/batch", "/search/batch/upload", "/health"):
        assert f"<code>{route}</code>" in page.text
    assert not re.findall(r"(?:src|href)=\"(?:https?:)?//", page.text), "no outside URL"
    assert client.get("/redoc").status_code == 404
