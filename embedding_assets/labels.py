"""Writing labels into the append-only `labels` log: from a CSV file or one at a time.

Every row is validated before anything is written; the valid rows then land in one
transaction, so an import is never half-written, and each rejected row is reported with its
line number and the reason.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from resources.duckdb_store import connect

IMAGE_COLUMNS = ("path", "image_id", "image", "id")


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str


@dataclass
class ImportResult:
    inserted: int = 0
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    line: int
    ref: str
    label: str
    by_id: bool


def read_label_rows(csv_path: Path) -> tuple[list[_Row], list[Rejected]]:
    """Parse `csv_path`: a header naming `label` and one of path/image_id/image/id, or two
    columns without a header (image path or id, label). Extra columns are ignored."""
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{csv_path} is not UTF-8 text ({exc}); save it as UTF-8 CSV") from exc
    records = list(csv.reader(text.splitlines()))
    rows: list[_Row] = []
    rejected: list[Rejected] = []
    if not records:
        return rows, rejected
    header = [h.strip().lower() for h in records[0]]
    image_col, label_col, forced_id, start = 0, 1, None, 0
    if "label" in header:
        label_col = header.index("label")
        found = [c for c in IMAGE_COLUMNS if c in header]
        if not found:
            raise ValueError(
                f"{csv_path}: the header {records[0]} has `label` but no image column; "
                f"name it one of {', '.join(IMAGE_COLUMNS)}"
            )
        image_col = header.index(found[0])
        forced_id = found[0] in ("image_id", "id") or None
        start = 1
    for offset, record in enumerate(records[start:]):
        line = start + offset + 1
        if not record or all(not cell.strip() for cell in record):
            continue  # blank lines are not rows
        if len(record) <= max(image_col, label_col):
            rejected.append(
                Rejected(line, f"malformed row: expected an image and a label, got {record}")
            )
            continue
        ref, label = record[image_col].strip(), record[label_col].strip()
        if not ref:
            rejected.append(Rejected(line, "empty image path/id"))
            continue
        if not label:
            rejected.append(Rejected(line, f"empty label for {ref}"))
            continue
        by_id = forced_id if forced_id is not None else ref.isdigit()
        if by_id and not ref.isdigit():
            rejected.append(Rejected(line, f"image_id {ref!r} is not an integer"))
            continue
        rows.append(_Row(line, ref, label, bool(by_id)))
    return rows, rejected


def _resolve_path(ref: str, base: Path) -> str:
    p = Path(ref).expanduser()
    if p.is_absolute():
        return str(p.resolve())
    for root in (Path.cwd(), base):
        if (root / p).exists():
            return str((root / p).resolve())
    return str((base / p).resolve())


def write_labels(
    db_path: Path, rows: list[_Row], source: str, base: Path, timeout_s: float = 60.0
) -> ImportResult:
    """Look every row's image up, reject unknown or removed ones, insert the rest atomically."""
    result = ImportResult()
    if not rows:
        return result
    refs = pa.table(
        {
            "line": pa.array([r.line for r in rows], pa.int64()),
            "path": pa.array([None if r.by_id else _resolve_path(r.ref, base) for r in rows]),
            "id": pa.array([int(r.ref) if r.by_id else None for r in rows], pa.int64()),
            "label": pa.array([r.label for r in rows], pa.string()),
        }
    )
    with connect(db_path, timeout_s=timeout_s) as con:
        con.begin()  # also completes the schema check's result, which register() requires
        con.register("refs", refs)
        matched = con.execute(
            """
            SELECT r.line, r.label, coalesce(r.path, CAST(r.id AS VARCHAR)) AS ref,
                   i.image_id, i.removed_at IS NOT NULL AS removed
            FROM refs r
            LEFT JOIN images i ON (r.id IS NOT NULL AND i.image_id = r.id)
                               OR (r.path IS NOT NULL AND i.path = r.path)
            ORDER BY r.line
            """
        ).fetchall()
        good: list[tuple[int, str]] = []
        for line, label, ref, image_id, removed in matched:
            if image_id is None:
                result.rejected.append(Rejected(line, f"unknown image {ref}: not in the catalog"))
            elif removed:
                result.rejected.append(Rejected(line, f"image {ref} was removed from its folder"))
            else:
                good.append((image_id, label))
        if good:
            batch = pa.table(
                {
                    "image_id": pa.array([g[0] for g in good], pa.int64()),
                    "label": pa.array([g[1] for g in good], pa.string()),
                }
            )
            con.register("batch", batch)
            con.execute(
                "INSERT INTO labels (image_id, label, source) SELECT image_id, label, ? FROM batch",
                [source],
            )
        con.commit()
        result.inserted = len(good)
    return result


def import_csv(db_path: Path, csv_path: Path, timeout_s: float = 60.0) -> ImportResult:
    """Import `csv_path` into the labels log with source `csv:<file name>`."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found; pass a CSV of image path (or id), label")
    rows, rejected = read_label_rows(csv_path)
    result = write_labels(db_path, rows, f"csv:{csv_path.name}", csv_path.parent, timeout_s)
    result.rejected = sorted(rejected + result.rejected, key=lambda r: r.line)
    return result


def set_label(db_path: Path, image: str, label: str, source: str = "cli") -> ImportResult:
    """Label one image, given by path or id."""
    ref, label = image.strip(), label.strip()
    if not label:
        return ImportResult(rejected=[Rejected(1, f"empty label for {ref}")])
    row = _Row(1, ref, label, ref.isdigit())
    return write_labels(db_path, [row], source, Path.cwd())
