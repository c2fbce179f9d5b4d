"""The neighbour graph's search side by side: exact, IVF over the full vectors (the first
version), and the default (IVF over 256 principal components, re-ranked exactly), in seconds
per image and recall of the exact 10 nearest, at growing sizes of one real embedding set.

    python -m benchmarks.neighbor_graph [--parquet PATH] [--sizes 10000 30000 100000]

PATH defaults to the 100,000-image set `benchmarks.scale_run` leaves in its cache (the
fine-tuned Lite0 trunk's 1280-d features of CIFAR-10 mosaics). Each size is the set's first N
rows. Writes benchmarks/results/neighbor_graph.{json,md}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import CACHE, write_results

DEFAULT = CACHE / "scale_run" / "100000" / "data" / "parquet" / "embeddings"
EXACT_UP_TO = 30_000  # exact all-pairs beyond this takes minutes; it is what IVF replaces


def measure(x, method: str) -> dict:
    from embedding_assets.common import neighbor_graph as g
    from embedding_assets.common.neighbors import knn

    k = g.GRAPH_K
    start = time.perf_counter()
    if method == "exact":
        _, rows = knn(x, None, k, normalized=True)
    elif method == "ivf, full vectors":
        _, rows = g._ivf_self_knn(x, k, 0)
    else:
        _, rows = g.approximate_self_knn(x, k)
    seconds = time.perf_counter() - start
    recall = 1.0 if method == "exact" else g.sampled_recall(x, rows, g.RECALL_K)
    return {"method": method, "seconds": seconds, "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parquet", type=Path, default=None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    args = parser.parse_args()
    from embedding_assets.common.neighbors import normalize
    from embedding_assets.embedding.sets import read_parquet

    path = args.parquet or next(iter(sorted(DEFAULT.glob("*.parquet"))), None)
    if path is None:
        raise SystemExit(f"no set at {DEFAULT}: run python -m benchmarks.scale_run first")
    _, vectors = read_parquet(path)
    rows = []
    for n in args.sizes:
        x = normalize(vectors[:n])
        for method in ("exact", "ivf, full vectors", "default: ivf, 256 dims, re-ranked"):
            if method == "exact" and n > EXACT_UP_TO:
                continue
            found = {"images": n, **measure(x, method)}
            rows.append(found)
            print(f"{n:,} {method}: {found['seconds']:.1f} s, recall {found['recall']:.3f}")
    table = "\n".join(
        f"| {r['images']:,} | {r['method']} | {r['seconds']:.1f} | "
        f"{1000 * r['seconds'] / r['images']:.3f} | {r['recall']:.3f} |"
        for r in rows
    )
    md = f"""# Neighbour graph: exact vs IVF vs the default

{vectors.shape[1]}-d vectors of `{path.name}` (the first N rows), 20 neighbours per image;
recall = share of the exact 10 nearest found, on 1,000 sampled images. `python -m
benchmarks.neighbor_graph`.

| images | method | seconds | ms per image | recall@10 |
|---:|---|---:|---:|---:|
{table}
"""
    write_results("neighbor_graph", {"parquet": str(path), "rows": rows}, md)


if __name__ == "__main__":
    main()
