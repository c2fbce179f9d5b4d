"""Which C should the classifier's logistic regression use when there is no search? (issue 40)

    python -m benchmarks.classifier_defaults [--per 20 40] [--draws 0 1 2] [--pool 150]

The classifier searches its hyper-parameters only from 1,000 labels (`search_min_labels`): below
that, logistic regression runs with its default C. The embeddings are unit length, so each of
their 1,280 dimensions is small and C = 1 regularizes hard. Per domain (blood-cell micrographs,
8 classes; CIFAR-10 photos, 10 classes), `pool` random images per class, `per` of them labeled,
the default backbone's plain features (the platform's own pipeline and cache): accuracy on the
rest for each C, three draws.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np

from benchmarks.common import (
    CACHE,
    REPO,
    by_domain_and_per,
    machine,
    require_cifar,
    write_results,
)

BLOOD = REPO.parent / "shared" / "data" / "blood-cells"
CS = (1.0, 3.0, 10.0, 30.0, 100.0)


def features(domain: str) -> tuple[np.ndarray, np.ndarray]:
    """(unit-length plain features, class of each image) of every image of `domain`."""
    from embedding_assets.catalog.images import usable_files
    from embedding_assets.catalog.scan import scan_catalog
    from embedding_assets.configs.embedding import EmbeddingConfig
    from embedding_assets.embedding.run import cached_features
    from resources.storage import DataPaths

    root = BLOOD if domain == "blood-cells" else require_cifar()
    if not root.is_dir():
        raise SystemExit(f"{root} not found: this domain needs ../shared/data/{domain}")
    paths = DataPaths(CACHE / ("blood_cells_data" if domain == "blood-cells" else "cifar_data"))
    scan_catalog(paths.catalog_db, root)
    usable = usable_files(paths.catalog_db)
    x, keep = cached_features(paths, EmbeddingConfig().backbone(), usable.fs_paths, usable.hashes)
    classes = np.array([Path(str(usable.fs_paths[i])).parent.name for i in keep])
    return x, classes


def draw_rows(x: np.ndarray, y: np.ndarray, per: int, pool: int, draw: int) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(draw)
    train, test = [], []
    for c in np.unique(y):
        picked = rng.choice(np.flatnonzero(y == c), min(pool, int((y == c).sum())), False)
        train += picked[:per].tolist()
        test += picked[per:].tolist()
    rows = []
    for c in CS:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression(C=c, max_iter=1000).fit(x[train], y[train])
        accuracy = float((model.predict(x[test]) == y[test]).mean())
        rows.append({"C": c, "accuracy": accuracy, "fit_s": time.perf_counter() - started})
    return rows


def report(rows: list[dict], pool: int) -> str:
    lines = [
        "# Logistic regression's C on unit-length features, without a search",
        "",
        f"Per class {pool} random images, `per` labeled, accuracy on the rest; the default",
        f"backbone's plain features; {machine()['cpus']} CPUs. Mean (min-max) over the draws.",
        "",
        "| domain | labels/class | " + " | ".join(f"C = {c:g}" for c in CS) + " |",
        "|---|---:|" + "---:|" * len(CS),
    ]
    for (domain, per), group in by_domain_and_per(rows).items():
        cells = []
        for c in CS:
            accs = [r["accuracy"] for r in group if r["C"] == c]
            cells.append(f"{statistics.mean(accs):.3f} ({min(accs):.3f}-{max(accs):.3f})")
        lines.append(f"| {domain} | {per} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per", type=int, nargs="+", default=[20, 40])
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--domains", nargs="+", default=["blood-cells", "cifar"])
    parser.add_argument("--pool", type=int, default=150, help="images per class in all")
    args = parser.parse_args()
    rows = []
    for domain in args.domains:
        x, y = features(domain)
        for per in args.per:
            for draw in args.draws:
                for row in draw_rows(x, y, per, args.pool, draw):
                    rows.append({"domain": domain, "per": per, "draw": draw, **row})
                print(rows[-len(CS) :], flush=True)
    write_results("classifier_defaults", {"pool": args.pool, "rows": rows}, report(rows, args.pool))


if __name__ == "__main__":
    main()
