"""`engine: ray` on a real two-node Ray cluster (1 CPU each, tests/ray_cluster.py): the
cluster's faults, one row each (issues 33 and 37: a worker that dies mid-batch, nothing coming
back), lose and double nothing or stop in one line; `emb run` with `engine: ray` works end to
end, on a folder and on an S3 bucket (moto's server). One module, so one cluster per suite: two
at once (4 Ray nodes) on 2 cores made `emb run` time out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from embedding_assets.embedding import sets as vectors
from embedding_assets.embedding.embedder import BatchSettings, EmbedParams, embed_paths
from embedding_assets.embedding.ray_engine import resolve_address
from resources.duckdb_store import connect
from tests.ray_cluster import BATCH, BIN, ENV, S3_PORT, Cluster
from tests.search_setup import LEVELS, class_image


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """48 small images of three grey levels with a corrupt file at position 20."""
    root = tmp_path_factory.mktemp("images")
    files = [str(class_image(root / f"img_{i}.png", LEVELS[i % 3], i)) for i in range(48)]
    broken = root / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    files.insert(20, str(broken))
    return files


@pytest.fixture(scope="module")
def local(images: list[str]) -> tuple[dict[int, np.ndarray], dict[int, str]]:
    """(vectors, errors) by position from the in-process path."""
    got: dict[int, np.ndarray] = {}
    errors: dict[int, str] = {}
    for batch in embed_paths(
        EmbedParams().build(), images, BatchSettings(batch_size=BATCH, workers=0)
    ):
        got.update(zip(batch.indexes, batch.vectors, strict=True))
        errors.update(batch.errors)
    return got, errors


@dataclass(frozen=True)
class Fault:
    what: str
    options: list[str]  # for tests.ray_driver; {die} is the image a worker dies on
    files: slice  # of `images`
    retried: int | None  # batches resubmitted; None: the run stops
    says: str = ""  # in the one line of a run that stops


FAULTS = [
    Fault(
        "a worker dies mid-batch (as a crash or the OOM killer ends it)",
        ["--die-on={die}", "--marker={marker}"],
        slice(None),
        1,
    ),
    Fault(
        "no batch comes back in time (each actor first builds the model)",
        ["--stall-seconds=0.1"],
        slice(0, 8),
        None,
        "TimeoutError: no batch came back from the Ray cluster in 0.1 s",
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.what for f in FAULTS])
def test_a_cluster_fault_loses_and_doubles_nothing_or_is_one_line(
    cluster: Cluster, images: list[str], local, fault: Fault, tmp_path: Path
):
    files, out, marker = images[fault.files], tmp_path / "out", tmp_path / "died"
    (tmp_path / "files.txt").write_text("\n".join(files))
    options = [o.format(die=images[30], marker=marker) for o in fault.options]
    driver = [sys.executable, "-m", "tests.ray_driver", str(tmp_path / "files.txt"), str(out)]
    res = cluster.run(*driver, f"--batch-size={BATCH}", *options)
    if fault.retried is None:
        assert res.returncode != 0 and fault.says in res.stderr, res.stderr[-3000:]
        assert "see `ray status`" in res.stderr
        return
    assert res.returncode == 0, res.stderr[-3000:]
    summary, got = json.loads((out / "summary.json").read_text()), np.load(out / "vectors.npy")
    if "--die-on={die}" in fault.options:
        assert marker.exists(), "a worker opened the file and exited"
        assert summary["retried"][0].startswith("batch 3 (8 images from "), summary["retried"]
    assert len(summary["retried"]) == fault.retried, summary["retried"]
    vecs, errors = local
    assert summary["returned"] == len(files), "every image back exactly once: none doubled"
    assert summary["indexes"] == sorted(vecs), "none lost"
    assert {int(i): err for i, err in summary["failed"].items()} == errors == {20: errors[20]}
    assert "cannot decode at embedding time" in errors[20]
    np.testing.assert_allclose(got, np.stack([vecs[i] for i in sorted(vecs)]), atol=1e-5)


# No head training: it would fill the vector cache in-process first.
RUN_CONFIG = (
    f"ops: {{embeddings: {{config: {{engine: ray, batch_size: {BATCH}}}}}, "
    "embedding_model: {config: {enabled: false}}, projections: {config: {methods: [pca]}}}\n"
)


def _ray_set(db: Path, embedded: int) -> tuple[list[str], np.ndarray]:
    """(paths, vectors) of the set that the last `embeddings` made on Ray, embedding `embedded`
    images, with no batch lost."""
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("embeddings"))
    meta = {k: v.value for k, v in event.asset_materialization.metadata.items()}
    assert (meta["engine"], meta["retried_batches"], meta["embedded_now"]) == ("ray", 0, embedded)
    _, ids, got = vectors.load_current(db)
    with connect(db, read_only=True) as con:
        path_of = dict(con.execute("SELECT image_id, path FROM images").fetchall())
    return [path_of[int(i)] for i in ids], got


def _in_process(files: list[str]) -> np.ndarray:
    (batch,) = embed_paths(
        EmbedParams().build(), files, BatchSettings(batch_size=len(files), workers=0)
    )
    assert not batch.errors, batch.errors
    return batch.vectors


def test_emb_run_with_engine_ray(cluster, data_dir: Path, labeled_folder: Path, tmp_path: Path):
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG)
    res = cluster.run(
        str(BIN / "emb"), "run", "--image-dir", str(labeled_folder), "--config", str(config)
    )
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "28 embedded now" in res.stdout and "projections" in res.stdout, res.stdout

    files, got = _ray_set(data_dir / "catalog.duckdb", 28)
    np.testing.assert_allclose(got, _in_process(files), atol=1e-5)


# Run inside the namespace: wait for the S3 server, make the bucket, upload a local folder.
UPLOAD = """
import socket, sys, time
from pathlib import Path
import s3fs
src, dest = Path(sys.argv[1]), sys.argv[2]
for _ in range(300):
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[3])), timeout=1).close()
        break
    except OSError:
        time.sleep(0.1)
