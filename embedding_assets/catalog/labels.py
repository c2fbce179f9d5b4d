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
import itertools
import os
import random
import threading
import time
import unicodedata
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np

from embedding_assets.catalog import object_store
from embedding_assets.common import tables
from resources.duckdb_store import CatalogLockedError, connect, default_lock_timeout_s

if TYPE_CHECKING:
    import pyarrow as pa

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
# Rows parsed, checked and resolved at a time: an import holds a few such chunks as Python
# objects, and its rows otherwise as columns (bounded memory for a file of millions of rows).
CHUNK_ROWS = 16_384
LARGE_IMPORT_MEMORY = "128MB"  # DuckDB's memory for the lookups of an import over CHUNK_ROWS


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


def unlabeled_warning(classes: list[str], unlabeled: list[str]) -> str | None:
    """One line for label classes that look like unlabeled folders but are not named exactly
    like one (their images get the folder name as a label), or None."""
    suspicious = [c for c in classes if looks_unlabeled(c, unlabeled)]
    if not suspicious:
        return None
    return (
        f"Label class(es) {', '.join(suspicious)} look like unlabeled folders but are not "
        f"named exactly one of {', '.join(unlabeled)}: their images are labeled with the "
        "folder name; rename the folder or add it to unlabeled_folders in the image_catalog "
        "config"
    )


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


def _check_encoding(csv_path: Path) -> None:
    """ValueError for a file that is not UTF-8: UTF-16 said as such (its first bytes tell),
    anything else with the line of its first byte that is not UTF-8."""
    with csv_path.open("rb") as fh:
        head = fh.read(4096)
    if _looks_utf16(head):
        raise ValueError(
            f"{csv_path}: is UTF-16 (or UTF-32) text, not UTF-8; save it as UTF-8 CSV "
            '("CSV UTF-8" in Excel; not "Unicode Text")'
        )


def _not_utf8(csv_path: Path) -> ValueError:
    """The error for a file that is not UTF-8, naming the line of its first bad byte (read
    again in blocks: only on this path)."""
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with csv_path.open("rb") as fh:
        while block := fh.read(1 << 20):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                line += block[: exc.start].count(b"\n")
                byte = block[exc.start]
                return ValueError(
                    f"{csv_path}: line {line} is not UTF-8 text (byte 0x{byte:02x}; the file "
                    'looks like Latin-1/Windows-1252); save it as UTF-8 CSV ("CSV UTF-8" in Excel)'
                )
            line += block.count(b"\n")
    return ValueError(f"{csv_path}: ends inside a UTF-8 character; save it as UTF-8 CSV")


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


@dataclass
class LabelRows:
    """The valid rows of a label file, ready for the catalog's lookups (see _lookup_rows), as
    columns: a few bytes per row rather than Python objects, so a file of millions of rows is
    read in bounded memory; with the rows refused while reading, and the warnings."""

    table: pa.Table
    rejected: list[Rejected]
    warnings: list[str]


def _lookup_rows(rows: list[_Row], base: Path, rejected: list[Rejected]) -> pa.Table:
    """The label rules (clean_label) and id bounds on each row, the refused ones into
    `rejected`; the others as the catalog's lookups want them: line, label as stored, and an
    id, or a path resolved against `base` (with its raw bytes when it is not valid UTF-8)."""
    import pyarrow as pa

    lines, labels, ids, paths, raws = [], [], [], [], []
    for r in rows:
        if r.by_id and not _id_in_range(r.ref):
            why = f"image_id {_short(printable(r.ref))} is out of range (ids are 64-bit integers)"
            rejected.append(Rejected(r.line, why))
            continue
        try:
            label = clean_label(r.label)
        except LabelError:
            try:  # again, for the message that names the image
                clean_label(r.label, f"label for {_short(printable(r.ref))}")
            except LabelError as exc:
                rejected.append(Rejected(r.line, str(exc)))
            continue
        path = None if r.by_id else _resolve_path(r.ref, base)
        lines.append(r.line)
        labels.append(label)
        ids.append(int(r.ref) if r.by_id else None)
        paths.append(None if path is None else printable(path))
        raws.append(None if path is None else _raw_path(path))
    return pa.table(
        {
            "line": pa.array(lines, pa.int64()),
            "label": pa.array(labels, pa.string()),
            "id": pa.array(ids, pa.int64()),
            "path": pa.array(paths, pa.string()),
            "path_bytes": pa.array(raws, pa.binary()),
        }
    )


