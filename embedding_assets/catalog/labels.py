"""Labels: the label a folder layout implies, and writing labels into the append-only log, from
a CSV file or one at a time.

Every row is validated before anything is written; the valid rows then land in one
transaction, so an import is never half-written, and each rejected row is reported with its
line number and the reason.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedding_assets.catalog import object_store
from embedding_assets.common import tables
from resources.duckdb_store import connect

UNLABELED_FOLDERS = ("unlabeled", "_unlabeled", "unknown")
IMAGE_COLUMNS = ("path", "image_id", "image", "id")
# Delimiters a spreadsheet may export in place of the comma, with the name said back to the user.
OTHER_DELIMITERS = {";": "semicolon (;)", "\t": "tab", "|": "pipe (|)"}


def folder_label(
    path: str, root: str | Path, unlabeled: tuple[str, ...] | list[str] = UNLABELED_FOLDERS
) -> str | None:
    """The label a folder layout implies: the image's parent folder name below `root` (a folder
    or an object-storage URL), none for folders named (case-insensitively) one of `unlabeled`."""
    if object_store.is_url(path):
        parts = object_store.relative_parts(path, root)
    else:
        parts = Path(path).relative_to(Path(root).resolve()).parts
    if len(parts) < 2:
        return None
    name = parts[-2]
    return None if name.lower() in {u.lower() for u in unlabeled} else name


def looks_unlabeled(label: str, unlabeled: tuple[str, ...] | list[str] = UNLABELED_FOLDERS) -> bool:
    """A label class whose name starts like an unlabeled folder's (`unlabeled2`, `unknown_old`):
    probably meant to carry no label."""
    name = label.lower()
    return any(name.startswith(u.lower()) for u in unlabeled)


@dataclass(frozen=True)
class Rejected:
    line: int
    reason: str


@dataclass
class ImportResult:
    inserted: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Row:
    line: int
    ref: str
    label: str
    by_id: bool


def _read_utf8(csv_path: Path) -> str:
    """The file's text (a leading BOM dropped); ValueError naming the first line not UTF-8."""
    data = csv_path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{csv_path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}; the file "
            'looks like Latin-1/Windows-1252); save it as UTF-8 CSV ("CSV UTF-8" in Excel)'
        ) from exc


