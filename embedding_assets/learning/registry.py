"""The classifier's model registry in DuckDB: labeled vectors in; versions (with their
candidates), the champion and its predictions out. Each function opens one short connection;
models live as joblib files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding_assets.common import tables
from embedding_assets.common.clock import utc_now
from embedding_assets.learning.classifiers import Champion, Decision, Training
from embedding_assets.learning.selection import uncertainty
from resources.duckdb_store import connect
from resources.paths import DataPaths


@dataclass(frozen=True)
class VersionSummary:
    """A version's learning-curve figures: labels seen, how it was evaluated, its accuracy."""

    version_id: int
    n_labels: int
    max_label_id: int | None
    eval_method: str
    accuracy: float
    macro_f1: float


@dataclass(frozen=True)
class Labeled:
    """The labeled usable images among an embedding set's rows."""

    positions: np.ndarray  # into the set's image_ids
    labels: np.ndarray
    split_keys: np.ndarray  # a number in [0, 1) from each image's content hash
    max_label_id: int | None


def labeled(db_path: Path, image_ids: np.ndarray) -> Labeled:
    """The labeled usable images of `image_ids`, with the content-hash keys that decide the
    held-out split (`catalog.labels.labeled_split`, the fine-tune's too)."""
    from embedding_assets.catalog.labels import labeled_split

    found = labeled_split(db_path)
    pos = {int(i): k for k, i in enumerate(image_ids)}
    order = sorted(
        (k for k, i in enumerate(found.ids.tolist()) if i in pos), key=lambda k: pos[found.ids[k]]
    )
    return Labeled(
        np.array([pos[int(found.ids[k])] for k in order], dtype=np.int64),
        found.labels[order],
        found.keys[order],
        found.max_label_id,
    )


def champion(paths: DataPaths) -> Champion | None:
    """The current champion with its loaded model and training image ids, or None."""
    import joblib

    with connect(paths.catalog_db, read_only=True) as con:
        row = con.execute(
            "SELECT version_id, algorithm, embedding_key, model_path, metrics, max_label_id "
            f"FROM {tables.MODEL_VERSIONS} WHERE champion"
        ).fetchone()
    model_path = paths.resolve(row[3]) if row else None
    if model_path is None or not model_path.exists():
        return None
    artifact = joblib.load(model_path)
    return Champion(
        version_id=row[0],
        algorithm=row[1],
        embedding_key=row[2],
        model_path=model_path,
        metrics=json.loads(row[4]),
        model=artifact["model"],
        classes=list(artifact["classes"]),
        train_ids=np.asarray(artifact["train_ids"]),
        max_label_id=row[5],
    )


def corrected_since(db_path: Path, image_ids: np.ndarray, as_of: int | None) -> int:
    """How many of `image_ids` carry another label now than they did at label `as_of` (the
    newest label a model saw): the corrections it has not learned."""
    if as_of is None or len(image_ids) == 0:
        return 0
    with connect(db_path, read_only=True) as con:
        return con.execute(
            "WITH ids AS (SELECT unnest(?::BIGINT[]) AS image_id), "
            "earlier AS (SELECT image_id, arg_max(label, label_id) AS label "
            f"FROM {tables.LABELS} WHERE label_id <= ? GROUP BY image_id) "
            "SELECT count(*) FROM ids JOIN earlier USING (image_id) "
            f"JOIN {tables.CURRENT_LABELS} c USING (image_id) "
            "WHERE c.label IS DISTINCT FROM earlier.label",
            [[int(i) for i in image_ids], as_of],
        ).fetchone()[0]


def champion_version(db_path: Path) -> int | None:
    """The champion's version_id, without loading its model."""
    with connect(db_path, read_only=True) as con:
        rows = con.execute(
            f"SELECT version_id FROM {tables.MODEL_VERSIONS} WHERE champion"
        ).fetchall()
    return int(rows[0][0]) if rows else None


@dataclass(frozen=True)
class Outcome:
    """How a version's promotion went, and which version is the champion now."""

    version_id: int
    promoted: bool
    decision: str  # the gate's reason, in words
    champion_id: int | None


def outcome(db_path: Path, version_id: int) -> Outcome | None:
    """The outcome of a version; None if it is gone."""
    with connect(db_path, read_only=True) as con:
        rows = con.execute(
            "SELECT promoted, decision, "
            f"(SELECT max(version_id) FROM {tables.MODEL_VERSIONS} WHERE champion) "
            f"FROM {tables.MODEL_VERSIONS} WHERE version_id = ?",
            [version_id],
        ).fetchall()
    return Outcome(version_id, bool(rows[0][0]), rows[0][1], rows[0][2]) if rows else None


def save_model(models_dir: Path, training: Training, embedding_key: str) -> Path:
    """Write the model before its registry row exists, so a row never points at nothing."""
    import joblib

    folder = models_dir / "classifier"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{utc_now():%Y%m%dT%H%M%S%f}-{training.algorithm}.joblib"
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
) -> int:
    """Insert the version with a `classifier_candidates` row per candidate and, if promoted,
    move the champion flag to it, in one transaction."""
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
            con.execute(f"UPDATE {tables.MODEL_VERSIONS} SET champion = false WHERE champion")
        con.execute(
            f"INSERT INTO {tables.MODEL_VERSIONS} (version_id, algorithm, embedding_key, "
            "model_path, classes, n_labels, max_label_id, eval_method, metrics, champion, "
            "promoted, decision, created_at, ece, temperature) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                utc_now(),
                training.metrics.get("ece"),
                training.metrics.get("temperature"),
            ],
        )
        con.executemany(
            f"INSERT INTO {tables.CLASSIFIER_CANDIDATES} (version_id, candidate, accuracy, "
            "macro_f1, log_loss, n_eval, fit_seconds, challenger, promoted, ece, params) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _candidate_rows(version_id, training, decision),
        )
        if training.searches:
            from embedding_assets.learning.tuning import trial_rows

            con.executemany(
                f"INSERT INTO {tables.CLASSIFIER_TRIALS} VALUES (?, ?, ?, ?, ?, ?, ?)",
                trial_rows(version_id, training.searches),
            )
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
                m.get("ece"),
                json.dumps(training.params.get(name)) if name in training.params else None,
            ]
        )
    return rows


def write_predictions(
    db_path: Path,
    version_id: int,
    image_ids: np.ndarray,
    classes: np.ndarray,
    p: np.ndarray,
) -> dict[str, float]:
    """Replace the predictions table with this version's predictions for every image."""
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
        con.execute(f"DELETE FROM {tables.PREDICTIONS}")
        con.execute(
            f"INSERT INTO {tables.PREDICTIONS} SELECT *, ? FROM new_predictions", [utc_now()]
        )
        con.commit()
    return {k: float(v.mean()) for k, v in u.items()}


def latest_version(db_path: Path) -> VersionSummary | None:
    """The newest classifier version's learning-curve figures (those of its chosen candidate)."""
    with connect(db_path, read_only=True) as con:
        row = con.execute(
            "SELECT version_id, n_labels, metrics, eval_method, max_label_id "
            f"FROM {tables.MODEL_VERSIONS} ORDER BY version_id DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return None
    version_id, n_labels, metrics_json, eval_method, max_label_id = row
    data = json.loads(metrics_json)
    chosen = data[data["chosen"]]
    return VersionSummary(
        version_id=version_id,
        n_labels=n_labels,
        max_label_id=max_label_id,
        eval_method=eval_method,
        accuracy=chosen["accuracy"],
        macro_f1=chosen["macro_f1"],
    )