def read_label_rows(csv_path: Path) -> LabelRows:
    """Parse and check `csv_path`, streaming, CHUNK_ROWS rows at a time: a header naming
    `label` and one of path/image_id/image/id, or two columns without a header (image path or
    id, label). Extra columns are ignored with a warning; paths are relative to the file's
    folder (or the working directory)."""
    import pyarrow as pa

    _check_encoding(csv_path)
    out = LabelRows(_lookup_rows([], csv_path.parent, []), [], [])
    chunks: list[pa.Table] = []
    limit = csv.field_size_limit(max(csv_path.stat().st_size + 1, csv.field_size_limit()))
    try:
        with csv_path.open(encoding="utf-8-sig", newline="") as fh:
            # only \r and \n end a record (str.splitlines also breaks at \x1c, \x85,
            # U+2028...), a quoted newline stays in its field, each record keeps its first line
            reader = csv.reader(fh)
            numbered = _numbered(reader)
            peek = list(itertools.islice(numbered, 50))
            if not peek:
                return out
            layout = _layout(csv_path, [r for _, _, r in peek], out.warnings)
            pending: list[_Row] = []
            widest = 0
            for line, last, record in itertools.chain(peek[layout.start :], numbered):
                widest = max(widest, len(record))
                row = _parse_row(line, last, record, layout, out.rejected)
                if row is not None:
                    pending.append(row)
                if len(pending) >= CHUNK_ROWS:
                    chunks.append(_lookup_rows(pending, csv_path.parent, out.rejected))
                    pending = []
            chunks.append(_lookup_rows(pending, csv_path.parent, out.rejected))
    except UnicodeDecodeError:
        raise _not_utf8(csv_path) from None
    finally:
        csv.field_size_limit(limit)
    if not layout.header and max(widest, 0) > 2:
        out.warnings.append(
            f"ignored column(s) 3-{widest}: without a header only the first two "
            "(image path or id, label) are imported"
        )
    out.table = pa.concat_tables(chunks)
    return out


def _numbered(reader) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, record) of each record."""
    next_line = 1
    for record in reader:
        yield next_line, reader.line_num, record
        next_line = reader.line_num + 1


@dataclass(frozen=True)
class _Layout:
    """Where the image and the label are in a file's records."""

    image_col: int
    label_col: int
    forced_id: bool | None  # the header says ids (image_id, id); None: decided per row
    start: int  # records before the first row (the header)
    header: bool
    other_delimiter: str | None  # a delimiter the file seems to use instead of commas


def _layout(csv_path: Path, first: list[list[str]], warnings: list[str]) -> _Layout:
    header = [h.strip().lower() for h in first[0]]
    if "label" not in header:
        return _Layout(0, 1, None, 0, False, _seems_delimited_by(first))
    label_col = header.index("label")
    found = [c for c in IMAGE_COLUMNS if c in header]
    if not found:
        raise ValueError(
            f"{csv_path}: the header {first[0]} has `label` but no image column; "
            f"name it one of {', '.join(IMAGE_COLUMNS)}"
        )
    image_col = header.index(found[0])
    extra = [
        first[0][i].strip() or f"#{i + 1}"
        for i in range(len(header))
        if i not in (image_col, label_col)
    ]
    if extra:
        warnings.append(
            f"ignored column(s) {', '.join(extra)}: only {first[0][image_col].strip()} "
            "and label are imported"
        )
    forced = found[0] in ("image_id", "id") or None
    return _Layout(image_col, label_col, forced, 1, True, _seems_delimited_by(first[1:] or first))


