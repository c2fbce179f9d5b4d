"""Label rounds in DuckDB: the unlabeled pool, the next round chosen from it (`selection`), the
rounds and the learning curve stored (and what `label_queue` reports of them), and the open
requests exported as CSV; also the review round of likely wrong labels (from curation's
`label_issues` table)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import markdown, tables
from embedding_assets.common.clock import utc_now
from embedding_assets.learning import registry, selection
from embedding_assets.learning.plots import learning_curve_png
from embedding_assets.learning.registry import VersionSummary
from resources.duckdb_store import connect

if TYPE_CHECKING:
    import pyarrow as pa

ASSET = "label_queue"  # whose fingerprint the rounds carry


def unlabeled_pool(db_path: Path) -> dict[str, np.ndarray]:
    """Predicted, usable, not yet labeled images with their uncertainty columns."""
    with connect(db_path, read_only=True) as con:
        return con.execute(
            f"""
            SELECT p.image_id, p.version_id, p.least_confident, p.margin, p.entropy
            FROM {tables.PREDICTIONS} p JOIN {tables.USABLE_IMAGES} USING (image_id)
            LEFT JOIN {tables.CURRENT_LABELS} l USING (image_id)
            WHERE l.image_id IS NULL ORDER BY p.image_id
            """
        ).fetchnumpy()


def unlabeled_ids(db_path: Path) -> np.ndarray:
    """Usable images without a label, whether or not anything predicted them."""
    with connect(db_path, read_only=True) as con:
        rows = con.execute(
            f"SELECT i.image_id FROM {tables.USABLE_IMAGES} i "
            f"LEFT JOIN {tables.CURRENT_LABELS} l USING (image_id) "
            "WHERE l.image_id IS NULL ORDER BY 1"
        ).fetchnumpy()
    return rows["image_id"].astype(np.int64)


def stored_clusters(db_path: Path, image_ids: np.ndarray, model_key: str) -> np.ndarray | None:
    """Clusters from the `clusters` table for these images, or None where it has no full cover."""
    import pyarrow as pa

    with connect(db_path, read_only=True) as con:
        if not tables.exists(con, tables.CLUSTERS):
            return None
        con.register("wanted", pa.table({"image_id": pa.array(image_ids, pa.int64())}))
        rows = con.execute(
            f"SELECT w.image_id, c.cluster FROM wanted w LEFT JOIN {tables.CLUSTERS} c "
            "ON c.image_id = w.image_id AND c.model_key = ?",
            [model_key],
        ).fetchall()
    found = {int(i): c for i, c in rows}
    if any(found.get(int(i)) is None for i in image_ids):
        return None
    return np.array([int(found[int(i)]) for i in image_ids], dtype=np.int64)


def stored_uniqueness(db_path: Path, model_key: str, image_ids: np.ndarray) -> np.ndarray:
    """Uniqueness of each pool image (-1 where the `uniqueness` asset has not scored it);
    LookupError when it has scored nothing of this set."""
    with connect(db_path, read_only=True) as con:
        rows = dict(
            con.execute(
                f"SELECT image_id, uniqueness FROM {tables.UNIQUENESS} WHERE model_key = ?",
                [model_key],
            ).fetchall()
        )
    if not rows:
        raise LookupError(
            "strategy 'uniqueness' needs the `uniqueness` asset: materialize it first."
        )
    found = np.array([rows.get(int(i), np.nan) for i in image_ids], dtype=np.float64)
    return np.nan_to_num(found, nan=-1.0)


@dataclass(frozen=True)
class RoundSettings:
    """How the next round is chosen (the label_queue config)."""

    batch_size: int = 0  # 0: batch_fraction of the pool
    batch_fraction: float = 0.05
    strategy: selection.Strategy = "uncertainty"
    uncertainty: selection.UncertaintyMeasure = "margin"
    max_cluster_share: float = 0.3
    candidate_factor: int = 10
    fallback_clusters: int = 10
    seed: int = 0


@dataclass(frozen=True)
class NextRound:
    """The images chosen for the next round, with what the choice was based on."""

    requests: pa.Table  # rank, image_id, version_id, strategy, uncertainty, cluster
    pool: int  # unlabeled images the round was chosen from
    mean_score_pool: float
    mean_score_batch: float
    clusters_in_batch: int
    largest_cluster_share: float
    cluster_source: str
    strategy: str  # how the images were chosen, in words


def next_round(db_path: Path, settings: RoundSettings) -> NextRound:
    """The most uncertain (or unique, or random) unlabeled images, spread over clusters (the
    stored `clusters`, else k-means on the candidates) so that none fills more than
    `max_cluster_share` of the round. Before any classifier, a cold start (`cold_start_round`)."""
    import pyarrow as pa

    from embedding_assets.embedding.sets import load_current

    if registry.champion_version(db_path) is None:
        return cold_start_round(db_path, settings)
    model_key = tables.current_model_key(db_path)
    pool = unlabeled_pool(db_path)
    n_pool = len(pool["image_id"])
    size = settings.batch_size or selection.default_batch_size(n_pool, settings.batch_fraction)
    batch = min(size, n_pool)
    if settings.strategy == "random":
        scores = np.random.default_rng(settings.seed).random(n_pool)
    elif settings.strategy == "uniqueness":
        scores = stored_uniqueness(db_path, model_key, pool["image_id"])
    else:
        scores = selection.uncertainty_score_of(pool, settings.uncertainty)
    top = np.argsort(-scores, kind="stable")[: batch * max(1, settings.candidate_factor)]
    candidates = pool["image_id"][top]
    clusters = stored_clusters(db_path, candidates, model_key)
    source = "clusters table"
    if clusters is None:
        source = f"k-means (k={settings.fallback_clusters}) on the candidates"
        _, ids, vectors = load_current(db_path)
        order = np.argsort(ids)
        x = vectors[order[np.searchsorted(ids, candidates, sorter=order)]]
        clusters = selection.kmeans_clusters(x, settings.fallback_clusters, settings.seed)
    chosen = selection.select_batch(scores[top], clusters, batch, settings.max_cluster_share)
    picked = top[chosen]
    requests = pa.table(
        {
            "rank": pa.array(np.arange(1, len(picked) + 1, dtype=np.int32)),
            "image_id": pa.array(pool["image_id"][picked].astype(np.int64)),
            "version_id": pa.array(pool["version_id"][picked].astype(np.int64)),
            "strategy": pa.array([settings.strategy] * len(picked), pa.string()),
            "uncertainty": pa.array(scores[picked].astype(np.float64)),
            "cluster": pa.array(clusters[chosen].astype(np.int32)),
        }
    )
    counts = np.unique(clusters[chosen], return_counts=True)[1]
    return NextRound(
        requests=requests,
        pool=n_pool,
        mean_score_pool=float(scores.mean()) if n_pool else 0.0,
        mean_score_batch=float(scores[picked].mean()) if len(picked) else 0.0,
        clusters_in_batch=len(counts),
        largest_cluster_share=float(counts.max() / len(picked)) if len(picked) else 0.0,
        cluster_source=source,
        strategy=f"{settings.strategy} ({settings.uncertainty})"
        if settings.strategy == "uncertainty"
        else settings.strategy,
    )


def cold_start_round(db_path: Path, settings: RoundSettings) -> NextRound:
    """The first round, with no classifier to be unsure: the unlabeled images nearest the
    k-means centres of a random sample (batch x candidate_factor) of the pool, biggest cluster
    first, so that the first labels cover the data (`selection.representatives`)."""
    import pyarrow as pa

    from embedding_assets.embedding.sets import load_current

    _, ids, vectors = load_current(db_path)
    keep = np.isin(ids, unlabeled_ids(db_path))
    ids, vectors = ids[keep], vectors[keep]
    n_pool = len(ids)
    size = settings.batch_size or selection.cold_start_batch_size(n_pool, settings.batch_fraction)
    batch = min(size, n_pool)
    n_sample = min(n_pool, batch * max(1, settings.candidate_factor))
    sample = np.sort(np.random.default_rng(settings.seed).choice(n_pool, n_sample, replace=False))
    picked, clusters = selection.representatives(vectors[sample], batch, settings.seed)
    rows = sample[picked]
    requests = pa.table(
        {
            "rank": pa.array(np.arange(1, len(rows) + 1, dtype=np.int32)),
            "image_id": pa.array(ids[rows].astype(np.int64)),
            "version_id": pa.array([None] * len(rows), pa.int64()),
            "strategy": pa.array([selection.COLD_START] * len(rows), pa.string()),
            "uncertainty": pa.array(np.ones(len(rows))),  # no model: nothing is known yet
            "cluster": pa.array(clusters.astype(np.int32)),
        }
    )
    return NextRound(
        requests=requests,
        pool=n_pool,
        mean_score_pool=1.0 if n_pool else 0.0,
        mean_score_batch=1.0 if len(rows) else 0.0,
        clusters_in_batch=len(rows),
        largest_cluster_share=1 / len(rows) if len(rows) else 0.0,
        cluster_source=f"k-means (k={batch}) on {n_sample} unlabeled images",
        strategy=f"{selection.COLD_START} (no classifier yet: the images nearest k-means centres)",
    )


@dataclass(frozen=True)
class Recorded:
    """A stored round: its number, whether it was added (else it replaced the latest one), and
    the whole learning curve (n_labels, accuracy) in round order."""

    round_no: int
    new_round: bool
    curve: list[tuple[int, float]]


def record_round(db_path: Path, requests: pa.Table, point: VersionSummary | None) -> Recorded:
    """Store a round's requests and learning-curve point (the latest classifier version's,
    None before any).

    A round stands for a set of labels. When the latest round's classifier version saw the
    same labels (same max label_id) as `point`'s version, that round's requests and point
    are replaced instead of a round being added: reruns without new labels must neither
    lengthen the curve nor move the plateau stop. Cold-start rounds (no classifier yet,
    `point` None) replace one another too: the curve starts with the first classifier."""
    max_label_id = point.max_label_id if point else None
    with connect(db_path) as con:
        con.begin()
        # fetchall, not fetchone: the register() in _insert_round needs every result completed
        last = con.execute(
            f"SELECT c.round, v.max_label_id, c.version_id FROM {tables.LEARNING_CURVE} c "
            f"LEFT JOIN {tables.MODEL_VERSIONS} v USING (version_id) "
            "ORDER BY c.round DESC LIMIT 1"
        ).fetchall()
        last_round, last_labels, last_version = last[0] if last else (None, None, None)
        same_labels = last_labels is not None and last_labels == max_label_id
        same_labels |= bool(last) and last_version is None and point is None
        if same_labels:
            round_no = last_round
            con.execute(f"DELETE FROM {tables.LABEL_REQUESTS} WHERE round = ?", [round_no])
            con.execute(f"DELETE FROM {tables.LEARNING_CURVE} WHERE round = ?", [round_no])
        else:
            round_no = con.execute(
                f"SELECT greatest((SELECT coalesce(max(round), 0) FROM {tables.LABEL_REQUESTS}), "
                f"(SELECT coalesce(max(round), 0) FROM {tables.LEARNING_CURVE})) + 1"
            ).fetchall()[0][0]
        _insert_round(con, round_no, requests, point)
        con.commit()
        curve = con.execute(
            f"SELECT n_labels, accuracy FROM {tables.LEARNING_CURVE} ORDER BY round"
        ).fetchall()
    points = [(int(n), float(a) if a is not None else float("nan")) for n, a in curve]
    return Recorded(int(round_no), not same_labels, points)


def _insert_round(con, round_no: int, requests: pa.Table, point: VersionSummary | None) -> None:
    now = utc_now()
    con.register("reqs", requests)
    con.execute(
        f"INSERT INTO {tables.LABEL_REQUESTS} SELECT ?, rank, image_id, version_id, strategy, "
        "uncertainty, cluster, ? FROM reqs",
        [round_no, now],
    )
    con.execute(
        f"INSERT INTO {tables.LEARNING_CURVE} VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            round_no,
            point.version_id if point else None,
            point.n_labels if point else 0,
            point.accuracy if point else None,
            point.macro_f1 if point else None,
            point.eval_method if point else None,
            now,
        ],
    )


@dataclass(frozen=True)
class RoundReport:
    """What `label_queue` reports of a round: plain values, the learning curve (markdown) and
    one line for the run log."""

    values: dict
    learning_curve: str
    log: str


def round_report(
    chosen: NextRound, recorded: Recorded, patience: int, min_delta: float
) -> RoundReport:
    """The round, how it was chosen, the learning curve and whether to stop labeling: accuracy
    gained less than `min_delta` over the last `patience` rounds."""
    curve = recorded.curve
    stop = selection.plateaued([a for _, a in curve if not np.isnan(a)], patience, min_delta)
    reason = (
        f"accuracy gained < {min_delta} over the last {patience} rounds: more labels are "
        "unlikely to help"
        if stop
        else "keep labeling"
    )
    values = {
        "round": recorded.round_no,
        "new_round": recorded.new_round,
        "batch_size": chosen.requests.num_rows,
        "unlabeled_pool": chosen.pool,
        "strategy": chosen.strategy,
        "clusters_in_batch": chosen.clusters_in_batch,
        "largest_cluster_share": round(chosen.largest_cluster_share, 3),
        "cluster_source": chosen.cluster_source,
        "mean_uncertainty_batch": round(chosen.mean_score_batch, 4),
        "mean_uncertainty_pool": round(chosen.mean_score_pool, 4),
        "stop_signal": stop,
        "stop_reason": reason,
        "export": "emb queue --export queue.csv",
    }
    png = learning_curve_png([n for n, _ in curve], [a for _, a in curve])
    replaced = "" if recorded.new_round else " (no new labels: replaced)"
    log = (
        f"round {recorded.round_no}{replaced}: {chosen.requests.num_rows} of {chosen.pool} "
        "unlabeled images requested"
    )
    return RoundReport(values, markdown.image(png, "learning curve"), log)


def export_queue(db_path: Path, out: Path) -> int:
    """Write the open requests of the latest round as CSV (path,label,...): fill in `label`
    and feed it back with `emb label import`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    target = str(out).replace("'", "''")
    with connect(db_path, read_only=True) as con:
        n = con.execute(f"SELECT count(*) FROM {tables.OPEN_LABEL_REQUESTS}").fetchone()[0]
        con.execute(
            f"""COPY (SELECT path, '' AS label, image_id, round, rank, predicted, probability,
                      uncertainty FROM {tables.OPEN_LABEL_REQUESTS} ORDER BY rank)
                TO '{target}' (HEADER, DELIMITER ',')"""
        )
    return int(n)