def _seems_delimited_by(records: list[list[str]]) -> str | None:
    """The other delimiter (see OTHER_DELIMITERS) the file seems to use: the one found in most
    of its first rows that hold a single cell (with commas, every row would have two)."""
    single = [r[0] for r in records[:50] if len(r) == 1 and r[0].strip()]
    counts = {d: sum(d in cell for cell in single) for d in OTHER_DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def read_label_rows(csv_path: Path) -> tuple[list[_Row], list[Rejected], list[str]]:
    """Parse `csv_path`: a header naming `label` and one of path/image_id/image/id, or two
    columns without a header (image path or id, label). Extra columns are ignored with a
    warning (the third item returned)."""
    text = _read_utf8(csv_path)
    records = list(csv.reader(text.splitlines()))
    rows: list[_Row] = []
    rejected: list[Rejected] = []
    warnings: list[str] = []
    if not records:
        return rows, rejected, warnings
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
        extra = [
            records[0][i].strip() or f"#{i + 1}"
            for i in range(len(header))
            if i not in (image_col, label_col)
        ]
        if extra:
            warnings.append(
                f"ignored column(s) {', '.join(extra)}: only {records[0][image_col].strip()} "
                "and label are imported"
            )
    else:
        widest = max(len(r) for r in records)
        if widest > 2:
            warnings.append(
                f"ignored column(s) 3-{widest}: without a header only the first two "
                "(image path or id, label) are imported"
            )
    other = _seems_delimited_by(records[start:] or records)
    for offset, record in enumerate(records[start:]):
        line = start + offset + 1
        if not record or all(not cell.strip() for cell in record):
            continue  # blank lines are not rows
        if len(record) <= max(image_col, label_col):
            reason = f"malformed row: expected an image and a label, got {record}"
            if other is not None and len(record) == 1 and other in record[0]:
                reason = (
                    f"malformed row: expected a comma (,) between image and label, but the file "
                    f"seems to use {OTHER_DELIMITERS[other]} as delimiter; save it as "
                    f"comma-separated CSV (got {record})"
                )
            rejected.append(Rejected(line, reason))
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
    return rows, rejected, warnings


def printable(text: str) -> str:
    """`text` safe to print or store as UTF-8: a file name's undecodable bytes (which arrive as
    surrogate escapes) become `\\xff`, the way the catalog spells such paths."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _raw_path(path: str) -> bytes | None:
    """The bytes of a path that is not valid UTF-8 (the catalog's `path_bytes`), else None."""
    try:
        path.encode("utf-8")
        return None
    except UnicodeEncodeError:
        try:
            return os.fsencode(path)
        except UnicodeError:
            return None


def _resolve_path(ref: str, base: Path) -> str:
    if object_store.is_url(ref):
        return ref  # an object in storage: the catalog keys it by its full URL
    p = Path(ref).expanduser()
    if p.is_absolute():
        return str(p.resolve())
    for root in (Path.cwd(), base):
        if (root / p).exists():
            return str((root / p).resolve())
    return str((base / p).resolve())


def write_labels(
    db_path: Path,
    rows: list[_Row],
    source: str,
    base: Path,
    timeout_s: float | None = None,
) -> ImportResult:
    """Look every row's image up, reject unknown or removed ones, insert the rest atomically.

    A path that is not valid UTF-8 (surrogate escapes, as Python decodes such a command-line
    argument) is looked up by its bytes in `images.path_bytes`, the others by `images.path`."""
    import pyarrow as pa

    result = ImportResult()
    if not rows:
        return result
    paths = [None if r.by_id else _resolve_path(r.ref, base) for r in rows]
    raw = [None if p is None else _raw_path(p) for p in paths]
    refs = pa.table(
        {
            "line": pa.array([r.line for r in rows], pa.int64()),
            "path": pa.array([None if p is None else printable(p) for p in paths], pa.string()),
            "path_bytes": pa.array(raw, pa.binary()),
            "id": pa.array([int(r.ref) if r.by_id else None for r in rows], pa.int64()),
            "label": pa.array([printable(r.label) for r in rows], pa.string()),
        }
    )
    with connect(db_path, timeout_s=timeout_s) as con:
        con.begin()  # also completes the schema check's result, which register() requires
        con.register("refs", refs)
        matched = con.execute(
            f"""
            SELECT r.line, r.label, coalesce(r.path, CAST(r.id AS VARCHAR)) AS ref,
                   i.image_id, i.removed_at IS NOT NULL AS removed, i.status, i.error
            FROM refs r
            LEFT JOIN {tables.IMAGES} i ON (r.id IS NOT NULL AND i.image_id = r.id)
                               OR (r.path_bytes IS NOT NULL AND i.path_bytes = r.path_bytes)
                               OR (r.path_bytes IS NULL AND r.path IS NOT NULL
                                   AND i.path = r.path AND i.path_bytes IS NULL)
            ORDER BY r.line
            """
        ).fetchall()
        good: list[tuple[int, str]] = []
        for line, label, ref, image_id, removed, status, error in matched:
            if image_id is None:
                result.rejected.append(Rejected(line, f"unknown image {ref}: not in the catalog"))
            elif removed:
                result.rejected.append(Rejected(line, f"image {ref} was removed from its folder"))
            elif status != "ok":
                result.rejected.append(
                    Rejected(line, f"image {ref} is {status} and cannot be used ({error})")
                )
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
                f"INSERT INTO {tables.LABELS} (image_id, label, source) "
                "SELECT image_id, label, ? FROM batch",
                [source],
            )
        con.commit()
        result.inserted = len(good)
    return result


def current_labels(db_path: Path, image_ids: np.ndarray) -> dict[int, str]:
    """image id -> current label, for those of `image_ids` that have one."""
    with connect(db_path, read_only=True) as con:
        rows = con.execute(
            f"SELECT image_id, label FROM {tables.CURRENT_LABELS} WHERE image_id IN "
            "(SELECT unnest(?::BIGINT[]))",
            [np.asarray(image_ids, dtype=np.int64).tolist()],
        ).fetchall()
    return {int(i): lab for i, lab in rows}


def import_csv(db_path: Path, csv_path: Path, timeout_s: float | None = None) -> ImportResult:
    """Import `csv_path` into the labels log with source `csv:<file name>`."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path} not found; pass a CSV of image path (or id), label")
    rows, rejected, warnings = read_label_rows(csv_path)
    result = write_labels(db_path, rows, f"csv:{csv_path.name}", csv_path.parent, timeout_s)
    result.rejected = sorted(rejected + result.rejected, key=lambda r: r.line)
    result.warnings = warnings
    return result


def set_label(db_path: Path, image: str, label: str, source: str = "cli") -> ImportResult:
    """Label one image, given by path or id."""
    ref, label = image.strip(), label.strip()
    if not label:
        return ImportResult(rejected=[Rejected(1, f"empty label for {printable(ref)}")])
    row = _Row(1, ref, label, ref.isdigit())
    return write_labels(db_path, [row], source, Path.cwd())
