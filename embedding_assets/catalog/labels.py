"""Labels: the label a folder layout implies, and writing labels into the append-only log, from
a CSV file, one at a time or from the web pages.

Every row is validated before anything is written; the valid rows then land in one
transaction, so an import is never half-written, and each rejected row is reported with its
line number and the reason. The label rules (`clean_label`) are the same for every path:
`emb label set`, `emb label import` and the pages of `emb serve`.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import random
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np

from embedding_assets.catalog import object_store
from embedding_assets.common import tables
from resources.duckdb_store import CatalogLockedError, connect, default_lock_timeout_s

UNLABELED_FOLDERS = ("unlabeled", "_unlabeled", "unknown")
IMAGE_COLUMNS = ("path", "image_id", "image", "id")
# Delimiters a spreadsheet may export in place of the comma, with the name said back to the user.
OTHER_DELIMITERS = {";": "semicolon (;)", "\t": "tab", "|": "pipe (|)"}
MAX_LABEL_CHARS = 200
# Image ids are the catalog's BIGINT: an id outside it names no image (and cannot be bound).
IMAGE_ID_MIN, IMAGE_ID_MAX = -(2**63), 2**63 - 1
# Refused anywhere in a label: C0/C1 controls and DEL (Cc) and the line/paragraph separators,
# which break a label over lines in a table, a CSV or a terminal.
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Zl": "a control character (line break)",
    "Zp": "a control character (line break)",
    # Invisible or unprintable: "cat" and "\ufeffcat" would be two classes that look alike,
    # and U+202E turns the text around in a terminal or a page.
    "Cf": "an invisible format character",
    "Co": "a private-use character",
    "Cn": "an unassigned character",
}
# Letters and symbols that print as blank space (Hangul fillers, the blank Braille pattern, a
# combining grapheme joiner): a label made of or padded with them looks like another.
_INVISIBLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0}
# DuckDB refuses a connection whose read_only differs from one open in the same process (a
# server's background index reload reads the catalog); such a clash lasts milliseconds.
SAME_PROCESS_CLASH = "different configuration"
# Label writers take turns, threads and processes alike (see _writer_turn).
_THREAD_LOCK = threading.Lock()
LOCK_SUFFIX = ".labels.lock"


class LabelError(ValueError):
    """A label (or a label's source) breaks a rule; the message names the rule."""


def clean_label(text: str, subject: str = "label") -> str:
    """The label as it is stored: Unicode-normalized (NFC), surrounding whitespace trimmed, any
    other space (no-break, ideographic...) a plain one.

    LabelError, naming the rule, when it is empty, is not valid UTF-8 text (a lone surrogate),
    holds a control character (C0/C1 controls, DEL, line or paragraph separators), an invisible
    one (format characters such as U+200B or U+202E, fillers that print as blank), a private-use
    or unassigned code point, or is longer than MAX_LABEL_CHARS characters. The message never
    repeats the label itself (it may be huge or hold characters a terminal acts on); `subject`
    says what it is ("label for x.png").
    """
    if not isinstance(text, str):
        raise LabelError(f"{subject} must be text, not {type(text).__name__}")
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            raise LabelError(
                f"{subject} is not valid UTF-8 text (a lone surrogate U+{ord(ch):04X} at "
                f"position {i + 1}); save or type it as UTF-8"
            )
    label = unicodedata.normalize("NFC", text).strip()
    label = "".join(" " if unicodedata.category(ch) == "Zs" else ch for ch in label)
    if not label:
        raise LabelError(f"empty {subject}")
    for i, ch in enumerate(label):
        what = _REFUSED_CATEGORIES.get(unicodedata.category(ch))
        if what is None and ord(ch) in _INVISIBLE:
            what = "an invisible character"
        if what is not None:
            raise LabelError(
                f"{subject} has {what} (U+{ord(ch):04X}) at position {i + 1}; a label is one "
                "line of printable text"
            )
    if len(label) > MAX_LABEL_CHARS:
        raise LabelError(
            f"{subject} is {len(label)} characters, over the limit of {MAX_LABEL_CHARS}"
        )
    return label


def _is_id(ref: str) -> bool:
    """An image id as typed: ASCII digits only (`str.isdigit` also takes `²` and `١`)."""
    return ref.isascii() and ref.isdigit()


def _id_in_range(ref: str) -> bool:
    return IMAGE_ID_MIN <= int(ref) <= IMAGE_ID_MAX


def folder_label(
    path: str, root: str | Path, unlabeled: tuple[str, ...] | list[str] = UNLABELED_FOLDERS
) -> str | None:
    """The label a folder layout implies: the image's parent folder name below `root` (a folder
    or an object-storage URL), none for folders named (case-insensitively) one of `unlabeled`
    and for names that break the label rules (`clean_label`)."""
    if object_store.is_url(path):
        parts = object_store.relative_parts(path, root)
    else:
        parts = Path(path).relative_to(Path(root).resolve()).parts
    if len(parts) < 2:
        return None
    name = parts[-2]
    if name.lower() in {u.lower() for u in unlabeled}:
        return None
    try:
        return clean_label(name)  # the same rules as every other label
    except LabelError:
        return None  # a folder name no label may carry (control characters): no folder label


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
    if _looks_utf16(data):
        raise ValueError(
            f"{csv_path}: is UTF-16 (or UTF-32) text, not UTF-8; save it as UTF-8 CSV "
            '("CSV UTF-8" in Excel; not "Unicode Text")'
        )
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"{csv_path}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}; the file "
            'looks like Latin-1/Windows-1252); save it as UTF-8 CSV ("CSV UTF-8" in Excel)'
        ) from exc