def _parse_row(
    line: int, last: int, record: list[str], layout: _Layout, rejected: list[Rejected]
) -> _Row | None:
    """The row of one record, or None (a blank line, or refused: its reason in `rejected`)."""
    if not record or all(not cell.strip() for cell in record):
        return None  # blank lines are not rows
    if any("\n" in c or "\r" in c for c in record):  # a quote left open
        reason = (
            f'a quote (") opened on line {line} closes only on line {last} (or never), so '
            f"lines {line}-{last} were read as one row; close the quote on its line"
        )
        rejected.append(Rejected(line, reason))
        return None
    if len(record) <= max(layout.image_col, layout.label_col):
        reason = f"malformed row: expected an image and a label, got {_short(str(record))}"
        other = layout.other_delimiter
        if other is not None and len(record) == 1 and other in record[0]:
            reason = (
                f"malformed row: expected a comma (,) between image and label, but the file "
                f"seems to use {OTHER_DELIMITERS[other]} as delimiter; save it as "
                f"comma-separated CSV (got {_short(str(record))})"
            )
        rejected.append(Rejected(line, reason))
        return None
    ref, label = record[layout.image_col].strip(), record[layout.label_col]
    if not ref:
        rejected.append(Rejected(line, "empty image path/id"))
        return None
    by_id = layout.forced_id if layout.forced_id is not None else _is_id(ref)
    if by_id and not _is_id(ref):
        rejected.append(Rejected(line, f"image_id {_short(ref)!r} is not an integer"))
        return None
    return _Row(line, ref, label, bool(by_id))  # the label rules: in write_labels


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


# Each row of `refs` (see _lookup_rows) with the image it names, if any: three equi-joins
# (by id, by raw bytes, by path), not one join on an OR, which DuckDB runs as a nested loop.
MATCH_SQL = f"""
    WITH hits AS (
        SELECT r.line, i.image_id FROM refs r JOIN {tables.IMAGES} i ON i.image_id = r.id
        UNION ALL
        SELECT r.line, i.image_id FROM refs r JOIN {tables.IMAGES} i ON i.path_bytes = r.path_bytes
        UNION ALL
        SELECT r.line, i.image_id FROM refs r JOIN {tables.IMAGES} i ON i.path = r.path
        WHERE r.path_bytes IS NULL AND i.path_bytes IS NULL
    )
    SELECT r.line, i.image_id, i.removed_at IS NOT NULL AS removed, i.status, i.error,
           i.image_id IS NOT NULL AND i.removed_at IS NULL AND i.status = 'ok' AS usable
    FROM refs r
    LEFT JOIN (SELECT line, min(image_id) AS image_id FROM hits GROUP BY line) h USING (line)
    LEFT JOIN {tables.IMAGES} i ON i.image_id = h.image_id"""


def _memory_limit(con: duckdb.DuckDBPyConnection, limit: str) -> None:
    """Set DuckDB's memory limit back (the instance may be shared in this process); after a
    failed write the connection may refuse, and it closes next anyway."""
    with suppress(duckdb.Error):
        con.execute(f"SET memory_limit = '{limit}'")


