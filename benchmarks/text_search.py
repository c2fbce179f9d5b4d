"""Text search with the offline tags: each CIFAR-10 class name as the query, precision at 10
and 100 and average precision (relevant: the photo's class folder), on the 10,000 test photos,
on 200-photo draws (20 per class), and on the blood-cell photos, where ImageNet names nothing
and the honest answer is none; and text queries per second through `emb serve`.

The tags are the real `image_tags` asset (the default backbone, EfficientNet-Lite0 with its
packaged ImageNet weights) over the benchmarks' cached catalogs; the 200-photo draws tag their
photos' cached features with the same functions (`tags.Tagged.of`), each draw its own neighbour
graph. Compared side by side: each image's own tags only (as before spreading existed) at
top_k 5 and 20, and spreading along the neighbour graph (the default) at top_k 20 and 50.

    python -m benchmarks.text_search        # ~6 min on 2 CPUs with the embeddings cached
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import urllib.parse
from pathlib import Path

import numpy as np

from benchmarks.common import CACHE, REPO, cifar_embeddings, write_results
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
BLOOD_CELLS = REPO.parent / "shared" / "data" / "blood-cells"
CELL_QUERIES = [
    "basophil",
    "eosinophil",
    "erythroblast",
    "immature granulocyte",
    "lymphocyte",
    "monocyte",
    "neutrophil",
    "platelet",
    "blood cell",
]
GOAL_P10_SMALL, GOAL_MAP, GOAL_P10, GOAL_QPS = 0.8, 0.6, 0.95, 1000
DRAWS, PER_CLASS = 5, 20


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


def score_queries(index, spread: bool = True) -> list[dict]:
    """Each class name's whole ranking scored against the class folders; `spread=False` ranks
    by each image's own tags only (tags written before the neighbour graph existed)."""
    from embedding_assets.search.words import vocabulary

    if not spread:
        index.spread = None
    folder = np.array([Path(p).parent.name for p in index.paths])
    rows = []
    for cls, words in QUERIES.items():
        resolution = vocabulary().resolve(words)
        hits = index.search(resolution, len(index.image_ids))
        got = np.array([Path(h.path).parent.name for h in hits])
        relevant = got == cls
        own = index.own_scores(resolution.classes)[folder == cls]
        rows.append(
            {
                "class": cls,
                "query": words,
                "classes_matched": len(resolution.classes),
                "understood": resolution.describe(),
                "returned": len(hits),
                "by_resemblance": sum(h.matched_by == "resemblance" for h in hits),
                "p_at_10": float(relevant[:10].sum() / 10),
                "p_at_100": float(relevant[:100].sum() / 100),
                "ap": average_precision(relevant, int((folder == cls).sum())),
                "own_of_relevant": float(own.mean()),
                "top3": [f"{_short(h)} ({Path(h.path).parent.name})" for h in hits[:3]],
            }
        )
    return rows


def _short(hit) -> str:
    """The first matched class's first name, or the images it resembles."""
    return hit.classes[0].split(",")[0] if hit.classes else hit.why()


def load_index(data_dir: Path):
    from embedding_assets.search.tags import TagIndex
    from resources.storage import DataPaths

    return TagIndex.current(DataPaths(data_dir))


def tag_seconds(data_dir: Path, top_k: int) -> float:
    started = time.perf_counter()
    tag(data_dir, top_k)
    return round(time.perf_counter() - started, 1)


