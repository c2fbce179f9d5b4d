"""Helpers shared by the benchmark scripts: where the data is, where results go."""

from __future__ import annotations

import json
import platform
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
CIFAR_TEST = REPO.parent / "shared" / "data" / "cifar10" / "test"


def require_cifar() -> Path:
    if not CIFAR_TEST.is_dir():
        sys.exit(f"{CIFAR_TEST} not found: this benchmark needs ../shared/data/cifar10/test")
    return CIFAR_TEST


def cifar_subset(n: int, dest: Path) -> Path:
    """The first n CIFAR-10 test images, round-robin over the classes, copied under `dest` in
    their class folders (so the folder names label them)."""
    classes = sorted(p for p in require_cifar().iterdir() if p.is_dir())
    files = [sorted(c.glob("*.jpg")) for c in classes]
    picked = [f[i] for i in range(n) for f in files if i < len(f)][:n]
    for p in picked:
        target = dest / p.parent.name / p.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    return dest


def machine() -> dict:
    import os

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def last_results(name: str) -> dict:
    """What `write_results(name, ...)` wrote last ({} when it never ran): the rows a run that
    repeats only some of them keeps (`--keep`, `--skip-10k`)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def write_results(name: str, payload: dict, markdown: str) -> None:
    """Write `<name>.json` (numbers) and `<name>.md` (the table the README links)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, default=_num) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)
    print(f"\nwrote {RESULTS / name}.json and .md")


def _num(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


CACHE = REPO / "benchmarks" / "cache"


def cifar_embeddings(
    model: str = "resnet18", weights: str = "none", image_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 test embeddings through the platform's own pipeline (catalog -> LMDB cache ->
    Parquet), cached under benchmarks/cache/ so only the first call pays for inference.

    Returns (vectors float32 (n, d), labels as str (n,)), labels from the class folders.
    """
    from embedding_assets.catalog.scan import scan_catalog
    from embedding_assets.embedding import sets as vectors
    from embedding_assets.embedding.embedder import EmbedParams
    from embedding_assets.embedding.run import run_embeddings
    from resources.duckdb_store import connect
    from resources.storage import DataPaths

    paths = DataPaths(CACHE / "cifar_data")
    scan_catalog(paths.catalog_db, require_cifar())
    summary = run_embeddings(paths, EmbedParams(model, weights, image_size))
    ids, matrix = vectors.read_parquet(summary.parquet_path)
    with connect(paths.catalog_db, read_only=True) as con:
        label_of = dict(con.execute("SELECT image_id, label FROM current_labels").fetchall())
    return matrix, np.array([label_of[i] for i in ids.tolist()])


def by_domain_and_per(rows: list[dict]) -> dict[tuple[str, int], list[dict]]:
    """Result rows grouped by (domain, labels per class), in the order they came."""
    out: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        out.setdefault((r["domain"], r["per"]), []).append(r)
    return out
