"""What every request to `emb serve` is checked against before an endpoint sees it.

- The Host header must name this server: 127.0.0.1, localhost, ::1, the --host it is bound to,
  or a name given with --allowed-host (HostGuard, 400 otherwise). A page on a DNS-rebound name
  (evil.com resolving to 127.0.0.1) reaches the socket with its own name as Host, so it gets
  neither the pages (which carry the write token) nor any data.
- A request that changes something (POST, PUT, PATCH, DELETE) and says where it comes from must
  come from this server's own origin: the Origin's scheme, host and port equal the server's
  (the request's scheme and its allowed Host), and a browser's `Sec-Fetch-Site` says
  same-origin (403 otherwise). Clients that send no Origin (curl, programs) are not browsers.
- Ids in requests are the catalog's 64-bit integers (`ImageId`, 422 naming the field past it),
  and a validation error never echoes a large input back (`validation_error`).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Iterable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator, Field, Strict

from embedding_assets.catalog.labels import IMAGE_ID_MAX, IMAGE_ID_MIN

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
SAME_SITE_FETCHES = ("same-origin", "none")  # `none`: typed in the address bar, a bookmark

# In a JSON body an id is a JSON integer: not `true` (a bool is an int to Python), not "1".
ImageId = Annotated[
    int,
    Strict(),
    Field(
        ge=IMAGE_ID_MIN,
        le=IMAGE_ID_MAX,
        description="A catalog image id (a 64-bit integer).",
    ),
]


def whole_number(value: object) -> object:
    """An id in a URL (path or query) as typed: ASCII digits with an optional minus, nothing
    else (pydantic's lax int would take `1.0`, ` 1` and `+1` as image 1)."""
    if isinstance(value, str) and not re.fullmatch(r"-?[0-9]{1,20}", value):
        raise ValueError("an image id is a whole number written in digits (like 42)")
    return value


IdText = BeforeValidator(whole_number)  # with Query/Path(ge, le) on the id's own parameter


def normal_name(name: str) -> str:
    """A host name as compared: lower case, no brackets around IPv6, no trailing dot."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.rstrip(".")


def split_host(header: str) -> tuple[str, int | None] | None:
    """`name`, `name:port`, `[v6]` or `[v6]:port` as (name, port); None when malformed."""
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[1:end], header[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port = rest[1:] if rest else None
    else:
        if header.count(":") > 1:
            return None  # an IPv6 address must come in brackets
        name, colon, port = header.partition(":")
        port = port if colon else None
    if port is not None and not (port.isascii() and port.isdigit() and int(port) < 65536):
        return None
    name = normal_name(name)
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-._:%")
    if not name or not set(name) <= allowed:
        return None
    return name, None if port is None else int(port)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        return False


class HostGuard:
    """ASGI middleware: the Host allow-list on every request, and the Origin check on every
    request that changes something. Answers 400 / 403 itself; everything else passes on."""

    def __init__(self, app, bind_host: str = "127.0.0.1", allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.names = frozenset(normal_name(n) for n in (*LOOPBACK_NAMES, bind_host, *allowed))
        self.names -= {normal_name(w) for w in WILDCARD_HOSTS}
        # Bound to every interface, the server answers to each of the machine's addresses: an
        # IP address as Host cannot be a rebound name (the page's origin is then that address).
        self.any_ip = normal_name(bind_host) in {normal_name(w) for w in WILDCARD_HOSTS}

    def allows(self, name: str) -> bool:
        return name in self.names or (self.any_ip and _is_ip(name))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        raw = headers.get("host", "")
        parsed = split_host(raw)
        if parsed is None or not self.allows(parsed[0]):
            await _refuse(400, self._host_refusal(raw, parsed), scope, receive, send)
            return
        if scope["type"] == "http" and scope.get("method", "GET") in UNSAFE_METHODS:
            why = cross_site(headers, scope.get("scheme", "http"), parsed)
            if why:
                await _refuse(403, why, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _host_refusal(self, raw: str, parsed: tuple[str, int | None] | None) -> str:
        shown = _printable(raw[:100]) if raw else "(no Host header)"
        names = ", ".join(sorted(self.names)) + (", any IP address" if self.any_ip else "")
        name = parsed[0] if parsed else "NAME"
        return (
            f"host not allowed: {shown}; this server answers to {names}. To serve it under "
            f"another name, pass --allowed-host {name} to emb serve"
        )


def _headers(scope) -> dict[str, str]:
    """The request's headers by lower-case name (the first of repeated ones)."""
    found: dict[str, str] = {}
    for key, value in scope.get("headers", ()):
        found.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
    return found


def cross_site(headers: dict[str, str], scheme: str, host: tuple[str, int | None]) -> str | None:
    """Why a state-changing request is refused as cross-site, or None: its Origin's scheme,
    host and port differ from this server's (the request's scheme and its Host), or a browser
    says it was sent from another site (`Sec-Fetch-Site`)."""
    origin = headers.get("origin")
    own_port = host[1] if host[1] is not None else DEFAULT_PORTS.get(scheme)
    if origin is not None and _origin_of(origin) != (scheme, host[0], own_port):
        return (
            f"cross-site request from {_printable(origin[:100])} refused: writes come from "
            "this server's own pages"
        )
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in SAME_SITE_FETCHES:
        return f"cross-site request (Sec-Fetch-Site: {_printable(fetch_site[:40])}) refused"
    return None


def _printable(text: str) -> str:
    """A header value as said back: anything but printable ASCII as `?`."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _origin_of(origin: str) -> tuple[str, str, int | None] | None:
    """An Origin header as (scheme, host, port), None for `null` or anything malformed."""
    try:
        parts = urlsplit(origin)
        scheme = parts.scheme.lower()
        found = (scheme, normal_name(parts.hostname or ""), parts.port or DEFAULT_PORTS.get(scheme))
    except ValueError:
        return None
    if not found[1] or parts.path not in ("", "/") or parts.query or parts.username:
        return None
    return found


async def _refuse(status: int, detail: str, scope, receive, send) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
    await response(scope, receive, send)


def _utf8(text: str) -> str:
    """`text` encodable as UTF-8: a lone surrogate (JSON allows `\\udcff`) spelled out."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _short_input(value):
    """An error's `input` as echoed back: small values as they are, large ones described."""
    if isinstance(value, str):
        short = value if len(value) <= 100 else f"{value[:40]}... ({len(value)} characters)"
        return _utf8(short)
    if isinstance(value, bytes):
        return f"({len(value)} bytes)"
    try:
        text = json.dumps(jsonable_encoder(value))  # ASCII: \\u escapes for the rest
    except (TypeError, ValueError):
        return f"({type(value).__name__})"
    if len(text) <= 200:
        try:
            json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
            return value
        except (TypeError, ValueError, UnicodeEncodeError):
            return text  # a lone surrogate, NaN or Infinity (not JSON): as JSON text
    if isinstance(value, list | tuple):
        return f"(a list of {len(value)} items)"
    if isinstance(value, dict):
        return f"(an object with {len(value)} keys)"
    return f"({type(value).__name__} of {len(text)} characters)"


def _finite(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 (a `detail` list of type, loc, msg, input), with each input cut short:
    the default handler echoes every invalid input whole, a 1 MB label included."""
    detail = []
    for error in exc.errors():
        item = {
            "type": error.get("type"),
            "loc": [_utf8(p) if isinstance(p, str) else p for p in error.get("loc", ())],
            "msg": _utf8(str(error.get("msg", ""))),
        }
        if "input" in error:
            item["input"] = _short_input(error["input"])
        ctx = error.get("ctx")
        if ctx:
            item["ctx"] = {
                k: v if isinstance(v, int | bool) or _finite(v) else _short_input(str(v))
                for k, v in ctx.items()
            }
        detail.append(item)
    return JSONResponse({"detail": jsonable_encoder(detail)}, status_code=422)
