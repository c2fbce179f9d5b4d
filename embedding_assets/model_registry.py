"""DuckDB side of active learning: labeled vectors in, model versions, predictions and label
requests out. Each function opens one short connection; models live as joblib files."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets import fingerprints
from embedding_assets.active_learning import Decision, Training, uncertainty
from resources.duckdb_store import connect
from resources.paths import DataPaths

if TYPE_CHECKING:
    import pyarrow as pa


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def labeled(db_path: Path, image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(positions into `image_ids` of labeled usable images, their labels, max label_id)."""
    with connect(db_path, read_only=True) as con:
        rows = con.execute(
            "SELECT l.image_id, l.label FROM current_labels l JOIN usable_images USING (image_id)"
        ).fetchnumpy()
        max_label_id = con.execute("SELECT max(label_id) FROM labels").fetchone()[0]
    pos = {int(i): k for k, i in enumerate(image_ids)}
    keep = [
        (pos[int(i)], str(lab))
        for i, lab in zip(rows["image_id"], rows["label"], strict=True)
        if int(i) in pos
    ]
    keep.sort()
    idx = np.array([k for k, _ in keep], dtype=np.int64)
    return idx, np.array([lab for _, lab in keep], dtype=str), max_label_id


def champion(db_path: Path, current_embedding_key: str) -> dict | None:
    """The current champion's row plus its loaded model and training image ids, or None."""
    import joblib

    with connect(db_path, read_only=True) as con:
        row = con.execute(
            "SELECT version_id, algorithm, embedding_key, model_path, metrics "
            "FROM model_versions WHERE champion"
        ).fetchone()
    model_path = DataPaths(Path(db_path).parent).resolve(row[3]) if row else None
    if model_path is None or not model_path.exists():
        return None
    artifact = joblib.load(model_path)
    return {
        "version_id": row[0],
        "algorithm": row[1],
        "embedding_key": row[2],
        "current_embedding_key": current_embedding_key,
        "model_path": str(model_path),
        "metrics": json.loads(row[4]),
        **artifact,
    }


def champion_version(db_path: Path) -> int | None:
    """The champion's version_id, without loading its model."""
    with connect(db_path, read_only=True) as con:
        rows = con.execute("SELECT version_id FROM model_versions WHERE champion").fetchall()
    return int(rows[0][0]) if rows else None


def outcome(db_path: Path, version_id: int) -> tuple[bool, str, int | None] | None:
    """(promoted, decision, the champion's version_id now) of a version; None if it is gone."""
    with connect(db_path, read_only=True) as con:
        rows = con.execute(
            "SELECT promoted, decision, (SELECT max(version_id) FROM model_versions WHERE champion)"
            " FROM model_versions WHERE version_id = ?",
            [version_id],
        ).fetchall()
    return (bool(rows[0][0]), rows[0][1], rows[0][2]) if rows else None


def save_model(models_dir: Path, training: Training, embedding_key: str) -> Path:
    """Write the model before its registry row exists, so a row never points at nothing."""
    import joblib

    folder = models_dir / "classifier"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_now():%Y%m%dT%H%M%S%f}-{training.algorithm}.joblib"
    joblib.dump(
        {
            "model": training.model,
            "classes": training.classes.tolist(),
            "train_ids": training.train_ids,
            "embedding_key": embedding_key,
        },
        path,
    )
    return path


def register(
    db_path: Path,
    training: Training,
    decision: Decision,
    model_path: Path,
    embedding_key: str,
    max_label_id: int | None,
    fingerprint: str | None = None,
) -> int:
    """Insert the version with a `classifier_candidates` row per candidate and, if promoted,
    move the champion flag to it, in one transaction (with the `fingerprint` of the inputs)."""
    payload = {
        "chosen": training.algorithm,
        **training.candidates,
        "dropped_classes": training.dropped_classes,
        "comparison": {"new": decision.new, "champion": decision.champion},
    }
    with connect(db_path) as con:
        con.begin()
        version_id = con.execute("SELECT nextval('model_version_seq')").fetchone()[0]
        if decision.promoted:
            con.execute("UPDATE model_versions SET champion = false WHERE champion")
        con.execute(
            "INSERT INTO model_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                version_id,
                training.algorithm,
                embedding_key,
                DataPaths(Path(db_path).parent).relative(model_path),
                json.dumps(training.classes.tolist()),
                training.n_labels,
                max_label_id,
                training.eval_method,
                json.dumps(payload),
                decision.promoted,
                decision.promoted,
                decision.reason,
                _now(),
            ],
        )
        con.executemany(
            "INSERT INTO classifier_candidates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _candidate_rows(version_id, training, decision),
        )
        if fingerprint is not None:
            fingerprints.record(con, "classifier", fingerprint, result=str(version_id))
        con.commit()
    return int(version_id)


