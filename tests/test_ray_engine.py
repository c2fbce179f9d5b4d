"""`engine: ray` on a real two-node Ray cluster (1 CPU each) on loopback: the vectors equal the
in-process ones, a corrupt file fails alike, a worker that dies costs one resubmitted batch, and
`emb run` with `engine: ray` works end to end, on a folder and on an S3 bucket (moto's server).

The cluster lives in a network namespace of its own where only loopback exists (Ray registers
the machine's interface address even when told 127.0.0.1); the tests run their drivers inside
it with nsenter. Needs root (unshare -n), as CI runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from embedding_assets.embedding import sets as vectors
from embedding_assets.embedding.embedder import EmbedParams, embed_paths
from embedding_assets.embedding.ray_engine import resolve_address
from resources.duckdb_store import connect
from tests.search_setup import LEVELS, class_image

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PORT = 6379  # inside the namespace: nothing outside can clash with it
S3_PORT = 5000  # moto's S3 server, started inside the namespace by the bucket test
# The Ray workers inherit the environment of `ray start`, so the S3 endpoint and credentials are
# set for the whole cluster; the tests that read local files never use them.
S3_ENV = {
    "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Ray finds a running cluster through files under its temp dir, not the network: a folder of
# this process's own keeps two suites on one machine (two checkouts, CI beside a session) from
# seeing each other's cluster ("already running at 127.0.0.1:6379"). Short, for Ray's sockets.
RAY_TMPDIR = f"/tmp/ray-{os.getpid()}"
ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ADDRESS": f"127.0.0.1:{PORT}",
    "RAY_TMPDIR": RAY_TMPDIR,
    **S3_ENV,
}
BATCH = 8


class Cluster:
    """Runs commands inside the namespace held by the `unshare` process `holder`."""

    def __init__(self, holder: subprocess.Popen) -> None:
        self.holder = holder

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", *args],
            cwd=REPO,
            env={**os.environ, **ENV},
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _skip_reason() -> str | None:
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install -e '.[ray]')"
    if os.geteuid() != 0:
        return "needs root for a network namespace of its own (unshare -n)"
    missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found"
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        return "unshare -n is not permitted here"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("ray") / "start.log"
    node = "--node-ip-address=127.0.0.1 --num-cpus=1 --num-gpus=0 --object-store-memory=100000000"
    script = (
        f"ip link set lo up && "
        f"timeout 120 {BIN}/ray start --head --port={PORT} {node} --include-dashboard=false "
        f"--disable-usage-stats >{log} 2>&1 && "
        f"timeout 120 {BIN}/ray start --address=127.0.0.1:{PORT} {node} >>{log} 2>&1 && "
        "echo ready && exec sleep infinity"
    )
    holder = subprocess.Popen(
        ["unshare", "-n", "bash", "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
    )
    cluster = Cluster(holder)
    try:
        if holder.stdout.readline().strip() != "ready":
            pytest.fail(f"the Ray cluster did not start:\n{log.read_text()[-3000:]}")
        yield cluster
    finally:
        if holder.poll() is None:
            cluster.run(str(BIN / "ray"), "stop", "--force", timeout=60)
            holder.kill()
        holder.wait()
        shutil.rmtree(RAY_TMPDIR, ignore_errors=True)


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
    for batch in embed_paths(EmbedParams().build(), images, batch_size=BATCH, workers=0):
        got.update(zip(batch.indexes, batch.vectors, strict=True))
        errors.update(batch.errors)
    return got, errors


def _drive(cluster: Cluster, images: list[str], out: Path, *extra: str) -> tuple[dict, np.ndarray]:
    files = out.parent / "files.txt"
    files.write_text("\n".join(images))
    res = cluster.run(
        sys.executable,
        "-m",
        "tests.ray_driver",
        str(files),
        str(out),
        f"--batch-size={BATCH}",
        *extra,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads((out / "summary.json").read_text()), np.load(out / "vectors.npy")


def test_ray_vectors_equal_local_and_a_dead_worker_costs_one_batch(
    cluster, images, local, tmp_path
):
    """One driver run (each start of the actors costs seconds): a corrupt file fails as it does
    in-process, and the worker that opens image 30 exits once, losing batch 3 (positions
    24-31), which is resubmitted; every vector still equals the in-process one."""
    marker = tmp_path / "died"
    summary, got = _drive(
        cluster, images, tmp_path / "out", f"--die-on={images[30]}", f"--marker={marker}"
    )
    assert marker.exists(), "a worker opened the file and exited"
    assert len(summary["retried"]) == 1, summary["retried"]
    assert summary["retried"][0].startswith("batch 3 (8 images from "), summary["retried"]

    vecs, errors = local
    assert summary["indexes"] == sorted(vecs)
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
    (batch,) = embed_paths(EmbedParams().build(), files, batch_size=len(files), workers=0)
    assert not batch.errors, batch.errors
    return batch.vectors


def test_no_batch_back_in_time_is_one_clear_error(cluster, images, tmp_path):
    """Nothing can come back within 0.1 s (each actor first builds the model): the step stops
    with one line saying what to look at, instead of waiting forever."""
    files = tmp_path / "files.txt"
    files.write_text("\n".join(images[:8]))
    driver = [sys.executable, "-m", "tests.ray_driver", str(files), str(tmp_path / "out")]
    res = cluster.run(*driver, "--stall-seconds=0.1")
    assert res.returncode != 0
    assert "TimeoutError: no batch came back from the Ray cluster in 0.1 s" in res.stderr
    assert "see `ray status`" in res.stderr


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
