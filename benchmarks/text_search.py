"""Text search with the offline tags on CIFAR-10 test (../shared): each class name as the query,
precision at 10 and 100 and average precision over the 10,000 photos (relevant: the photo's
class folder), what the words resolved to, and text queries per second through `emb serve`.

The tags are the real `image_tags` asset over the benchmarks' cached catalog of the 10,000
photos (the default backbone, EfficientNet-Lite0 with its packaged ImageNet weights), at the
asset's default `top_k` and at a larger one for comparison; the default is what is served.

    python -m benchmarks.text_search        # ~4 min on 2 CPUs with the embeddings cached
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import urllib.parse
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, cifar_embeddings, write_results
from benchmarks.search_service import Served, load, request_bytes

QUERIES = {
    "airplane": "airplane",
    "automobile": "car",
    "bird": "bird",
    "cat": "cat",
    "deer": "deer",
    "dog": "dog",
    "frog": "frog",
    "horse": "horse",
    "ship": "ship",
    "truck": "truck",
}
GOAL_P10, GOAL_MAP, GOAL_QPS = 0.8, 0.5, 1000


def tag(data_dir: Path, top_k: int) -> None:
    import dagster as dg

    from embedding_assets.assets.search import image_tags
    from resources.gpu import GPUResource
    from resources.storage import StorageResource

    with tempfile.TemporaryDirectory() as locks:
        result = dg.materialize(
            [image_tags],
            resources={
                "storage": StorageResource(data_dir=str(data_dir)),
                "gpu": GPUResource(device="cpu", lock_dir=locks),
            },
            run_config={"ops": {"image_tags": {"config": {"top_k": top_k}}}},
        )
    assert result.success


def average_precision(relevant: np.ndarray, total: int) -> float:
    """AP of a ranked list whose relevance flags are `relevant`; relevant images the list
    never returns count as missed (precision 0 at their recall)."""
    if total == 0:
        return 0.0
    hits = np.cumsum(relevant)
    ranks = np.arange(1, len(relevant) + 1)
    return float((hits / ranks)[relevant].sum() / total)


def score_queries(data_dir: Path) -> list[dict]:
    from embedding_assets.search.tags import TagIndex
    from embedding_assets.search.words import vocabulary
    from resources.storage import DataPaths

    index = TagIndex.current(DataPaths(data_dir))
    folder = np.array([Path(p).parent.name for p in index.paths])
    rows = []
    for cls, words in QUERIES.items():
        resolution = vocabulary().resolve(words)
        hits = index.search(resolution, len(index.image_ids))
        got = np.array([Path(h.path).parent.name for h in hits])
        relevant = got == cls
        top = [f"{h.classes[0]} ({Path(h.path).parent.name})" for h in hits[:3]]
        rows.append(
            {
                "class": cls,
                "query": words,
                "classes_matched": len(resolution.classes),
                "understood": resolution.describe(),
                "returned": len(hits),
                "p_at_10": float(relevant[:10].sum() / 10),
                "p_at_100": float(relevant[:100].sum() / 100),
                "ap": average_precision(relevant, int((folder == cls).sum())),
                "top3": top,
            }
        )
        print(rows[-1], flush=True)
    return rows


def served_qps(data_dir: Path, requests: int) -> list[dict]:
    words = list(QUERIES.values())
    paths = [f"/search?text={urllib.parse.quote(w)}&k=10" for w in words]
    served = Served(data_dir, ready=paths[0])
    try:
        out = []
        for clients in (1, 8):
            row = asyncio.run(
                load(served.port, lambda i: request_bytes("GET", paths[i % 10]), clients, requests)
            )
            print(f"text, {clients} clients: {row}", flush=True)
            out.append(row)
        return out
    finally:
        served.stop()


def summary(rows: list[dict]) -> dict:
    return {
        "mean_p_at_10": float(np.mean([r["p_at_10"] for r in rows])),
        "mean_p_at_100": float(np.mean([r["p_at_100"] for r in rows])),
        "map": float(np.mean([r["ap"] for r in rows])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-k", type=int, default=5, help="image_tags' default")
    parser.add_argument(
        "--wide-top-k", type=int, nargs="+", default=[20, 50], help="the comparisons"
    )
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    cifar_embeddings("efficientnet_lite0", "DEFAULT", 0)  # the cached catalog, embedded
    data_dir = CACHE / "cifar_data"
    results: dict = {"top_k": args.top_k, "wide": []}
    for top_k in args.wide_top_k:
        tag(data_dir, top_k)
        rows = score_queries(data_dir)
        results["wide"].append({"top_k": top_k, "rows": rows, **summary(rows)})
    tag(data_dir, args.top_k)
    results["rows"] = score_queries(data_dir)
    results.update(summary(results["rows"]))
    results["qps"] = served_qps(data_dir, args.requests)
    write_results("text_search", results, markdown(results))


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def markdown(r: dict) -> str:
    lines = [
        "# Text search with the offline tags (CIFAR-10 test, 10,000 photos)",
        "",
        "Each class name as the query; relevant = the photo's class folder. Tags: the "
        f"`image_tags` asset (EfficientNet-Lite0, packaged ImageNet weights), top_k={r['top_k']}"
        " (the default). AP counts relevant photos the query never returns as missed. "
        "`python -m benchmarks.text_search`.",
        "",
        "| class | query | ImageNet classes | returned | P@10 | P@100 | AP | first answers |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['class']} | {x['query']} | {x['classes_matched']} | {x['returned']} | "
            f"{x['p_at_10']:.2f} | {x['p_at_100']:.2f} | {x['ap']:.3f} | {'; '.join(x['top3'])} |"
        )
    best = max(q["requests_per_s"] for q in r["qps"] if q["clients"] == 8)
    lines += [
        "",
        f"Mean P@10 {r['mean_p_at_10']:.3f} (goal ≥ {GOAL_P10}: "
        f"{_met(r['mean_p_at_10'] >= GOAL_P10)}), mean P@100 {r['mean_p_at_100']:.3f}, mAP "
        f"{r['map']:.3f} (goal ≥ {GOAL_MAP}: {_met(r['map'] >= GOAL_MAP)}). "
        + " ".join(
            f"With top_k={w['top_k']}: mean P@10 {w['mean_p_at_10']:.3f}, P@100 "
            f"{w['mean_p_at_100']:.3f}, mAP {w['map']:.3f}."
            for w in r["wide"]
        ),
        "",
        "How the words were understood: "
        + "; ".join(f"{x['query']}: {x['understood']}" for x in r["rows"]),
        "",
        "| served text queries | clients | requests/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for q in r["qps"]:
        lines.append(
            f"| /search?text= | {q['clients']} | {q['requests_per_s']} | {q['p50_ms']} | "
            f"{q['p99_ms']} | {q['errors']} |"
        )
    lines += [
        "",
        f"Goal ≥ {GOAL_QPS} text queries/s at 8 clients: {_met(best >= GOAL_QPS)} "
        "(clients and server share the 2 cores).",
        "",
        "The CLIP path (`clip_embeddings`, `text_model`) is not measured: no CLIP weights can "
        "be fetched here (its mechanics are tested with a small random-weight model).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