def _candidate_rows(version_id: int, training: Training, decision: Decision) -> list[list]:
    rows = []
    for name, m in training.candidates.items():
        chosen = name == training.algorithm
        rows.append(
            [
                version_id,
                name,
                m["accuracy"],
                m["macro_f1"],
                m["log_loss"],
                m["n_eval"],
                m["fit_seconds"],
                chosen,
                chosen and decision.promoted,
            ]
        )
    return rows


def write_predictions(
    db_path: Path,
    version_id: int,
    image_ids: np.ndarray,
    classes: np.ndarray,
    p: np.ndarray,
    fingerprint: str | None = None,
) -> dict[str, float]:
    """Replace the predictions table with this version's predictions for every image, with
    the `fingerprint` of the inputs (None: of unknown inputs, never reused)."""
    import pyarrow as pa

    u = uncertainty(p)
    best = p.argmax(axis=1)
    table = pa.table(
        {
            "image_id": pa.array(np.asarray(image_ids, dtype=np.int64)),
            "version_id": pa.array(np.full(len(image_ids), version_id, dtype=np.int64)),
            "predicted": pa.array(np.asarray(classes)[best].astype(str).tolist(), pa.string()),
            "probability": pa.array(p[np.arange(len(p)), best]),
            "least_confident": pa.array(u["least_confident"]),
            "margin": pa.array(u["margin"]),
            "entropy": pa.array(u["entropy"]),
        }
    )
    with connect(db_path) as con:
        con.begin()  # also completes the schema check's result, which register() requires
        con.register("new_predictions", table)
        con.execute("DELETE FROM predictions")
        con.execute("INSERT INTO predictions SELECT *, ? FROM new_predictions", [_now()])
        if fingerprint is None:
            con.execute("DELETE FROM asset_fingerprints WHERE asset = 'predictions'")
        else:
            fingerprints.record(con, "predictions", fingerprint)
        con.commit()
    return {k: float(v.mean()) for k, v in u.items()}


def unlabeled_pool(db_path: Path) -> dict[str, np.ndarray]:
    """Predicted, usable, not yet labeled images with their uncertainty columns."""
    with connect(db_path, read_only=True) as con:
        return con.execute(
            """
            SELECT p.image_id, p.version_id, p.least_confident, p.margin, p.entropy
            FROM predictions p JOIN usable_images USING (image_id)
            LEFT JOIN current_labels l USING (image_id)
            WHERE l.image_id IS NULL ORDER BY p.image_id
            """
        ).fetchnumpy()


def stored_clusters(db_path: Path, image_ids: np.ndarray, model_key: str) -> np.ndarray | None:
    """Clusters from the `clusters` table for these images, or None where it has no full cover."""
    import pyarrow as pa

    with connect(db_path, read_only=True) as con:
        exists = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'clusters'"
        ).fetchall()[0][0]
        if not exists:
            return None
        con.register("wanted", pa.table({"image_id": pa.array(image_ids, pa.int64())}))
        rows = con.execute(
            "SELECT w.image_id, c.cluster FROM wanted w LEFT JOIN clusters c "
            "ON c.image_id = w.image_id AND c.model_key = ?",
            [model_key],
        ).fetchall()
    found = {int(i): c for i, c in rows}
    if any(found.get(int(i)) is None for i in image_ids):
        return None
    return np.array([int(found[int(i)]) for i in image_ids], dtype=np.int64)


