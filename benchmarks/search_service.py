"""`emb serve` under load, side by side: query-by-id with 1, 8 and 32 keep-alive clients on 10k
real vectors and 1M synthetic ones, uploads, search while another process holds the DuckDB
writer; and the index's incremental update against a rebuild.

    python -m benchmarks.search_service [--n-large 1000000] [--requests 4000] [--skip-steps]

Each data folder is made by the platform's own functions (index build + tuning, search
snapshot, publication pointer) and served by the real CLI (`emb serve`) in its own process on
127.0.0.1. The load client is an asyncio HTTP/1.1 keep-alive client (one connection per
client, requests back to back, a bounded count) in this process, so client and server share
the machine's cores. Goals (issue 13, 2 cores): >= 1,000 requests/s by id at 8 clients, p99 <
20 ms, 0 errors, answers while the writer is held; adding 1 % to a 1M index < 10 % of a
rebuild; `similarity_index` on 1,000 new images < 20 % of the `embeddings` step.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, cifar_embeddings, cifar_subset, machine, write_results
from benchmarks.search_latency import synthetic
from embedding_assets.search import faiss_index as similarity
from embedding_assets.search import snapshot as index_snapshot
from embedding_assets.search import versions
from resources.paths import DataPaths

K = 10
HOLD_WRITER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def publish_folder(root: Path, key: str, ids: np.ndarray, x: np.ndarray) -> dict:
    """A data folder that `emb serve` can answer from: tuned index, snapshot, pointer."""
    paths = DataPaths(root)
    n, d = x.shape
    factory = similarity.choose_factory(n, d, 4 * 2**30)
    built = similarity.build_index(x, ids, factory)
    queries = similarity.sample_queries(x, 500, seed=0)
    truth = similarity.exact_topk(x, ids, queries, 5)
    similarity.tune(built, queries, truth, 0.97)
    version = versions.new_version()
    path = versions.index_path(paths.indexes_dir, key, version)
    versions.save_index(built.index, path)
    rows = index_snapshot.Rows(
        ids,
        [f"/images/{i}.png" for i in ids.tolist()],
        [f"class_{i % 10}" for i in ids.tolist()],
        (ids % 7).astype(np.int64),
    )
    record = {
        "index_type": factory,
        "vectors": n,
        "dim": d,
        "search_params": built.search_params,
        "recall_at_5": built.tune_recall,
        "index_type_note": "benchmark",
    }
    params = {"model": "efficientnet_lite0", "weights": "DEFAULT", "image_size": 0}
    index_snapshot.write(path, {"record": record, "params": params, "settings": ""}, ids, x, rows)
    index_snapshot.write_pointer(paths, key, version)
    return {"factory": factory, "search_params": built.search_params, "n": n, "d": d}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`emb serve` on a data folder, in its own process."""

    def __init__(self, root: Path, ready: str = "/health") -> None:
        self.port, self.ready = free_port(), ready
        env = {**os.environ, "EMB_DATA_DIR": str(root)}
        emb = Path(sys.executable).parent / "emb"
        self.proc = subprocess.Popen(
            [str(emb), "serve", "--port", str(self.port), "--reload-seconds", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        asyncio.run(self._wait())

    async def _wait(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                status, body = await one_request(self.port, "GET", self.ready)
                if status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"emb serve exited: {self.proc.stderr.read()}")
            await asyncio.sleep(0.2)
        raise RuntimeError(f"emb serve did not answer {self.ready} within 120 s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def request_bytes(method: str, path: str, body: bytes = b"", ctype: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
    if body:
        head += f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(v)
        for k, _, v in (h.partition(": ") for h in lines[1:])
        if k.lower() == "content-length"
    )
    return status, await reader.readexactly(length)


async def one_request(port: int, method: str, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes(method, path))
        return await read_response(reader)
    finally:
        writer.close()


async def load(port: int, make_request, clients: int, total: int) -> dict:
    """`total` requests over `clients` keep-alive connections; latencies and errors."""
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in counter:
                t0 = time.perf_counter()
                writer.write(make_request(i))
                status, _ = await read_response(reader)
                latencies.append(time.perf_counter() - t0)
                errors += status != 200
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


def by_id_load(port: int, ids: np.ndarray, clients: int, total: int) -> dict:
    rng = np.random.default_rng(clients)
    picks = rng.choice(ids, total)
    return asyncio.run(
        load(
            port,
            lambda i: request_bytes("GET", f"/search?image_id={picks[i]}&k={K}"),
            clients,
            total,
        )
    )


def upload_load(port: int, files: list[Path], clients: int, total: int) -> dict:
    boundary = "benchmarkboundary"

    def body(i: int) -> bytes:
        data = files[i % len(files)].read_bytes()
        return (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="k"\r\n\r\n{K}\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="q.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )

    ctype = f"multipart/form-data; boundary={boundary}"
    return asyncio.run(
        load(port, lambda i: request_bytes("POST", "/search", body(i), ctype), clients, total)
    )


def service(root: Path, ids: np.ndarray, requests: int, label: str, files=None) -> dict:
    out: dict = {"by_id": []}
    served = Served(root)
    try:
        by_id_load(served.port, ids, 8, 500)  # warm-up: page in the index and snapshot
        for clients in (1, 8, 32):
            row = by_id_load(served.port, ids, clients, requests)
            print(f"{label}: by id, {clients:>2} clients: {row}")
            out["by_id"].append(row)
        # the DuckDB writer held by another process for the whole measurement
        db = DataPaths(root).catalog_db
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_WRITER, str(db), "600"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert holder.stdout.readline().strip() == "holding"
            row = by_id_load(served.port, ids, 8, requests)
        finally:
            holder.kill()
            holder.wait()
        print(f"{label}: by id, 8 clients, DuckDB writer held elsewhere: {row}")
        out["writer_held"] = row
        if files:
            upload_load(served.port, files, 1, 3)  # warm-up: load the model
            for clients in (1, 4):
                row = upload_load(served.port, files, clients, 40 * clients)
                print(f"{label}: upload, {clients} clients: {row}")
                out.setdefault("upload", []).append(row)
    finally:
        served.stop()
    return out


def incremental_vs_rebuild(x: np.ndarray, ids: np.ndarray, share: float = 0.01) -> dict:
    """Add `share` new vectors (and drop as many old ones) to the index of the rest, in place,
    against building the whole index again; both as `similarity_index` does them."""
    n = len(x)
    m = int(n * share)
    old_x, old_ids = x[: n - m], ids[: n - m]
    factory = similarity.choose_factory(n, x.shape[1], 4 * 2**30)
    old = similarity.build_index(old_x, old_ids, factory)
    new_x, new_ids = x[m:], ids[m:]  # m dropped at the front, m new at the end
    t0 = time.perf_counter()
    delta = similarity.changes(old_ids, old_x, new_ids, new_x)
    seconds_apply = similarity.apply_changes(old.index, delta, new_ids, new_x)
    t_update = time.perf_counter() - t0
    t0 = time.perf_counter()
    rebuilt = similarity.build_index(new_x, new_ids, factory)
    t_rebuild = time.perf_counter() - t0
    queries = similarity.sample_queries(new_x, 300, seed=3)
    truth = similarity.exact_topk(new_x, new_ids, queries, 5)
    params = {"nprobe": 64} if similarity.index_kind(factory) == "ivf" else {}
    recall = {
        name: round(similarity.recall_at_k(similarity.search(ix, queries, 5, params)[1], truth), 4)
        for name, ix in (("updated", old.index), ("rebuilt", rebuilt.index))
    }
    row = {
        "n": n,
        "changed": int(delta.count),
        "factory": factory,
        "update_s": round(t_update, 2),
        "of_which_add_remove_s": round(seconds_apply, 2),
        "rebuild_s": round(t_rebuild, 2),
        "ratio": round(t_update / t_rebuild, 4),
        "recall_at_5_nprobe64": recall,
    }
    print(f"incremental vs rebuild: {row}")
    return row


def step_times(tmp: Path) -> dict:
    """`embeddings` vs `similarity_index` when 1,000 new images arrive (1,000 already there)."""
    import dagster as dg

    from embedding_assets.assets.catalog import image_catalog
    from embedding_assets.assets.embedding import embeddings
    from embedding_assets.assets.search import similarity_index
    from resources.gpu import GPUResource
    from resources.storage import StorageResource

    images = cifar_subset(2000, tmp / "all")
    first, second = tmp / "images", sorted(p for p in images.rglob("*.jpg"))
    for p in second[:1000]:
        (first / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, first / p.parent.name / p.name)
    resources = {
        "storage": StorageResource(data_dir=str(tmp / "data")),
        "gpu": GPUResource(device="cpu", lock_dir=str(tmp / "locks")),
    }
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

    def timed(assets) -> float:
        config = dict(quiet)
        if image_catalog in assets:
            config["ops"] = {"image_catalog": {"config": {"image_dir": str(first)}}}
        t0 = time.perf_counter()
        assert dg.materialize(assets, resources=resources, run_config=config).success
        return time.perf_counter() - t0

    timed([image_catalog, embeddings, similarity_index])
    for p in second[1000:]:
        (first / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, first / p.parent.name / p.name)
    timed([image_catalog])
    t_emb = timed([embeddings])
    t_index = timed([similarity_index])
    row = {
        "new_images": 1000,
        "embeddings_s": round(t_emb, 2),
        "similarity_index_s": round(t_index, 2),
        "ratio": round(t_index / t_emb, 4),
    }
    print(f"steps on 1,000 new images: {row}")
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n-large", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--steps-only", action="store_true", help="print, write nothing")
    args = parser.parse_args()
    if args.steps_only:
        with tempfile.TemporaryDirectory() as tmp:
            step_times(Path(tmp))
        return
    results: dict = {"machine": machine(), "k": K}
    tmp = Path(tempfile.mkdtemp(prefix="search_service_"))
    try:
        x, labels = cifar_embeddings("efficientnet_lite0", "DEFAULT", 0)
        x = np.ascontiguousarray(x, dtype=np.float32)
        ids = np.arange(len(x), dtype=np.int64)
        small = tmp / "small"
        results["cifar_10k"] = publish_folder(small, "cifar-lite0", ids, x)
        files = sorted((REPO.parent / "shared/data/cifar10/test").glob("*/*.jpg"))[:50]
        results["cifar_10k"].update(service(small, ids, args.requests, "10k", files))

        big_x, big_ids = synthetic(args.n_large, d=64)
        large = tmp / "large"
        t0 = time.perf_counter()
        results["synthetic_large"] = publish_folder(large, "synthetic", big_ids, big_x)
        print(f"1M folder ready in {time.perf_counter() - t0:.0f} s")
        results["synthetic_large"].update(service(large, big_ids, args.requests, "1M"))
        shutil.rmtree(large)
        results["incremental"] = incremental_vs_rebuild(big_x, big_ids)
        del big_x
        if not args.skip_steps:
            results["steps"] = step_times(tmp / "steps")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_results("search_service", results, markdown(results))


def markdown(r: dict) -> str:
    lines = [
        "# Search service (`emb serve`)",
        "",
        f"Machine: {r['machine']}. Loopback, keep-alive clients in one asyncio process on the "
        f"same cores as the server; k={r['k']}. `python -m benchmarks.search_service`.",
        "",
        "| data | index | query | clients | requests/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("cifar_10k", "synthetic_large"):
        d = r[name]
        index = f"{d['factory']} {d['n']}x{d['d']} {d['search_params']}"
        rows = [("by id", x) for x in d["by_id"]] + [("by id, writer held", d["writer_held"])]
        rows += [("upload", x) for x in d.get("upload", [])]
        for query, x in rows:
            lines.append(
                f"| {name} | {index} | {query} | {x['clients']} | {x['requests_per_s']} | "
                f"{x['p50_ms']} | {x['p99_ms']} | {x['errors']} |"
            )
    inc = r["incremental"]
    lines += [
        "",
        f"Incremental update of a {inc['n']:,}-vector {inc['factory']} index with 1 % changed "
        f"({inc['changed']:,} removed + added): {inc['update_s']} s vs rebuild "
        f"{inc['rebuild_s']} s = **{inc['ratio']:.1%}** (goal < 10 %); recall@5 at nprobe 64: "
        f"{inc['recall_at_5_nprobe64']}.",
    ]
    if "steps" in r:
        s = r["steps"]
        lines.append(
            f"\n1,000 new CIFAR images on 1,000 indexed: `embeddings` {s['embeddings_s']} s, "
            f"`similarity_index` {s['similarity_index_s']} s = **{s['ratio']:.1%}** (goal < 20 %)."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
