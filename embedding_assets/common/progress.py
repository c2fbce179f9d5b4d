"""Progress of a long step: drawn where someone watches it, logged where the run is recorded.

`emb run` executes every step in its own process (in-process executor) and, on a terminal,
asks for bars (`bars()`):
one tqdm bar per step on stderr. Elsewhere (the Dagster UI's run workers, tests, piped output)
nothing is drawn. Either way the step logs a line every ~10 % through `context.log`, which the
run's event log keeps for the UI and which the quiet CLI does not print.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_bars_wanted = False


@contextmanager
def bars() -> Iterator[None]:
    """Draw a bar for each step run inside this block. Only the caller knows that the steps run
    in this process on a terminal: a UI run's stderr can be a terminal too (`dagster dev`'s),
    where bars would garble the server's log."""
    global _bars_wanted
    previous, _bars_wanted = _bars_wanted, True
    try:
        yield
    finally:
        _bars_wanted = previous


class Progress:
    """Feed `update(done, total)` from a step's loop. Logs `text` (with `{done}`, `{total}`)
    each time another `log_every` of the total is done (0: every update), so the UI shows the
    same progress without a line per batch; under `bars()` also draws a bar named `name`."""

    def __init__(
        self, log: logging.Logger, name: str, unit: str, text: str, log_every: float = 0.1
    ) -> None:
        self._log = log
        self._name = name
        self._unit = unit
        self._text = text
        self._log_every = log_every
        self._logged = 0
        self._bar: Any = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()

    def update(self, done: int, total: int, note: str = "") -> None:
        if _bars_wanted:
            self._draw(done, total, note)
        if done >= total or done - self._logged >= max(1, math.ceil(total * self._log_every)):
            self._logged = done
            line = self._text.format(done=done, total=total)
            self._log.info(f"{line}: {note}" if note else line)

    def _draw(self, done: int, total: int, note: str) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self._name, unit=self._unit, dynamic_ncols=True)
        self._bar.total = total
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.update(done - self._bar.n)