fs = s3fs.S3FileSystem()
fs.mkdir(dest.split("/")[2])
for file in sorted(p for p in src.rglob("*") if p.is_file()):
    fs.pipe(f"{dest}/{file.relative_to(src).as_posix()}", file.read_bytes())
"""


def test_emb_run_with_engine_ray_on_a_bucket(cluster, data_dir: Path, tmp_path: Path):
    """The Ray workers read the objects themselves, through s3fs and the cluster's AWS_*
    environment, from a moto S3 server inside the namespace."""
    pytest.importorskip("s3fs", reason="pip install 'embedding-assets[dev]' (s3fs)")
    pytest.importorskip("moto.server", reason="pip install 'moto[server]'")
    local = tmp_path / "local"
    for i in range(20):
        class_image(local / f"class_{i % 3}" / f"img_{i}.png", LEVELS[i % 3], 500 + i)
    prefix = "s3://images/set"
    urls = sorted(f"{prefix}/{p.relative_to(local).as_posix()}" for p in local.rglob("*.png"))
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG)
    with open(tmp_path / "moto.log", "wb") as log:
        server = subprocess.Popen(
            [
                "nsenter",
                f"--net=/proc/{cluster.holder.pid}/ns/net",
                sys.executable,
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                str(S3_PORT),
            ],
            env={**os.environ, **ENV},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        up = cluster.run(sys.executable, "-c", UPLOAD, str(local), prefix, str(S3_PORT), timeout=60)
        moto_log = (tmp_path / "moto.log").read_text()[-2000:]
        assert up.returncode == 0, up.stderr[-3000:] + moto_log
        res = cluster.run(str(BIN / "emb"), "run", "--image-dir", prefix, "--config", str(config))
        assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    paths, got = _ray_set(data_dir / "catalog.duckdb", 20)
    assert sorted(paths) == urls, "the embedding set is the uploaded objects, by URL"
    files = [str(local / path[len(prefix) + 1 :]) for path in paths]  # the same bytes, on disk
    np.testing.assert_allclose(got, _in_process(files), atol=1e-5)


def test_no_cluster_address_is_one_line_naming_both(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(
        ValueError,
        match="set ray_address in the embeddings config or the RAY_ADDRESS environment variable",
    ):
        resolve_address("")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert resolve_address("") == "10.0.0.5:6379"
    assert resolve_address("auto") == "auto"