def small_draws(data_dir: Path, top_k: int) -> list[dict]:
    """DRAWS draws of PER_CLASS photos per class, each tagged and graphed on its own."""
    from embedding_assets.catalog.images import usable_files
    from embedding_assets.configs.search import ImageTagsConfig
    from embedding_assets.embedding.backbones import imagenet_head
    from embedding_assets.embedding.run import cached_features_and_norms
    from embedding_assets.search import tags
    from embedding_assets.search.tags import TagIndex
    from resources.storage import DataPaths

    config = ImageTagsConfig()
    paths = DataPaths(data_dir)
    head = imagenet_head(config.backbone().spec())
    usable = usable_files(paths.catalog_db)
    X, norms, keep = cached_features_and_norms(
        paths, config.backbone(), usable.fs_paths, usable.hashes, config.inference("cpu")
    )
    ids = usable.ids[keep]
    names = [str(usable.fs_paths[i]) for i in keep]
    folder = np.array([Path(n).parent.name for n in names])
    out = []
    for draw in range(DRAWS):
        rng = np.random.default_rng(draw)
        pick = np.sort(
            np.concatenate(
                [rng.choice(np.flatnonzero(folder == c), PER_CLASS, replace=False) for c in QUERIES]
            )
        )
        tagged = tags.Tagged.of(ids[pick], X[pick], norms[pick], head, top_k)
        row_of = {int(i): n for n, i in enumerate(ids[pick])}
        first = [row_of[int(i)] for i in tagged.neighbours[:, 0]]
        nn1 = float((folder[pick][first] == folder[pick]).mean())
        with tempfile.TemporaryDirectory() as tmp:
            draw_paths = DataPaths(Path(tmp))
            tags.write_serving(draw_paths, "draw", tagged, [names[i] for i in pick])
            for spread in (False, True):
                rows = score_queries(TagIndex.current(draw_paths), spread)
                row = {"draw": draw, "spread": spread, "rows": rows, "nn1_accuracy": nn1}
                out.append(row | summary(rows))
    return out


def blood_cells(top_k: int) -> list[dict]:
    """Every query on the blood-cell photos: NoMatch or no hits is the honest answer."""
    from embedding_assets.catalog.scan import scan_catalog
    from embedding_assets.search.text_answers import NoMatch
    from resources.storage import DataPaths

    data_dir = CACHE / "blood_cells_data"
    scan_catalog(DataPaths(data_dir).catalog_db, BLOOD_CELLS)
    tag(data_dir, top_k)
    index = load_index(data_dir)
    rows = []
    for query in [*CELL_QUERIES, *QUERIES.values()]:
        try:
            found = index.answer(query, 10)
        except NoMatch as exc:
            rows.append({"query": query, "answered": 0, "says": str(exc).split(";")[0]})
            continue
        rows.append({"query": query, "answered": len(found.hits), "says": found.understood})
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


def query_cost(n: int, top_k: int, queries: int = 30) -> dict:
    """Milliseconds per text query in-process over n synthetic images (random tags, random
    neighbours): how the cost grows with the collection (3 spreading rounds over n x 10
    neighbours, then a partial sort)."""
    from embedding_assets.search import tags
    from embedding_assets.search.tags import TagIndex
    from embedding_assets.search.words import vocabulary
    from resources.storage import DataPaths

    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=np.int64)
    classes = np.stack([rng.choice(1000, top_k, replace=False) for _ in range(min(n, 4096))])
    classes = classes[rng.integers(0, len(classes), n)]
    probs = np.sort(rng.dirichlet(np.ones(top_k), n).astype(np.float32), axis=1)[:, ::-1]
    neighbours = rng.integers(0, n, (n, tags.NEIGHBOURS))
    tagged = tags.Tagged(ids, classes, np.ascontiguousarray(probs), neighbours)
    with tempfile.TemporaryDirectory() as tmp:
        paths = DataPaths(Path(tmp))
        tags.write_serving(paths, "synthetic", tagged, [f"/{i}.jpg" for i in range(n)])
        started = time.perf_counter()
        index = TagIndex.current(paths)
        load_s = time.perf_counter() - started
        resolution = vocabulary().resolve("truck")
        started = time.perf_counter()
        for _ in range(queries):
            index.search(resolution, 10)
        per_query = (time.perf_counter() - started) / queries
    return {"images": n, "load_s": round(load_s, 2), "ms_per_query": round(1000 * per_query, 2)}


