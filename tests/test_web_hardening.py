"""Issue 28: `emb serve` against a hostile page and hostile clients, each on a real `emb serve`
(two worker processes) on loopback: DNS rebinding (forged Host and Origin headers), ids past
64 bits, control characters and other bad labels, and concurrent label writers whose answers
must add up to the rows in the labels table."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from resources.duckdb_store import connect
from resources.paths import DataPaths
from tests.dagster_server import free_port, wait_for_http
from tests.search_setup import searchable

REPO = Path(__file__).resolve().parents[1]
EMB = Path(sys.executable).with_name("emb")
HUGE = 99999999999999999999999  # past 64 bits
TOKEN_HEADER = "X-Emb-Token"


@dataclass
class Served:
    url: str
    port: int
    db: Path
    token: str

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        for _ in range(100):  # the server's writes hold the catalog for milliseconds
            try:
                with connect(self.db, read_only=True, timeout_s=10) as con:
                    return con.execute(sql, params or []).fetchall()
            except Exception as exc:  # noqa: BLE001 - a same-process clash: retry
                last = exc
                time.sleep(0.1)
        raise last


def _serve(data: Path, *options: str, port: int | None = None) -> tuple[subprocess.Popen, int]:
    port = port or free_port()
    env = {**os.environ, "EMB_DATA_DIR": str(data)}
    env.pop("EMB_WEB_TOKEN", None)
    cmd = [str(EMB), "serve", "--port", str(port), "--workers", "2", *options]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/label/round", proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hardening")
    assert searchable(tmp / "data", tmp).success
    return tmp / "data"


@pytest.fixture(scope="module")
def served(data: Path) -> Iterator[Served]:
    proc, port = _serve(data)
    try:
        token = (data / "web_token").read_text().strip()
        yield Served(f"http://127.0.0.1:{port}", port, DataPaths(data).catalog_db, token)
    finally:
        _stop(proc)


def _usable(served: Served) -> list[int]:
    return [r[0] for r in served.rows("SELECT image_id FROM usable_images ORDER BY 1")]


def _post(http: httpx.Client, served: Served, ids: list, label, **headers) -> httpx.Response:
    return http.post(
        "/label/answer",
        json={"image_ids": ids, "label": label},
        headers={TOKEN_HEADER: served.token, **headers},
    )


# -- 1. DNS rebinding: the Host allow-list and the Origin check ---------------------------------
PAGES_AND_DATA = [
    "/",
    "/label",
    "/map",
    "/search/page",
    "/label/data",
    "/label/round",
    "/map/data",
    "/health",
    "/search?image_id=1&k=2",
    "/thumb/1",
    "/docs",
    "/openapi.json",
    "/web/plotly.min.js",
]


def test_a_rebound_host_name_gets_nothing_and_writes_nothing(served: Served):
    evil = f"evil.com:{served.port}"
    before = served.rows("SELECT count(*) FROM labels")[0][0]
    with served.client() as http:
        for path in PAGES_AND_DATA:
            res = http.get(path, headers={"Host": evil})
            assert res.status_code == 400, (path, res.status_code)
            assert served.token not in res.text, path
            assert "host not allowed: evil.com" in res.json()["detail"], path
            assert "--allowed-host" in res.json()["detail"], path
        (some,) = _usable(served)[:1]
        res = _post(http, served, [some], "evil", Host=evil, Origin=f"http://{evil}")
        assert res.status_code == 400, res.text
        res = http.post("/search/batch", json={"image_ids": [some]}, headers={"Host": evil})
        assert res.status_code == 400
        for name in ("attacker.example", "127.0.0.1.evil.com", "localhost.evil.com", "[::2]"):
            assert http.get("/label", headers={"Host": f"{name}:{served.port}"}).status_code == 400
        assert http.get("/label", headers={"Host": ""}).status_code == 400
    assert served.rows("SELECT count(*) FROM labels")[0][0] == before


def test_the_names_the_server_is_bound_to_are_served(served: Served):
    with served.client() as http:
        for host in ("127.0.0.1", "localhost", "LocalHost", "[::1]"):
            res = http.get("/label", headers={"Host": f"{host}:{served.port}"})
            assert res.status_code == 200, (host, res.text)
            assert served.token in res.text
        assert http.get("/health", headers={"Host": "127.0.0.1"}).status_code == 200


def test_origin_must_be_this_server_scheme_host_and_port(served: Served):
    (some,) = _usable(served)[:1]
    host = f"127.0.0.1:{served.port}"
    with served.client() as http:
        for origin in (
            f"https://{host}",  # another scheme
            f"http://127.0.0.1:{served.port + 1}",  # another port
            f"http://localhost:{served.port}",  # another of our names: another origin
            "http://evil.com",
            "null",  # a sandboxed frame or a file:// page
        ):
            res = _post(http, served, [some], "forged", Origin=origin)
            assert res.status_code == 403, (origin, res.text)
            assert "cross-site" in res.json()["detail"]
        res = _post(http, served, [some], "cross", Origin=f"http://{host}")
        assert res.status_code == 200, res.text
        res = _post(http, served, [some], "fetchsite", **{"Sec-Fetch-Site": "cross-site"})
        assert res.status_code == 403
    assert served.rows("SELECT count(*) FROM labels WHERE label IN ('forged', 'fetchsite')") == [
        (0,)
    ]


def test_allowed_host_option_adds_names(data: Path, served: Served):
    proc, port = _serve(data, "--allowed-host", "labels.example", "--allowed-host", "Pi.local")
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=30) as http:
            for name in ("labels.example", "pi.local", "127.0.0.1", "localhost"):
                res = http.get("/label", headers={"Host": f"{name}:{port}"})
                assert res.status_code == 200, (name, res.text)
            assert http.get("/label", headers={"Host": f"evil.com:{port}"}).status_code == 400
            (some,) = _usable(served)[:1]
            ok = http.post(
                "/label/answer",
                json={"image_ids": [some], "label": "via_name"},
                headers={
                    TOKEN_HEADER: served.token,
                    "Host": f"labels.example:{port}",
                    "Origin": f"http://labels.example:{port}",
                },
            )
            assert ok.status_code == 200, ok.text
    finally:
        _stop(proc)


# -- 2. ids past 64 bits ------------------------------------------------------------------------
def _names_field(res: httpx.Response, field: str) -> bool:
    detail = res.json()["detail"]
    return any(field in [str(p) for p in d["loc"]] for d in detail)


def test_ids_past_64_bits_are_a_422_naming_the_field(served: Served):
    with served.client() as http:
        res = _post(http, served, [HUGE], "cat")
        assert res.status_code == 422 and _names_field(res, "image_ids"), res.text
        res = _post(http, served, [1, -(2**63) - 1], "cat")
        assert res.status_code == 422 and _names_field(res, "image_ids"), res.text
        res = http.get("/search", params={"image_id": HUGE, "k": 2})
        assert res.status_code == 422 and _names_field(res, "image_id"), res.text
        res = http.post("/search/batch", json={"image_ids": [1, HUGE], "k": 2})
        assert res.status_code == 422 and _names_field(res, "image_ids"), res.text
        res = http.get(f"/thumb/{HUGE}")
        assert res.status_code == 422 and _names_field(res, "image_id"), res.text
        assert http.get(f"/thumb/{2**63 - 1}").status_code == 404  # in range: just unknown
        assert http.get("/search", params={"image_id": 2**63 - 1}).status_code == 404
        assert http.get("/health").status_code == 200


# -- 3. label rules -----------------------------------------------------------------------------
def test_bad_labels_are_refused_and_good_ones_normalized(served: Served):
    (some,) = _usable(served)[:1]
    with served.client() as http:
        for label, rule in [
            ("cat\u0007\u0000", "control character"),
            ("line\nbreak", "control character"),
            ("tab\there", "control character"),
            ("del\x7f", "control character"),
            ("c\x851", "control character"),
            ("se\u2028p", "control character"),
            ("\u2029 x \u2029 y", "control character"),
            ("   ", "empty"),
            ("y" * 201, "200"),
        ]:
            res = _post(http, served, [some], label)
            assert res.status_code == 422, (label, res.text)
            assert rule in res.text, (label, res.text)
        surrogate = http.post(  # a lone surrogate: JSON allows it, UTF-8 cannot store it
            "/label/answer",
            content=b'{"image_ids": [%d], "label": "x\\udcff"}' % some,
            headers={TOKEN_HEADER: served.token, "content-type": "application/json"},
        )
        assert surrogate.status_code == 422, surrogate.text

        huge = _post(http, served, [some], "y" * 1_000_000)
        assert huge.status_code == 422 and "200" in huge.text
        assert len(huge.content) < 2_000, "the 1 MB label is not echoed back"

        decomposed = "  caf" + "e\u0301" + "  "  # NFD, with surrounding spaces
        res = _post(http, served, [some], decomposed)
        assert res.status_code == 200, res.text
        assert res.json()["label"] == "caf\u00e9"
        longest = _post(http, served, [some], "z" * 200)
        assert longest.status_code == 200, longest.text
    stored = [r[0] for r in served.rows("SELECT label FROM labels WHERE source = 'web'")]
    assert "caf\u00e9" in stored and "z" * 200 in stored
    for label in stored:
        assert unicodedata.is_normalized("NFC", label) and label == label.strip()
        assert not any(unicodedata.category(ch) == "Cc" for ch in label), repr(label)


# -- 4. concurrent writers ----------------------------------------------------------------------
WRITERS, POSTS_EACH, SEARCHERS, TIME_LIMIT_S = 4, 40, 4, 120


def test_concurrent_label_writers_lose_nothing(served: Served):
    """Every 200 says how many rows it added; their sum is what the labels table gained, and
    each answer's label is there exactly that many times. No 503 either: writers in one worker
    process used to race inside DuckDB (`python_arrow_scan does not exist`)."""
    ids = _usable(served)
    (start,) = served.rows("SELECT coalesce(max(label_id), 0) FROM labels")[0]
    deadline = time.monotonic() + TIME_LIMIT_S
    answers: list[tuple[str, list[int], int, dict]] = []
    searches: Counter = Counter()
    lock = threading.Lock()
    done = threading.Event()

    def writer(n: int) -> None:
        rng = random.Random(n)
        with served.client() as http:
            for i in range(POSTS_EACH):
                if time.monotonic() > deadline:
                    return
                chosen = rng.sample(ids, rng.choice((1, 1, 2, 3)))
                label = f"load_{n}_{i}"
                res = _post(http, served, chosen, label)
                with lock:
                    answers.append((label, chosen, res.status_code, res.json()))

    def searcher(n: int) -> None:
        rng = random.Random(100 + n)
        with served.client() as http:
            while not done.is_set() and time.monotonic() < deadline:
                res = http.get("/search", params={"image_id": rng.choice(ids), "k": 5})
                with lock:
                    searches[res.status_code] += 1

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    readers = [threading.Thread(target=searcher, args=(n,)) for n in range(SEARCHERS)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join(TIME_LIMIT_S + 30)
    done.set()
    for t in readers:
        t.join(30)
    assert len(answers) == WRITERS * POSTS_EACH, "the writers ran out of time"
    statuses = Counter(a[2] for a in answers)
    assert statuses == {200: WRITERS * POSTS_EACH}, (
        statuses,
        [a for a in answers if a[2] != 200][:3],
    )
    assert set(searches) == {200}, searches
    for label, chosen, _, body in answers:
        assert body["inserted"] == len(chosen) == body["requested"], (label, body)
        assert body["rejected"] == []
    got = Counter(r[0] for r in served.rows("SELECT label FROM labels WHERE label_id > ?", [start]))
    assert sum(a[3]["inserted"] for a in answers) == sum(got.values()), "lost or extra rows"
    assert got == Counter({a[0]: a[3]["inserted"] for a in answers})


def test_an_answer_says_what_it_wrote_and_why_not(served: Served):
    ids = _usable(served)
    (broken,) = served.rows("SELECT image_id FROM images WHERE status <> 'ok' LIMIT 1")[0]
    with served.client() as http:
        partial = _post(http, served, [ids[0], broken, 123456789], "partly")
        assert partial.status_code == 200, partial.text
        body = partial.json()
        assert body["inserted"] == 1 and body["requested"] == 3 and len(body["rejected"]) == 2
        assert any("123456789" in r and "unknown" in r for r in body["rejected"])
        none = _post(http, served, [broken, 123456789], "nothing")
        assert none.status_code == 422, none.text
        assert none.json()["inserted"] == 0 and none.json()["rejected"]
        dup = _post(http, served, [ids[1], ids[1]], "twice")
        assert dup.status_code == 200 and dup.json()["inserted"] == dup.json()["requested"] == 1
    assert served.rows("SELECT count(*) FROM labels WHERE label = 'nothing'") == [(0,)]


def test_an_oversized_validation_error_does_not_echo_the_body(served: Served):
    with served.client() as http:
        res = http.post(
            "/search/batch",
            content=json.dumps({"image_ids": ["x" * 500_000]}),
            headers={"content-type": "application/json"},
        )
        assert res.status_code == 422 and len(res.content) < 2_000, len(res.content)


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_workers_end_with_a_killed_server_and_a_restart_works(data: Path):
    """kill -9 of `emb serve` left its workers answering on the port, and a restart failed
    with "Address already in use"."""
    import signal

    proc, port = _serve(data)
    workers = _children(proc.pid)
    assert len(workers) >= 2, workers
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [
        w
        for w in workers
        if Path(f"/proc/{w}/stat").exists()
        and "Z" not in (Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1].split()[:1])
    ], "the workers ended with their server"
    again, _ = _serve(data, port=port)  # the same port: free again
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).status_code == 200
    finally:
        _stop(again)


def test_slow_and_idle_clients_are_disconnected(data: Path):
    """A client that sends its headers a byte at a time, or nothing at all, held a connection
    for as long as it liked; past --header-timeout the server closes it, and a normal
    request on a kept-alive connection is answered as before."""
    import socket

    proc, port = _serve(data, "--header-timeout", "2")
    try:
        idle, slow = socket.create_connection(("127.0.0.1", port)), None
        slow = socket.create_connection(("127.0.0.1", port))
        started = time.monotonic()
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
        closed_after = None
        for byte in head:
            try:
                slow.sendall(bytes([byte]))
            except OSError:  # reset: the server has closed it
                closed_after = time.monotonic() - started
                break
            time.sleep(0.25)
        assert closed_after is not None and closed_after < 8, "the slow client was cut off"
        idle.settimeout(5)
        assert idle.recv(100) == b"", "the idle connection was closed"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            for _ in range(3):  # one connection, kept alive between requests
                assert http.get("/health").status_code == 200
                time.sleep(0.5)
        idle.close()
        slow.close()
    finally:
        _stop(proc)
