"""What the pages read from the DuckDB catalog, each in one short read-only connection that is
closed before the answer is built (never held across heavy work), and the label writes, which go
through the labels module like the CLI's.

A read that finds the catalog locked by a run gives up after `timeout_s` with
CatalogLockedError (the page endpoint answers 503 and the page tries again)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import NamedTuple

import duckdb
import numpy as np

from embedding_assets.catalog import labels as label_log
from embedding_assets.common import tables
from resources.duckdb_store import connect

READ_TIMEOUT_S = 2.0
WRITE_TIMEOUT_S = 10.0
MAX_LABEL_CHARS = label_log.MAX_LABEL_CHARS  # the label rules are the labels module's
# DuckDB refuses a connection whose read_only differs from one open in the same process (the
# server's background index reload reads the catalog too); such a clash lasts milliseconds.
SAME_PROCESS_CLASH = label_log.SAME_PROCESS_CLASH


def _retry_clash(fn, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except duckdb.ConnectionException as exc:
            if SAME_PROCESS_CLASH not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _present(con) -> set[str]:
    return {
        r[0]
        for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()
    }


class ImageRef(NamedTuple):
    path: str
    sha256: str | None


def image_ref(db: Path, image_id: int, timeout_s: float = READ_TIMEOUT_S) -> ImageRef | None:
    """The stored path of a usable image (None: unknown, broken or removed)."""

    def read():
        with connect(db, read_only=True, timeout_s=timeout_s) as con:
            return con.execute(
                f"SELECT path, sha256 FROM {tables.USABLE_IMAGES} WHERE image_id = ?", [image_id]
            ).fetchone()

    row = _retry_clash(read, timeout_s)
    return None if row is None else ImageRef(row[0], row[1])


def label_state(db: Path, timeout_s: float = READ_TIMEOUT_S) -> dict:
    """The open label requests (most uncertain first), the classes known so far, the learning
    curve, and the paths of the requested images (for thumbnails, not sent to the page)."""

    def read():
        with connect(db, read_only=True, timeout_s=timeout_s) as con:
            present = _present(con)
            requests, curve, latest = [], [], None
            if tables.LABEL_REQUESTS in present:
                requests = con.execute(
                    "SELECT o.round, o.rank, o.image_id, o.path, o.predicted, o.probability, "
                    f"o.uncertainty, o.cluster, i.sha256 FROM {tables.OPEN_LABEL_REQUESTS} o "
                    f"JOIN {tables.IMAGES} i USING (image_id) ORDER BY o.uncertainty DESC, o.rank"
                ).fetchall()
                latest = con.execute(f"SELECT max(round) FROM {tables.LABEL_REQUESTS}").fetchone()[
                    0
                ]
            if tables.LEARNING_CURVE in present:
                curve = con.execute(
                    "SELECT round, n_labels, accuracy, macro_f1, eval_method "
                    f"FROM {tables.LEARNING_CURVE} ORDER BY round"
                ).fetchall()
            classes = con.execute(
                # by name, so a class keeps its number key from round to round
                f"SELECT label, count(*) AS n FROM {tables.CURRENT_LABELS} "
                "GROUP BY label ORDER BY label"
            ).fetchall()
            predicted = []
            if tables.PREDICTIONS in present:
                predicted = con.execute(
                    f"SELECT DISTINCT predicted FROM {tables.PREDICTIONS}"
                ).fetchall()
            return requests, curve, latest, classes, predicted

    requests, curve, latest, classes, predicted = _retry_clash(read, timeout_s)
    names = [c[0] for c in classes]
    names += sorted({p[0] for p in predicted} - set(names))
    return {
        "round": latest,
        "requests": [
            {
                "round": r[0],
                "rank": r[1],
                "image_id": r[2],
                "predicted": r[4],
                "probability": r[5],
                "uncertainty": r[6],
                "cluster": r[7],
            }
            for r in requests
        ],
        "classes": names,
        "class_counts": {c[0]: c[1] for c in classes},
        "curve": [
            {
                "round": c[0],
                "n_labels": c[1],
                "accuracy": c[2],
                "macro_f1": c[3],
                "eval_method": c[4],
            }
            for c in curve
        ],
        "_refs": {r[2]: ImageRef(r[3], r[8]) for r in requests},
    }


def latest_round(db: Path, timeout_s: float = READ_TIMEOUT_S) -> dict:
    """The newest round and learning-curve length: cheap enough to poll."""

    def read():
        with connect(db, read_only=True, timeout_s=timeout_s) as con:
            if tables.LABEL_REQUESTS not in _present(con):
                return None, 0
            return con.execute(
                f"SELECT (SELECT max(round) FROM {tables.LABEL_REQUESTS}), "
                f"(SELECT count(*) FROM {tables.LEARNING_CURVE})"
            ).fetchone()

    round_no, points = _retry_clash(read, timeout_s)
    return {"round": round_no, "curve_points": int(points or 0)}


def _codes(values: np.ndarray) -> dict:
    """A string column dictionary-encoded for the page: names, and a code per point (-1: none)."""
    names = sorted({v for v in values.tolist() if v is not None})
    index = {n: i for i, n in enumerate(names)}
    return {"names": names, "codes": [index.get(v, -1) for v in values.tolist()]}


def map_data(db: Path, method: str | None, timeout_s: float = READ_TIMEOUT_S) -> dict:
    """The points of one projection of the current embedding set, columnar: ids, x, y, label,
    cluster, prediction and anomaly score per point, plus the methods there are."""

    def read():
        with connect(db, read_only=True, timeout_s=timeout_s) as con:
            present = _present(con)
            key_row = con.execute(f"SELECT {tables.CURRENT_MODEL_KEY}").fetchone()
            if key_row is None or key_row[0] is None:
                return None, [], None
            methods = [
                r[0]
                for r in con.execute(
                    f"SELECT DISTINCT method FROM {tables.PROJECTIONS} WHERE model_key = ? "
                    "ORDER BY 1",
                    [key_row[0]],
                ).fetchall()
            ]
            chosen = method if method in methods else (methods[0] if methods else None)
            if chosen is None:
                return key_row[0], methods, None
            has_predictions = tables.PREDICTIONS in present
            pred = "p.predicted" if has_predictions else "NULL::VARCHAR"
            join = f"LEFT JOIN {tables.PREDICTIONS} p USING (image_id)" if has_predictions else ""
            cols = con.execute(
                f"""SELECT o.image_id, o.{chosen}_x::FLOAT AS x, o.{chosen}_y::FLOAT AS y,
                           o.label, o.cluster, {pred} AS predicted, o.anomaly_score,
                           o.anomaly_flag, o.path, i.sha256
                    FROM {tables.IMAGE_OVERVIEW} o JOIN {tables.IMAGES} i USING (image_id) {join}
                    WHERE o.{chosen}_x IS NOT NULL ORDER BY o.image_id"""
            ).fetchnumpy()
            return key_row[0], methods, (chosen, cols)

    key, methods, found = _retry_clash(read, timeout_s)
    if found is None:
        return {"model_key": key, "methods": methods, "method": None, "n": 0, "_refs": {}}
    chosen, cols = found
    ids = np.asarray(cols["image_id"], dtype=np.int64)

    def floats(name: str) -> np.ndarray:
        column = cols[name]
        out = np.asarray(np.ma.getdata(column), dtype=np.float64).copy()
        out[np.ma.getmaskarray(column)] = np.nan
        return out

    cluster, score, flag = floats("cluster"), floats("anomaly_score"), floats("anomaly_flag")

    def rounded(a: np.ndarray, digits: int) -> list:
        """Rounded floats, None where missing (NaN is not JSON)."""
        out = np.round(a, digits).tolist()
        for i in np.flatnonzero(np.isnan(a)).tolist():
            out[i] = None
        return out

    def ints(a: np.ndarray) -> list:
        """Small ints, -1 where missing."""
        return np.where(np.isnan(a), -1, a).astype(np.int64).tolist()

    def strings(name: str) -> np.ndarray:
        column = cols[name]
        out = np.asarray(np.ma.getdata(column), dtype=object)
        if np.ma.isMaskedArray(column):
            out[np.ma.getmaskarray(column)] = None
        return out

    paths, shas = strings("path").tolist(), strings("sha256").tolist()
    return {
        "model_key": key,
        "methods": methods,
        "method": chosen,
        "n": len(ids),
        "ids": ids.tolist(),
        "x": np.round(np.asarray(cols["x"], dtype=np.float64), 4).tolist(),
        "y": np.round(np.asarray(cols["y"], dtype=np.float64), 4).tolist(),
        "label": _codes(strings("label")),
        "predicted": _codes(strings("predicted")),
        "cluster": ints(cluster),  # -1: none
        "anomaly": rounded(score, 4),
        "anomaly_flag": ints(flag),  # 1 flagged, 0 not, -1 not scored
        "_refs": dict(
            zip(ids.tolist(), map(ImageRef._make, zip(paths, shas, strict=True)), strict=True)
        ),
    }


def write_web_labels(db: Path, image_ids: list[int], label: str, source: str = "web") -> dict:
    """Append `label` for each id to the labels log with the CLI's validation (the label rules;
    unknown, removed or broken images are rejected with the reason), in one transaction.

    The answer says what happened to every id: `requested` ids, `inserted` rows, one `rejected`
    reason per id not written, and the `label` as stored (trimmed, NFC)."""
    try:
        label = label_log.clean_label(label)
    except label_log.LabelError as exc:
        return {"inserted": 0, "requested": len(image_ids), "rejected": [str(exc)], "label": None}
    rows = [label_log._Row(n + 1, str(i), label, True) for n, i in enumerate(image_ids)]
    result = _retry_clash(
        lambda: label_log.write_labels(db, rows, source, Path.cwd(), WRITE_TIMEOUT_S),
        WRITE_TIMEOUT_S,
    )
    return {
        "inserted": result.inserted,
        "requested": len(image_ids),
        "rejected": [f"{image_ids[r.line - 1]}: {r.reason}" for r in result.rejected],
        "label": label,
    }
