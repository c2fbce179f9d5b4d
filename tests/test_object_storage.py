"""Images in object storage (issue 17): image_dir as an s3:// URL, against moto's S3 server (a real
HTTP endpoint on 127.0.0.1, found by botocore through AWS_ENDPOINT_URL like any other)."""

from __future__ import annotations

import hashlib
import importlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from embedding_assets import definitions
from embedding_assets.catalog import object_store
from embedding_assets.catalog.images import load_image
from embedding_assets.catalog.scan import scan_catalog
from embedding_assets.cli.app import app
from embedding_assets.embedding import sets as vectors
from embedding_assets.web.thumbnails import Thumbnails
from tests.dagster_server import free_port
from tests.helpers import use_s3, write_image

s3fs = pytest.importorskip("s3fs", reason="pip install 'embedding-assets[dev]' (s3fs)")
pytest.importorskip("moto.server", reason="pip install 'moto[server]'")

BUCKET = "images"
PREFIX = f"s3://{BUCKET}/set"


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[s3fs.S3FileSystem]:
    """An empty bucket, reached through the standard AWS environment variables."""
    use_s3(monkeypatch, s3_endpoint)
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    yield fs
    fs.rm(BUCKET, recursive=True)
    s3fs.S3FileSystem.clear_instance_cache()


def _local_set(root: Path, per_class: int) -> Path:
    """Three classes, a few unlabeled images and the three kinds of bad object."""
    for c in range(3):
        for i in range(per_class):
            write_image(root / f"class_{c}" / f"img_{i}.png", size=(24, 24), seed=c * 100 + i)
    for i in range(2):
        write_image(root / "unlabeled" / f"u_{i}.png", size=(24, 24), seed=900 + i)
    (root / "bad").mkdir()
    (root / "bad" / "empty.png").write_bytes(b"")
    good = (root / "class_0" / "img_0.png").read_bytes()
    (root / "bad" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "bad" / "notes.png").write_text("a text file renamed .png")
    return root


def _upload(fs: s3fs.S3FileSystem, local: Path) -> None:
    for file in sorted(p for p in local.rglob("*") if p.is_file()):
        fs.pipe(f"{PREFIX}/{file.relative_to(local).as_posix()}", file.read_bytes())


def _rows(db: Path) -> dict[str, tuple]:
    """relative name -> (status, error, sha256, label, removed) of every catalogued image."""
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT i.path, i.root, i.status, i.error, i.sha256, c.label, i.removed_at IS NOT NULL "
            "FROM images i LEFT JOIN current_labels c USING (image_id)"
        ).fetchall()
    return {path[len(root) + 1 :]: tuple(rest) for path, root, *rest in rows}


def test_scan_catalogs_objects_as_files(s3, tmp_path: Path):
    local = _local_set(tmp_path / "local", per_class=3)
    _upload(s3, local)
    db = tmp_path / "catalog.duckdb"

    summary = scan_catalog(db, PREFIX + "/")
    assert summary.root == PREFIX and summary.found == summary.new == summary.probed == 14
    rows = _rows(db)
    local_rows = (scan_catalog(tmp_path / "local.duckdb", local), _rows(tmp_path / "local.duckdb"))
    assert rows == local_rows[1], "objects get the statuses, errors and labels files get"
    for name, (status, _, sha, label, _) in rows.items():
        assert sha == hashlib.sha256((local / name).read_bytes()).hexdigest()
        folder = name.split("/")[0]
        assert label == (None if folder == "unlabeled" else folder)
        assert (status == "ok") == (not name.startswith("bad/"))
    assert rows["bad/empty.png"][:2] == ("corrupt", "empty file (0 bytes); re-copy or remove it")
    assert rows["bad/truncated.png"][0] == rows["bad/notes.png"][0] == "corrupt"
    with duckdb.connect(str(db), read_only=True) as con:
        etags = con.execute("SELECT count(etag), count(mtime_ns) FROM images").fetchone()
    assert etags == (14, 0), "objects are told apart by ETag, not by a modification time"

    image = load_image(f"{PREFIX}/class_1/img_0.png")
    assert image.size == (24, 24) and image.mode == "RGB"
    thumb = Thumbnails(tmp_path / "thumbs").get(1, f"{PREFIX}/class_1/img_0.png", "abc")
    assert thumb[:2] == b"\xff\xd8", "a JPEG thumbnail read from the bucket"