def _looks_utf16(data: bytes) -> bool:
    """A UTF-16 byte-order mark, or NUL in most odd or most even bytes (ASCII text in UTF-16
    without a mark); a NUL here and there is a bad row, not an encoding."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return True
    sample = data[:4096]
    half = len(sample) // 2
    return half >= 4 and max(sample[0::2].count(0), sample[1::2].count(0)) > 0.4 * half


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
    # Read as a stream: only \r and \n end a record (str.splitlines also breaks at \x1c, \x85,
    # U+2028..., which cut a label in two), a quoted newline stays in its field, and each record
    # keeps the line it starts on.
    # A field may be as long as the file (csv's own limit, 131,072 characters, would stop the
    # whole import at an over-long label instead of rejecting its row).
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[list[str]] = []
    first_lines: list[int] = []
    spans: dict[int, int] = {}  # record index -> its last line, for records over several lines
    next_line = 1
    limit = csv.field_size_limit(max(len(text) + 1, csv.field_size_limit()))
    try:
        for record in reader:
            if any("\n" in c or "\r" in c for c in record):  # a quoted line break
                spans[len(records)] = reader.line_num
            records.append(record)
            first_lines.append(next_line)
            next_line = reader.line_num + 1
    finally:
        csv.field_size_limit(limit)
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
        line = first_lines[start + offset]
        if not record or all(not cell.strip() for cell in record):
            continue  # blank lines are not rows
        if start + offset in spans:  # a quote left open reads the next lines into one field
            last = spans[start + offset]
            reason = (
                f'a quote (") opened on line {line} closes only on line {last} (or never), so '
                f"lines {line}-{last} were read as one row; close the quote on its line"
            )
            rejected.append(Rejected(line, reason))
            continue
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
        ref, label = record[image_col].strip(), record[label_col]
        if not ref:
            rejected.append(Rejected(line, "empty image path/id"))
            continue
        by_id = forced_id if forced_id is not None else _is_id(ref)
        if by_id and not _is_id(ref):
            rejected.append(Rejected(line, f"image_id {_short(ref)!r} is not an integer"))
            continue
        rows.append(_Row(line, ref, label, bool(by_id)))  # the label rules: in write_labels
    return rows, rejected, warnings


def _short(text: str, limit: int = 120) -> str:
    """`text` cut for a message (a hostile row may hold a megabyte in one cell)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


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