def latest_version(db_path: Path) -> tuple | None:
    with connect(db_path, read_only=True) as con:
        return con.execute(
            "SELECT version_id, n_labels, metrics, eval_method, max_label_id FROM model_versions "
            "ORDER BY version_id DESC LIMIT 1"
        ).fetchone()


def record_round(
    db_path: Path,
    requests: pa.Table,
    curve_row: dict,
    fingerprint: str | None = None,
) -> tuple[int, bool, list[tuple[int, float]]]:
    """Store a round's requests and learning-curve point; return the round number, whether it
    is a new round, and the whole curve (n_labels, accuracy) in round order.

    A round stands for a set of labels. When the latest round's classifier version saw the
    same labels (same max label_id) as `curve_row`'s version, that round's requests and point
    are replaced instead of a round being added: reruns without new labels must neither
    lengthen the curve nor move the plateau stop. `fingerprint`: of the inputs the round was
    chosen from."""
    with connect(db_path) as con:
        con.begin()
        # fetchall, not fetchone: the register() in _insert_round needs every result completed
        last = con.execute(
            "SELECT c.round, v.max_label_id FROM learning_curve c "
            "LEFT JOIN model_versions v USING (version_id) ORDER BY c.round DESC LIMIT 1"
        ).fetchall()
        last_round, last_labels = last[0] if last else (None, None)
        same_labels = last_labels is not None and last_labels == curve_row["max_label_id"]
        if same_labels:
            round_no = last_round
            con.execute("DELETE FROM label_requests WHERE round = ?", [round_no])
            con.execute("DELETE FROM learning_curve WHERE round = ?", [round_no])
        else:
            round_no = con.execute(
                "SELECT greatest((SELECT coalesce(max(round), 0) FROM label_requests), "
                "(SELECT coalesce(max(round), 0) FROM learning_curve)) + 1"
            ).fetchall()[0][0]
        _insert_round(con, round_no, requests, curve_row)
        if fingerprint is None:
            con.execute("DELETE FROM asset_fingerprints WHERE asset = 'label_queue'")
        else:
            fingerprints.record(con, "label_queue", fingerprint, result=str(round_no))
        con.commit()
        curve = con.execute(
            "SELECT n_labels, accuracy FROM learning_curve ORDER BY round"
        ).fetchall()
    points = [(int(n), float(a) if a is not None else float("nan")) for n, a in curve]
    return int(round_no), not same_labels, points


def _insert_round(con, round_no: int, requests: pa.Table, curve_row: dict) -> None:
    now = _now()
    con.register("reqs", requests)
    con.execute(
        "INSERT INTO label_requests SELECT ?, rank, image_id, version_id, strategy, "
        "uncertainty, cluster, ? FROM reqs",
        [round_no, now],
    )
    con.execute(
        "INSERT INTO learning_curve VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            round_no,
            curve_row["version_id"],
            curve_row["n_labels"],
            curve_row["accuracy"],
            curve_row["macro_f1"],
            curve_row["eval_method"],
            now,
        ],
    )


def export_queue(db_path: Path, out: Path) -> int:
    """Write the open requests of the latest round as CSV (path,label,...): fill in `label`
    and feed it back with `emb label import`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    target = str(out).replace("'", "''")
    with connect(db_path, read_only=True) as con:
        n = con.execute("SELECT count(*) FROM open_label_requests").fetchone()[0]
        con.execute(
            f"""COPY (SELECT path, '' AS label, image_id, round, rank, predicted, probability,
                      uncertainty FROM open_label_requests ORDER BY rank)
                TO '{target}' (HEADER, DELIMITER ',')"""
        )
    return int(n)


# The review round: the likeliest wrong labels of the current embedding set, most likely first.
LABEL_ISSUES_SQL = """
    SELECT i.path, l.given_label AS label, l.given_label, l.suggested_label,
           round(l.score, 4) AS score, l.image_id
    FROM label_issues l JOIN images i USING (image_id)
    WHERE l.model_key = (SELECT model_key FROM embedding_sets ORDER BY updated_at DESC LIMIT 1)
    ORDER BY l.score DESC LIMIT {n}"""


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
