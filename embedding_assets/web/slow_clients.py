"""uvicorn's HTTP protocols with a deadline for each request's head (request line and headers):
uvicorn times out only a kept-alive connection that sits idle after a response, so a new
connection that sends nothing, or its headers a byte at a time, was held for as long as the
client liked (six such connections were still open after 40 s). Past the deadline the server
closes the connection. The deadline stops once a request's headers are in (a slow answer or a
large upload is not cut) and starts again after each response.

`emb serve` names a class here by import path (its workers are separate processes); the seconds
come from the environment (HEAD_TIMEOUT_ENV) for the same reason."""

from __future__ import annotations

import importlib.util
import os

from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_ENV = "EMB_SERVE_HEAD_TIMEOUT_S"
DEFAULT_HEAD_TIMEOUT_S = 10.0


def head_timeout_s() -> float:
    return float(os.environ.get(HEAD_TIMEOUT_ENV) or DEFAULT_HEAD_TIMEOUT_S)


class HeadDeadline:
    """Mixed into a uvicorn protocol: a timer from connection (and from each response) to the
    next request's complete headers."""

    _deadline = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not getattr(self, "pipeline", None):
            self._arm()

    def _head_complete(self) -> None:
        self._disarm()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(head_timeout_s(), self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class H11Deadline(HeadDeadline, H11Protocol):
    _seen = None  # the request cycle whose headers were seen last

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and self.cycle is not self._seen:
            self._seen = self.cycle  # a new request's headers are in
            self._head_complete()


if importlib.util.find_spec("httptools") is not None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsDeadline(HeadDeadline, HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._head_complete()

    PROTOCOL = f"{__name__}:HttpToolsDeadline"
else:
    PROTOCOL = f"{__name__}:H11Deadline"