def _check_rows(rows: list[_Row]) -> tuple[list[_Row], list[Rejected]]:
    """The label rules (clean_label) and id bounds on every row: the valid rows with their label
    as stored, and the rejected ones."""
    good: list[_Row] = []
    rejected: list[Rejected] = []
    for r in rows:
        ref = _short(printable(r.ref))
        if r.by_id and not _id_in_range(r.ref):
            rejected.append(
                Rejected(r.line, f"image_id {ref} is out of range (ids are 64-bit integers)")
            )
            continue
        try:
            label = clean_label(r.label, f"label for {ref}")
        except LabelError as exc:
            rejected.append(Rejected(r.line, str(exc)))
            continue
        good.append(_Row(r.line, r.ref, label, r.by_id))
    return good, rejected


@contextmanager
def _writer_turn(db_path: Path, timeout_s: float) -> Iterator[float]:
    """One label write at a time, across threads and processes (the workers of `emb serve`,
    `emb label`), in turns that fall fairly: an flock on `<catalog>.labels.lock` that every
    writer polls every few milliseconds. Two reasons:

    - DuckDB's Arrow scan of a registered table is not safe against another connection of the
      same process registering at that moment (`python_arrow_scan does not exist`: a 503 for
      a label answer that was fine);
    - a process whose writers hand the catalog to each other at once starves another process's
      writer, which retries the DuckDB lock with a backoff of up to a second (a 503 after the
      web's 10 s wait).

    A data folder where the lock file cannot be made falls back to turns within the process.
    Yields the deadline (`timeout_s` from now) for the rest of the write; past it while waiting:
    CatalogLockedError."""
    lock_file = Path(f"{db_path}{LOCK_SUFFIX}")
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        fd = None
    deadline = time.monotonic() + timeout_s
    try:
        if fd is None:
            if not _THREAD_LOCK.acquire(timeout=timeout_s):
                raise CatalogLockedError(
                    Path(db_path), timeout_s, RuntimeError("another label write in this process")
                )
            try:
                yield deadline
            finally:
                _THREAD_LOCK.release()
            return
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise CatalogLockedError(
                        Path(db_path),
                        timeout_s,
                        RuntimeError(f"another label write holds {lock_file}"),
                    ) from None
                time.sleep(0.002 + 0.004 * random.random())
        try:
            yield deadline
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        if fd is not None:
            os.close(fd)


@contextmanager
def _connect_soon(db_path: Path, timeout_s: float, deadline: float) -> Iterator:
    """A writable connection, retried every few milliseconds until `deadline` while another
    process holds the catalog (connect's own backoff grows to a second: in the middle of a
    writer's turn that would hold every other writer up), or while a read-only connection of
    this process is open."""
    stack = ExitStack()
    while True:
        try:
            con = stack.enter_context(connect(db_path, timeout_s=0))
            break
        except CatalogLockedError as exc:
            if time.monotonic() >= deadline:
                raise CatalogLockedError(Path(db_path), timeout_s, exc.__cause__) from exc
        except duckdb.ConnectionException as exc:
            # a read-only connection open in this same process (the server's index reload):
            # DuckDB refuses another configuration for the milliseconds it is open
            if SAME_PROCESS_CLASH not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(max(0.0, min(deadline - time.monotonic(), 0.005 + 0.015 * random.random())))
    with stack:
        yield con


class LabelWriteError(RuntimeError):
    """The catalog's answer did not account for every row: nothing was written (rolled back)."""


