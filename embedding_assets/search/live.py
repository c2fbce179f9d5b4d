"""The index a server answers from, kept current by a background thread: a newly published
version is loaded beside the old one and swapped in (requests in flight finish on the version
they started with), and labels and clusters are re-read from the catalog when they change.
Only this thread ever opens DuckDB, with a short lock timeout; when a run holds the writer it
tries again on the next tick and requests go on being answered from memory."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from embedding_assets.search import snapshot
from embedding_assets.search.searcher import Searcher
from resources.paths import DataPaths

log = logging.getLogger(__name__)
CATALOG_TIMEOUT_S = 0.5  # a background read gives up this fast while a run holds the writer


class LiveIndex:
    """`current()` is the Searcher to use for one request; `poll()` is one background tick."""

    def __init__(
        self,
        db_path: Path,
        model_key: str | None = None,
        *,
        reload_seconds: float = 1.0,
        rows_seconds: float = 10.0,
    ) -> None:
        self.db_path = Path(db_path)
        self.model_key = model_key
        self.reload_seconds = reload_seconds
        self.rows_seconds = rows_seconds
        self._searcher: Searcher | None = None
        self._rows_signature: tuple | None = None
        self._rows_checked = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reloads = 0

    def current(self) -> Searcher:
        """The loaded version; the first call loads it (LookupError / FileNotFoundError while
        nothing is published) and starts the background thread."""
        searcher = self._searcher
        if searcher is not None:
            return searcher
        with self._lock:
            if self._searcher is None:
                self._searcher = Searcher(self.db_path, self.model_key, explain=False)
                self._start()
            return self._searcher

    def poll(self) -> bool:
        """Switch to a newer published version if there is one (True when switched), and
        refresh labels and clusters when the catalog says they changed."""
        searcher = self._searcher
        if searcher is None:
            return False
        found = snapshot.read_pointer(DataPaths(self.db_path.parent), self.model_key)
        if found is not None and found != (searcher.model_key, searcher.record.version):
            try:
                fresh = Searcher(self.db_path, self.model_key, explain=False)
            except (LookupError, OSError, RuntimeError) as exc:
                log.warning(
                    "keeping index %s: cannot load %s (%s)", searcher.record.version, found, exc
                )
                return False
            self._searcher, self._rows_signature = fresh, None
            self.reloads += 1
            log.info("now serving index %s of %s", fresh.record.version, fresh.model_key)
            self._refresh_rows(fresh, force=True)
            return True
        self._refresh_rows(searcher, force=False)
        return False

    def _refresh_rows(self, searcher: Searcher, *, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._rows_checked < self.rows_seconds:
            return
        self._rows_checked = now
        try:
            signature = snapshot.rows_signature(self.db_path, searcher.model_key, CATALOG_TIMEOUT_S)
            if signature != self._rows_signature:
                searcher.refresh_rows(CATALOG_TIMEOUT_S)
                self._rows_signature = signature
        except Exception as exc:  # noqa: BLE001 - a busy or odd catalog must not stop serving
            log.info("labels not refreshed this time (%s)", exc)

    def _start(self) -> None:
        if self._thread is None and self.reload_seconds > 0:
            self._thread = threading.Thread(target=self._loop, name="index-reload", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.reload_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the thread must outlive any one bad tick
                log.exception("index reload tick failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