def summary(rows: list[dict]) -> dict:
    return {
        "mean_p_at_10": float(np.mean([r["p_at_10"] for r in rows])),
        "mean_p_at_100": float(np.mean([r["p_at_100"] for r in rows])),
        "map": float(np.mean([r["ap"] for r in rows])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top-k", type=int, default=20, help="image_tags' default")
    parser.add_argument("--compare-top-k", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--cost-images", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args()
    cifar_embeddings("efficientnet_lite0", "DEFAULT", 0)  # the cached catalog, embedded
    data_dir = CACHE / "cifar_data"
    variants = []
    for top_k in [*args.compare_top_k, args.top_k]:
        seconds = tag_seconds(data_dir, top_k)
        for spread in (False, True):
            rows = score_queries(load_index(data_dir), spread)
            variants.append(
                {"top_k": top_k, "spread": spread, "tag_seconds": seconds, "rows": rows}
                | summary(rows)
            )
            print({k: v for k, v in variants[-1].items() if k != "rows"}, flush=True)
    results: dict = {"top_k": args.top_k, "variants": variants}
    results["rows"] = variants[-1]["rows"]
    results.update(summary(results["rows"]))
    results["tag_rows"] = len(load_index(data_dir).class_rows)
    results["draws"] = small_draws(data_dir, args.top_k)
    results["draws_by_top_k"] = {
        top_k: _means(small_draws(data_dir, top_k)) for top_k in args.compare_top_k
    } | {args.top_k: _means(results["draws"])}
    for d in results["draws"]:
        print(d["draw"], d["spread"], round(d["mean_p_at_10"], 3), round(d["map"], 3), flush=True)
    results["blood_cells"] = blood_cells(args.top_k) if BLOOD_CELLS.is_dir() else []
    results["qps"] = served_qps(data_dir, args.requests)
    results["cost"] = [query_cost(n, args.top_k) for n in args.cost_images]
    print(results["cost"], flush=True)
    write_results("text_search", results, markdown(results))


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _means(draws: list[dict]) -> dict:
    """Mean P@10 and mAP over the draws, per ranking."""
    out = {}
    for spread in (False, True):
        chosen = [d for d in draws if d["spread"] == spread]
        name = "spread" if spread else "own tags"
        out[name] = {
            "mean_p_at_10": float(np.mean([d["mean_p_at_10"] for d in chosen])),
            "map": float(np.mean([d["map"] for d in chosen])),
        }
    return out


def markdown(r: dict) -> str:
    default = r["variants"][-1]
    spread = [d for d in r["draws"] if d["spread"]]
    own = [d for d in r["draws"] if not d["spread"]]
    small = [d["mean_p_at_10"] for d in spread]
    own_small = [d["mean_p_at_10"] for d in own]
    nn1 = np.mean([d["nn1_accuracy"] for d in spread])
    cat = np.mean([x["own_of_relevant"] for d in spread for x in d["rows"] if x["class"] == "cat"])
    lines = [
        "# Text search with the offline tags",
        "",
        "Each CIFAR-10 class name as the query; relevant = the photo's class folder; the whole "
        "ranking is scored, and AP counts relevant photos the query never returns as missed. "
        "Tags: the `image_tags` asset (EfficientNet-Lite0, packaged ImageNet weights). "
        "*Own tags*: images rank by the probability their own top-k tags give the query's "
        "classes (before this change, at top_k 5). *Spread* (the default): that score spreads "
        "three rounds along each image's 10 nearest neighbours (half its own, half its "
        "neighbours' mean), and a query answers only where some image's neighbours carry 0.02 "
        "of it. `python -m benchmarks.text_search`.",
        "",
        "## Goals",
        "",
        f"- Mean P@10 ≥ {GOAL_P10_SMALL} on every 200-photo draw: "
        f"{_met(min(small) >= GOAL_P10_SMALL)} (draws: {', '.join(f'{x:.2f}' for x in small)};"
        f" own tags only: {', '.join(f'{x:.2f}' for x in own_small)}).",
        f"- mAP ≥ {GOAL_MAP} on the 10,000 photos at the default settings: "
        f"{_met(default['map'] >= GOAL_MAP)} ({default['map']:.3f}).",
        f"- P@10 on the 10,000 stays ≥ {GOAL_P10}: "
        f"{_met(default['mean_p_at_10'] >= GOAL_P10)} ({default['mean_p_at_10']:.3f}).",
    ]
    best = max(q["requests_per_s"] for q in r["qps"] if q["clients"] == 8)
    lines += [
        f"- ≥ {GOAL_QPS} text queries/s at 8 clients through `emb serve`: "
        f"{_met(best >= GOAL_QPS)} ({best}; clients and server share the 2 cores).",
        "",
        "## 10,000 photos: the choices side by side",
        "",
        "| top_k | ranking | tag rows | image_tags s | mean P@10 | mean P@100 | mAP |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for v in r["variants"]:
        lines.append(
            f"| {v['top_k']} | {'spread' if v['spread'] else 'own tags'} | "
            f"{10_000 * v['top_k']:,} | {v['tag_seconds']} | {v['mean_p_at_10']:.3f} | "
            f"{v['mean_p_at_100']:.3f} | {v['map']:.3f} |"
        )
    lines += [
        "",
        "image_tags s: the whole asset run (Dagster included) over cached features: the "
        "tags, the neighbour graph, the DuckDB rows and the served files.",
        "",
        f"## 10,000 photos, per query (top_k {r['top_k']}, spread)",
        "",
        "| class | query | ImageNet classes | returned | by resemblance | P@10 | P@100 | AP | "
        "first answers |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for x in r["rows"]:
        lines.append(
            f"| {x['class']} | {x['query']} | {x['classes_matched']} | {x['returned']} | "
            f"{x['by_resemblance']} | {x['p_at_10']:.2f} | {x['p_at_100']:.2f} | {x['ap']:.3f} |"
            f" {'; '.join(x['top3'])} |"
        )
    lines += [
        "",
        f"## 200-photo draws ({PER_CLASS} per class, {DRAWS} draws)",
        "",
        "| draw | ranking | mean P@10 | mean P@100 | mAP | per class P@10 |",
        "|---:|---|---:|---:|---:|---|",
    ]
    for d in r["draws"]:
        per = " ".join(f"{x['class']} {x['p_at_10']:.1f}" for x in d["rows"])
        lines.append(
            f"| {d['draw']} | {'spread' if d['spread'] else 'own tags'} | "
            f"{d['mean_p_at_10']:.3f} | {d['mean_p_at_100']:.3f} | {d['map']:.3f} | {per} |"
        )
    lines += [
        "",
        "The same draws by top_k (means over the draws): "
        + "; ".join(
            f"top_k {k}: own tags P@10 {m['own tags']['mean_p_at_10']:.3f}, mAP "
            f"{m['own tags']['map']:.3f}; spread P@10 {m['spread']['mean_p_at_10']:.3f}, mAP "
            f"{m['spread']['map']:.3f}"
            for k, m in sorted(r["draws_by_top_k"].items(), key=lambda kv: int(kv[0]))
        )
        + ".",
        "",
        "Why the 200-photo goal is out of reach offline: on these draws a photo's nearest "
        f"neighbour in the backbone's features (the graph's first) has its class in {nn1:.0%} "
        "of cases (mean of the draws), and its tags give the true class little probability "
        f"(cat photos: {cat:.3f} on average for 'cat'), so neither a photo's own tags nor its "
        "resemblance to the tagged ones separates cats from dogs or deer from horses among "
        "20 of each. Spreading raises mAP and the 10,000-photo ranking; it does not make the "
        "first ten of 200 right. A CLIP text tower (`emb run --text-model`) is the way there.",
        "",
        "## Blood-cell photos: ImageNet names nothing",
        "",
        "| query | answers | what the user is told |",
        "|---|---:|---|",
    ]
    for b in r["blood_cells"]:
        lines.append(f"| {b['query']} | {b['answered']} | {b['says'][:160]} |")
    lines += [
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
        "In-process cost of one text query (`TagIndex.search`, k=10) over synthetic tags and "
        "neighbours, by collection size; the load is a server's start or reload:",
        "",
        "| images | ms per query | load s |",
        "|---:|---:|---:|",
        *[f"| {c['images']:,} | {c['ms_per_query']} | {c['load_s']} |" for c in r["cost"]],
        "",
        "The CLIP path (`clip_embeddings`, `text_model`) is not measured: no CLIP weights can "
        "be fetched here (its mechanics are tested with a small random-weight model).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
