"""Images in object storage against a hostile or failing store (issue 37), on moto's S3 server
on 127.0.0.1: one row per fault, each a one-line answer or a bad object recorded with its
reason, the rest of the scan kept and no object ever called corrupt for a fault of the store."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from embedding_assets.catalog import object_store
from embedding_assets.catalog.scan import ScanSettings, scan_catalog
from embedding_assets.cli.app import app
from resources.duckdb_store import connect
from tests.helpers import use_s3, write_image

s3fs = pytest.importorskip("s3fs", reason="pip install 'embedding-assets[dev]' (s3fs)")

MAX_PIXELS = 4096  # so that a "huge" object is 100 KB, not gigabytes


@dataclass
class Store:
    fs: object  # s3fs.S3FileSystem
    bucket: str

    @property
    def prefix(self) -> str:
        return f"s3://{self.bucket}/set"


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Store:
    """A bucket of its own per test (a fault may leave it unreachable), three good images."""
    use_s3(monkeypatch, s3_endpoint, AWS_MAX_ATTEMPTS="1")
    store = Store(s3fs.S3FileSystem(), f"hostile-{uuid.uuid4().hex[:12]}")
    store.fs.mkdir(store.bucket)
    for i in range(3):
        image = write_image(tmp_path / f"{i}.png", size=(16, 16), seed=i)
        store.fs.pipe(f"{store.prefix}/class_a/{i}.png", image.read_bytes())
    return store


def _rows(db: Path) -> list[tuple]:
    with connect(db, read_only=True) as con:
        return con.execute("SELECT path, status, error FROM images ORDER BY path").fetchall()


def wrong_credentials(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto checks keys now


def bucket_vanishes_mid_scan(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    listed = object_store.list_images

    def list_then_lose_the_bucket(url: str, extensions: set[str]):
        found = listed(url, extensions)
        store.fs.rm(store.bucket, recursive=True)
        return found

    monkeypatch.setattr(object_store, "list_images", list_then_lose_the_bucket)


def huge_object(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.fs.pipe(f"{store.prefix}/class_a/huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100_000)


def dot_dot_key(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    store.fs.pipe(f"{store.prefix}/../outside.png", b"x")  # a key: S3 keeps it as written
    store.fs.pipe(f"{store.prefix}/class_a/../../escape.png", b"x")


@dataclass(frozen=True)
class Fault:
    what: str
    make: Callable
    raises: str | None  # the one-line error of the scan, or None when it completes
    statuses: dict[str, str]  # file name -> status, after a completed scan
    errors: dict[str, str]  # file name -> text in its error


FAULTS = [
    Fault("wrong credentials", wrong_credentials, "cannot list s3://", {}, {}),
    Fault(
        "the bucket vanishes mid-scan",
        bucket_vanishes_mid_scan,
        None,
        {f"{i}.png": "unreadable" for i in range(3)},
        {"0.png": "cannot read"},
    ),
    Fault(
        "a huge object",
        huge_object,
        None,
        {**{f"{i}.png": "ok" for i in range(3)}, "huge.png": "unsupported"},
        {"huge.png": "object of 100,008 bytes, over the 98,304 an image of max_image_pixels"},
    ),
    Fault("keys with ..", dot_dot_key, None, {f"{i}.png": "ok" for i in range(3)}, {}),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.what for f in FAULTS])
def test_a_store_fault_is_one_line_or_a_bad_object_never_a_corrupt_image(
    s3: Store, fault: Fault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fault.make(s3, monkeypatch)
    db = tmp_path / "catalog.duckdb"
    if fault.raises is not None:
        with pytest.raises(OSError, match=fault.raises) as exc:
            scan_catalog(db, s3.prefix, ScanSettings(max_pixels=MAX_PIXELS))
        assert "\n" not in str(exc.value)
        out = CliRunner().invoke(app, ["run", "--image-dir", s3.prefix])
        assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output
        assert out.output.startswith(f"cannot list {s3.prefix}: ")
        return
    scan_catalog(db, s3.prefix, ScanSettings(max_pixels=MAX_PIXELS))
    rows = {Path(p).name: (status, error or "") for p, status, error in _rows(db)}
    assert {name: status for name, (status, _) in rows.items()} == fault.statuses, rows
    for name, text in fault.errors.items():
        assert text in rows[name][1] and "\n" not in rows[name][1], rows[name]
    assert all(p.startswith(f"{s3.prefix}/") and ".." not in p for p, *_ in _rows(db))