def write_labels(
    db_path: Path,
    rows: list[_Row],
    source: str,
    base: Path,
    timeout_s: float | None = None,
) -> ImportResult:
    """Validate every row (the label rules, id bounds), look every image up, reject unknown,
    removed or unusable ones, insert the rest atomically.

    A path that is not valid UTF-8 (surrogate escapes, as Python decodes such a command-line
    argument) is looked up by its bytes in `images.path_bytes`, the others by `images.path`.
    Every row ends up either inserted or rejected with its reason: a lookup that misses a row,
    or an insert that adds another number of rows, rolls the transaction back (LabelWriteError).
    """
    import pyarrow as pa

    result = ImportResult()
    rows, result.rejected = _check_rows(rows)
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
        }
    )
    by_line = {r.line: r for r in rows}
    if timeout_s is None:
        timeout_s = default_lock_timeout_s()
    with (
        _writer_turn(db_path, timeout_s) as deadline,
        _connect_soon(db_path, timeout_s, deadline) as con,
    ):
        con.begin()  # also completes the schema check's result, which register() requires
        con.register("refs", refs)
        # three equi-joins (by id, by raw bytes, by path), not one join on an OR: DuckDB
        # runs an OR join as a nested loop, rows x images comparisons
        matched = con.execute(
            f"""
            WITH hits AS (
                SELECT r.line, i.image_id FROM refs r
                JOIN {tables.IMAGES} i ON i.image_id = r.id
                UNION ALL
                SELECT r.line, i.image_id FROM refs r
                JOIN {tables.IMAGES} i ON i.path_bytes = r.path_bytes
                UNION ALL
                SELECT r.line, i.image_id FROM refs r
                JOIN {tables.IMAGES} i ON i.path = r.path
                WHERE r.path_bytes IS NULL AND i.path_bytes IS NULL
            )
            SELECT r.line, coalesce(r.path, CAST(r.id AS VARCHAR)) AS ref,
                   i.image_id, i.removed_at IS NOT NULL AS removed, i.status, i.error
            FROM refs r
            LEFT JOIN (SELECT line, min(image_id) AS image_id FROM hits GROUP BY line) h
                USING (line)
            LEFT JOIN {tables.IMAGES} i ON i.image_id = h.image_id
            ORDER BY r.line
            """
        ).fetchall()
        if sorted(m[0] for m in matched) != sorted(by_line):
            raise LabelWriteError(
                f"the catalog's lookup answered {len(matched)} row(s) for {len(rows)}; "
                "nothing was written, try again"
            )
        good: list[tuple[int, str]] = []
        for line, ref, image_id, removed, status, error in matched:
            if image_id is None:
                result.rejected.append(Rejected(line, f"unknown image {ref}: not in the catalog"))
            elif removed:
                result.rejected.append(Rejected(line, f"image {ref} was removed from its folder"))
            elif status != "ok":
                result.rejected.append(
                    Rejected(line, f"image {ref} is {status} and cannot be used ({error})")
                )
            else:
                good.append((image_id, by_line[line].label))
        if good:
            batch = pa.table(
                {
                    "image_id": pa.array([g[0] for g in good], pa.int64()),
                    "label": pa.array([g[1] for g in good], pa.string()),
                }
            )
            con.register("batch", batch)
            (added,) = con.execute(
                f"INSERT INTO {tables.LABELS} (image_id, label, source) "
                "SELECT image_id, label, ? FROM batch",
                [source],
            ).fetchall()[0]
            if added != len(good):
                raise LabelWriteError(
                    f"the catalog added {added} row(s) for {len(good)}; nothing was "
                    "written, try again"
                )
        con.commit()
    result.inserted = len(good)
    result.rejected.sort(key=lambda r: r.line)
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
    """Label one image, given by path or id (the label rules of clean_label, for the source
    too)."""
    ref = image.strip()
    try:
        source = clean_label(source, "source")
    except LabelError as exc:
        return ImportResult(rejected=[Rejected(1, str(exc))])
    return write_labels(db_path, [_Row(1, ref, label, _is_id(ref))], source, Path.cwd())