def write_labels(
    db_path: Path,
    rows: pa.Table | list[_Row],
    source: str,
    base: Path,
    timeout_s: float | None = None,
) -> ImportResult:
    """Validate every row (the label rules, id bounds), look every image up, reject unknown,
    removed or unusable ones, insert the rest atomically. `rows`: a few _Row (checked here,
    paths relative to `base`), or the table of a LabelRows (checked while read).

    A path that is not valid UTF-8 (surrogate escapes, as Python decodes such a command-line
    argument) is looked up by its bytes in `images.path_bytes`, the others by `images.path`.
    Every row ends up either inserted or rejected with its reason: a lookup that misses a row,
    or an insert that adds another number of rows, rolls the transaction back (LabelWriteError).
    The rows stay columns throughout (Arrow, then DuckDB): millions of rows cost megabytes, and
    only the rejected ones come back to Python.
    """
    import pyarrow as pa

    result = ImportResult()
    refs = rows if isinstance(rows, pa.Table) else _lookup_rows(rows, base, result.rejected)
    if refs.num_rows == 0:
        return result
    if timeout_s is None:
        timeout_s = default_lock_timeout_s()
    with (
        _writer_turn(db_path, timeout_s) as deadline,
        _connect_soon(db_path, timeout_s, deadline) as con,
        ExitStack() as stack,
    ):
        con.begin()  # also completes the schema check's result, which register() requires
        con.register("refs", refs)
        if refs.num_rows > CHUNK_ROWS:  # a large file: DuckDB's joins spill rather than grow
            (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchall()[0]
            stack.callback(_memory_limit, con, limit)
            con.execute(f"SET memory_limit = '{LARGE_IMPORT_MEMORY}'")
        con.execute(f"CREATE TEMP TABLE matched AS {MATCH_SQL}")
        (n_matched, n_usable) = con.execute(
            "SELECT count(*), count(*) FILTER (usable) FROM matched"
        ).fetchall()[0]
        if n_matched != refs.num_rows:
            raise LabelWriteError(
                f"the catalog's lookup answered {n_matched} row(s) for {refs.num_rows}; "
                "nothing was written, try again"
            )
        refused = con.execute(
            "SELECT m.line, coalesce(r.path, CAST(r.id AS VARCHAR)), m.image_id, m.removed, "
            "m.status, m.error FROM matched m JOIN refs r USING (line) WHERE NOT m.usable"
        ).fetchall()
        for line, ref, image_id, removed, status, error in refused:
            if image_id is None:
                result.rejected.append(Rejected(line, f"unknown image {ref}: not in the catalog"))
            elif removed:
                result.rejected.append(Rejected(line, f"image {ref} was removed from its folder"))
            else:
                result.rejected.append(
                    Rejected(line, f"image {ref} is {status} and cannot be used ({error})")
                )
        if n_usable:
            (added,) = con.execute(
                f"INSERT INTO {tables.LABELS} (image_id, label, source) "
                "SELECT m.image_id, r.label, ? FROM matched m JOIN refs r USING (line) "
                "WHERE m.usable ORDER BY m.line",
                [source],
            ).fetchall()[0]
            if added != n_usable:
                raise LabelWriteError(
                    f"the catalog added {added} row(s) for {n_usable}; nothing was "
                    "written, try again"
                )
        con.execute("DROP TABLE matched")
        con.unregister("refs")
        con.commit()
    result.inserted = int(n_usable)
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
    parsed = read_label_rows(csv_path)
    result = write_labels(db_path, parsed.table, f"csv:{csv_path.name}", csv_path.parent, timeout_s)
    result.rejected = sorted(parsed.rejected + result.rejected, key=lambda r: r.line)
    result.warnings = parsed.warnings
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


@dataclass(frozen=True)
class LabeledSplit:
    """Every usable image with a current label, in image_id order, with the key that decides
    whether it is held out: a number in [0, 1) from its content hash, so an image that is
    evaluation data stays so as labels grow, and the fine-tune and the classifier hold out the
    same images."""

    ids: np.ndarray  # int64
    fs_paths: list[str | bytes]
    hashes: list[str]
    labels: np.ndarray  # str
    keys: np.ndarray  # float in [0, 1)
    max_label_id: int | None  # the newest label: any new label changes it


def labeled_content(db: Path) -> str:
    """A version of the labeled images: their ids, content hashes and labels (what a result
    computed from the labeled images alone depends on)."""
    import hashlib
    import json

    found = labeled_split(db)
    blob = json.dumps([found.ids.tolist(), found.hashes, found.labels.tolist()])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def labeled_split(db: Path) -> LabeledSplit:
    """The labeled usable images (one function for every model that holds some out)."""
    from embedding_assets.catalog.images import fs_path
    from embedding_assets.common.fingerprints import hash_fraction

    with connect(db, read_only=True) as con:
        rows = con.execute(
            f"SELECT i.image_id, {tables.PATH_BYTES}, i.sha256, l.label "
            f"FROM {tables.USABLE_IMAGES} i JOIN {tables.CURRENT_LABELS} l USING (image_id) "
            "WHERE l.label IS NOT NULL ORDER BY i.image_id"
        ).fetchall()
        newest = con.execute(f"SELECT max(label_id) FROM {tables.LABELS}").fetchone()[0]
    hashes = [r[2] for r in rows]
    return LabeledSplit(
        np.asarray([r[0] for r in rows], dtype=np.int64),
        [fs_path(r[1]) for r in rows],
        hashes,
        np.array([str(r[3]) for r in rows], dtype=str),
        np.array([hash_fraction(h) for h in hashes], dtype=float),
        newest,
    )
