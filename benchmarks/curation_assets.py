"""The curation assets against the `embeddings` step they follow, in real Dagster runs.

    python -m benchmarks.curation_assets [--images 2000]

1. A fresh data folder with `--images` CIFAR-10 test images: `image_catalog` (which also takes
   the quality measures while decoding), then `embeddings` (default model, cold), timed; its
   seconds per image give the embeddings step for 10,000 images (embedding is linear in the
   images: one forward pass each).
2. The cached 10,000-image CIFAR-10 data folder (benchmarks/cache/cifar_data, embedded by
   `benchmarks.common.cifar_embeddings`, all images labeled): `image_quality`, `label_issues`,
   `uniqueness`, `outliers`, `dataset_checks`, `near_duplicates` and `batch_drift`, each
   timed. That catalog predates the quality measures, so `image_quality` first back-fills
   them once (untimed, reported): a catalog scanned now already has them. Stored
   fingerprints are cleared first, so every asset computes (none reuses a stored result).
Goal (issue 25): all curation assets on 10k images <= 25 % of the `embeddings` step.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.common import CACHE, cifar_embeddings, cifar_subset, machine, write_results

QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


def _resources(data: Path, tmp: Path) -> dict:
    from resources.gpu import GPUResource
    from resources.storage import StorageResource

    return {
        "storage": StorageResource(data_dir=str(data)),
        "gpu": GPUResource(device="cpu", lock_dir=str(tmp / "locks")),
    }


def _timed(assets: list, resources: dict, config: dict | None = None) -> float:
    import dagster as dg

    t0 = time.perf_counter()
    result = dg.materialize(assets, resources=resources, run_config={**QUIET, **(config or {})})
    assert result.success
    return time.perf_counter() - t0


def embeddings_step(n: int, tmp: Path) -> dict:
    from embedding_assets.assets.catalog import image_catalog
    from embedding_assets.assets.embedding import embeddings

    images = cifar_subset(n, tmp / "images")
    resources = _resources(tmp / "data", tmp)
    catalog_s = _timed(
        [image_catalog],
        resources,
        {"ops": {"image_catalog": {"config": {"image_dir": str(images)}}}},
    )
    embed_s = _timed([embeddings], resources)
    row = {
        "images": n,
        "catalog_s": round(catalog_s, 2),
        "embeddings_s": round(embed_s, 2),
        "embeddings_s_per_image": embed_s / n,
    }
    print("embeddings step:", row, flush=True)
    return row


def curation_on_10k(tmp: Path) -> dict:
    from embedding_assets.assets.curation import (
        batch_drift,
        dataset_checks,
        image_quality,
        label_issues,
        outliers,
        uniqueness,
    )
    from embedding_assets.assets.search import near_duplicates
    from resources.duckdb_store import connect

    cifar_embeddings("efficientnet_lite0", "DEFAULT", 0)  # the cached 10k folder, current
    resources = _resources(CACHE / "cifar_data", tmp)
    backfill_s = _timed([image_quality], resources)
    assets = (
        image_quality,
        label_issues,
        uniqueness,
        outliers,
        dataset_checks,
        near_duplicates,
        batch_drift,
    )
    names = [a.key.to_user_string() for a in assets]
    with connect(CACHE / "cifar_data" / "catalog.duckdb") as con:  # compute, never reuse
        con.execute("DELETE FROM asset_fingerprints WHERE asset IN (SELECT unnest(?))", [names])
    seconds = {asset.key.to_user_string(): round(_timed([asset], resources), 2) for asset in assets}
    print("curation assets on 10k:", seconds, flush=True)
    return {"seconds": seconds, "quality_backfill_s": round(backfill_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        step = embeddings_step(args.images, Path(tmp))
        curation = curation_on_10k(Path(tmp))
    embed_10k = step["embeddings_s_per_image"] * 10_000
    total = sum(curation["seconds"].values())
    payload = {
        "machine": machine(),
        "embeddings_step": step,
        "embeddings_step_10k_s": round(embed_10k, 1),
        "curation_10k": curation,
        "curation_total_s": round(total, 2),
        "ratio": round(total / embed_10k, 4),
    }
    lines = [
        "# Curation assets vs the embeddings step",
        "",
        f"Machine: {payload['machine']}. `python -m benchmarks.curation_assets`.",
        "",
        f"`embeddings` (default model, cold) on {step['images']} CIFAR-10 images: "
        f"{step['embeddings_s']} s, i.e. **{embed_10k:.0f} s for 10,000** at the same rate.",
        "",
        "| asset on 10,000 CIFAR-10 images | seconds |",
        "|---|---:|",
        *[f"| `{k}` | {v} |" for k, v in curation["seconds"].items()],
        f"| **all** | **{total:.1f}** |",
        "",
        f"All curation assets = **{total / embed_10k:.1%}** of the embeddings step (goal <= 25 %: "
        f"{'met' if total <= 0.25 * embed_10k else 'not met'}). "
        f"(`image_quality` back-filled the measures of this older catalog once first: "
        f"{curation['quality_backfill_s']} s, not counted; a catalog scanned now takes them "
        "while decoding.)",
    ]
    write_results("curation_assets", payload, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
