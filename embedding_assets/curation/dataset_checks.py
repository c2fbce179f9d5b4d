"""Checks of the labeled set as a whole, as Datalab users expect them: how many labels each
class has, and whether one class is so rare beside the others that a classifier will mostly
ignore it. Rows of `dataset_checks`: (check_name, subject, value, p_value, warning, detail).

Not checked: the order of the images (Datalab's non-IID check). The catalog's order is the
path order, so a folder per class is sorted by class by construction; a test of that order
would always warn and say nothing about how the data was collected.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from embedding_assets.common import markdown
from embedding_assets.common.markdown import Markdown
from embedding_assets.curation.reports import cell

MIN_PER_CLASS = 10  # fewer labels than this: the class can hardly be learned or judged
RARE_SHARE = 0.2  # a class with under a fifth of the median class's labels is rare


def dataset_checks(labels: list[str]) -> list[dict]:
    """One `label_counts` row per class (warning below MIN_PER_CLASS) and one
    `class_imbalance` row (the rarest class's count over the median class's, warning below
    RARE_SHARE). No labels: one row saying so."""
    counts = Counter(labels)
    if not counts:
        detail = "no labels yet: label images (emb label, folders, the /label page)"
        return [_row("label_counts", "", 0.0, True, detail)]
    rows = [
        _row(
            "label_counts",
            name,
            float(n),
            n < MIN_PER_CLASS,
            f"{n} labels" + (f", under {MIN_PER_CLASS}: label more" if n < MIN_PER_CLASS else ""),
        )
        for name, n in sorted(counts.items())
    ]
    ordered = sorted(counts.values())
    median = ordered[len(ordered) // 2]
    rarest, n = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    share = n / median
    warn = len(counts) > 1 and share < RARE_SHARE
    detail = f"rarest class {rarest!r}: {n} labels, {share:.2f} of the median class's {median}"
    if warn:
        detail += "; label more of it, or weigh classes when training"
    rows.append(_row("class_imbalance", rarest, share, warn, detail))
    return rows


def _row(check: str, subject: str, value: float, warning: bool, detail: str) -> dict:
    return {
        "check_name": check,
        "subject": subject,
        "value": value,
        "p_value": None,
        "warning": warning,
        "detail": detail,
    }


@dataclass(frozen=True)
class LabelChecks:
    labels: int
    classes: int
    rows: list[dict]  # one per check and subject (`dataset_checks`' columns)

    @property
    def warnings(self) -> list[str]:
        """The detail of each check that warns."""
        return [r["detail"] for r in self.rows if r["warning"]]

    def shown(self) -> dict:
        """What `dataset_checks` reports: counts and every check as a table."""
        table = [
            [r["check_name"], r["subject"], cell(r["value"]), r["warning"], r["detail"]]
            for r in self.rows
        ]
        columns = ["check", "subject", "value", "warning", "detail"]
        return {
            "labels": self.labels,
            "classes": self.classes,
            "warnings": len(self.warnings),
            "checks": Markdown(markdown.table(columns, table)),
        }


def check_labels(db: Path) -> LabelChecks:
    """Check the current labels and replace the `dataset_checks` rows."""
    import pyarrow as pa

    from embedding_assets.common import tables
    from embedding_assets.common.results import replace_rows
    from resources.duckdb_store import connect

    with connect(db, read_only=True) as con:
        found = con.execute(f"SELECT label FROM {tables.CURRENT_LABELS}").fetchall()
    labels = [label for (label,) in found]
    rows = dataset_checks(labels)
    schema = pa.schema(
        [
            ("check_name", pa.string()),
            ("subject", pa.string()),
            ("value", pa.float64()),
            ("p_value", pa.float64()),
            ("warning", pa.bool_()),
            ("detail", pa.string()),
            ("model_key", pa.string()),  # not per embedding set: ''
        ]
    )
    table = pa.Table.from_pylist([{**r, "model_key": ""} for r in rows], schema=schema)
    replace_rows(db, tables.DATASET_CHECKS, None, table)
    return LabelChecks(len(labels), len(set(labels)), rows)