# The review round: the likeliest wrong labels of the current embedding set, most likely first.
LABEL_ISSUES_SQL = f"""
    SELECT i.path, l.given_label AS label, l.given_label, l.suggested_label,
           round(l.score, 4) AS score, l.image_id
    FROM {tables.LABEL_ISSUES} l JOIN {tables.IMAGES} i USING (image_id)
    WHERE l.model_key = {tables.CURRENT_MODEL_KEY}
    ORDER BY l.score DESC LIMIT {{n}}"""


def label_issue_rows(db_path: Path, n: int) -> list[tuple]:
    """The review round as rows (path, label, given_label, suggested_label, score, image_id)."""
    with connect(db_path, read_only=True) as con:
        return con.execute(LABEL_ISSUES_SQL.format(n=int(n))).fetchall()


def export_label_issues(db_path: Path, out: Path, n: int) -> int:
    """Write the review round as CSV (path,label,given_label,suggested_label,score,image_id):
    `label` starts as the given label; keep it to confirm, or change it, then `emb label
    import` (a confirmed label is recorded again, under source csv:<file>)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    target = str(out).replace("'", "''")
    with connect(db_path, read_only=True) as con:
        con.execute(
            f"COPY ({LABEL_ISSUES_SQL.format(n=int(n))}) TO '{target}' (HEADER, DELIMITER ',')"
        )
        return int(con.execute(f"SELECT count(*) FROM read_csv('{target}')").fetchone()[0])