def test_rescan_reads_only_changed_objects(s3, tmp_path: Path):
    local = _local_set(tmp_path / "local", per_class=2)
    _upload(s3, local)
    db = tmp_path / "catalog.duckdb"
    scan_catalog(db, PREFIX)

    again = scan_catalog(db, PREFIX)
    assert (again.probed, again.new, again.changed, again.removed) == (0, 0, 0, 0)

    write_image(local / "class_2" / "img_0.png", size=(24, 24), seed=12345)  # a new ETag
    s3.pipe(f"{PREFIX}/class_2/img_0.png", (local / "class_2" / "img_0.png").read_bytes())
    s3.rm(f"{PREFIX}/class_1/img_1.png")
    after = scan_catalog(db, PREFIX)
    assert (after.probed, after.changed, after.new, after.removed) == (1, 1, 0, 1)
    rows = _rows(db)
    assert (
        rows["class_2/img_0.png"][2]
        == hashlib.sha256((local / "class_2" / "img_0.png").read_bytes()).hexdigest()
    )
    assert rows["class_1/img_1.png"][4], "a deleted object is marked removed"


def test_missing_bucket_or_optional_package_is_one_clear_line(s3, tmp_path: Path):
    with pytest.raises(NotADirectoryError, match=r"s3://no-such-bucket/x has no objects") as exc:
        scan_catalog(tmp_path / "c.duckdb", "s3://no-such-bucket/x")
    assert "\n" not in str(exc.value) and "image_dir" in str(exc.value)

    code = CliRunner().invoke(app, ["run", "--image-dir", f"s3://{BUCKET}/nothing-here"])
    assert code.exit_code == 2 and "Traceback" not in code.output
    assert code.output.strip().splitlines() == [
        f"image_dir s3://{BUCKET}/nothing-here has no objects (no such bucket or prefix, or it "
        "is empty); set image_dir in the image_catalog config (or EMB_IMAGE_DIR) to a folder "
        "of images"
    ]

    with pytest.raises(ValueError, match=r"nope://x/y: .*use s3://, gs://, az://"):
        object_store.filesystem("nope://x/y")


def test_unreachable_store_is_one_line_and_never_a_bad_image(
    s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    local = _local_set(tmp_path / "local", per_class=1)
    shutil.rmtree(local / "bad")
    _upload(s3, local)
    db = tmp_path / "catalog.duckdb"
    scan_catalog(db, PREFIX)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nobody there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()

    with pytest.raises(OSError, match=rf"cannot list {PREFIX}: .*credentials and endpoint") as exc:
        scan_catalog(db, PREFIX)
    assert "\n" not in str(exc.value)
    out = CliRunner().invoke(app, ["run", "--image-dir", PREFIX])
    assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output
    assert out.output.startswith(f"cannot list {PREFIX}: ")

    # an object read: a StoreReadError, which embedding records as unreadable (read again by
    # the next scan) and the /thumb page answers with a 502, never as a corrupt image
    url = f"{PREFIX}/class_0/img_0.png"
    with pytest.raises(object_store.StoreReadError, match=rf"cannot read {url}: "):
        load_image(url)
    with pytest.raises(object_store.StoreReadError):
        Thumbnails(tmp_path / "thumbs").get(1, url, "x" * 64)


def test_emb_run_on_a_bucket(s3, data_dir: Path, tmp_path: Path):
    importlib.reload(definitions)  # bind the definitions to this test's data directory
    local = _local_set(tmp_path / "local", per_class=8)
    shutil.rmtree(local / "bad")
    _upload(s3, local)

    config = tmp_path / "run.yaml"
    config.write_text("ops: {projections: {config: {methods: [pca]}}}\n")  # UMAP, t-SNE: slow
    res = CliRunner().invoke(app, ["run", "--image-dir", PREFIX, "--config", str(config)])
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert "26 in the catalog (26 usable), 26 new this run" in res.output

    db = data_dir / "catalog.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        catalogued = dict(con.execute("SELECT image_id, path FROM usable_images").fetchall())
    _, ids, vecs = vectors.load_current(db)
    assert sorted(ids.tolist()) == sorted(catalogued) and vecs.shape[0] == 26
    assert all(p.startswith(PREFIX + "/") for p in catalogued.values())
