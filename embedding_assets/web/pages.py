"""The browser pages of `emb serve` and their JSON endpoints, mounted on the search app.

- `GET /label`, `/map`, `/search/page`: the pages (HTML with the JS inline; plotly.js is served
  from the plotly package at `/web/plotly.min.js`, so the pages work offline);
- `GET /label/data`, `/label/round`, `/map/data`: page data, read from the catalog here and only
  here, each in one short read-only connection (503 while a run holds the catalog: the page
  retries);
- `POST /label/answer`: labels for image ids, written to the `labels` log with source `web`
  through the labels module (the label rules and validation of `emb label`); the answer says
  how many of the ids got a row (`inserted` of `requested`) and why each other one did not;
  nothing written is never a 200;
- `GET /thumb/{image_id}`: a thumbnail by catalog id (never by a path from the request).

Writes need the server's random token, which only the pages it serves carry (header
`X-Emb-Token`, see server_token), and, from a browser, this server's own origin; the pages
(and the token) go only to requests whose Host names this server (see guards): another site,
a DNS-rebound name included, can neither read the token nor post labels.
Searching goes through the existing JSON API (`GET /search?image_id=`, `POST /search` with an
upload).
"""

from __future__ import annotations

import gzip
import hmac
import html
import json
import os
import secrets
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Annotated

import duckdb
import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import AfterValidator, BaseModel, Field

from embedding_assets.catalog import labels as label_rules
from embedding_assets.catalog.labels import IMAGE_ID_MAX, IMAGE_ID_MIN
from embedding_assets.catalog.object_store import StoreReadError, is_url
from embedding_assets.search.text_answers import WHY_TWO_MODELS
from embedding_assets.web import catalog_reads as reads
from embedding_assets.web.guards import IdText, ImageId, cross_site, split_host
from embedding_assets.web.thumbnails import MAX_PX, Thumbnails
from resources.duckdb_store import CatalogLockedError
from resources.paths import DataPaths

TOKEN_HEADER = "X-Emb-Token"
TOKEN_ENV = "EMB_WEB_TOKEN"
TOKEN_FILE = "web_token"
MAX_LABEL_IDS = 100_000
PAGE_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'",  # no clickjacking of the label keys
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class Answer(BaseModel):
    image_ids: list[ImageId] = Field(min_length=1, max_length=MAX_LABEL_IDS)
    # the labels module's rules (as `emb label`): trimmed, NFC, no control characters, at most
    # MAX_LABEL_CHARS; a break is a 422 naming the rule
    label: Annotated[str, AfterValidator(label_rules.clean_label)] = Field(
        description=f"The label: one line of text, at most {reads.MAX_LABEL_CHARS} characters."
    )


def plotly_js() -> Path:
    """plotly.min.js as bundled with the plotly Python package."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def server_token(data: DataPaths) -> str:
    """The random token the pages carry for writes: $EMB_WEB_TOKEN if set, else the one in
    `<data>/web_token` (made once, owner-only), which every worker process of `emb serve`
    shares (a token per process would make one worker refuse another's page). Delete the file
    to rotate it. A read-only data folder gets a token per process."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    file = data.root / TOKEN_FILE
    try:
        return _read_token(file)
    except OSError:
        pass
    fresh = secrets.token_urlsafe(32)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(fresh)
        return fresh
    except FileExistsError:  # another worker made it first
        return _read_token(file)
    except OSError:
        return fresh


def _read_token(file: Path) -> str:
    for _ in range(50):  # a worker that just created the file may not have written it yet
        token = file.read_text().strip()
        if token:
            return token
        time.sleep(0.01)
    raise OSError(f"{file} is empty")


def _template(name: str) -> str:
    return resources.files("embedding_assets.web").joinpath("templates", name).read_text("utf-8")


class Pages:
    """State of the pages of one server: the token, thumbnail caches, known image paths."""

    def __init__(self, db_path: Path, live=None, thumb_px: int = MAX_PX) -> None:
        self.db = Path(db_path)
        self.live = live  # the server's LiveIndex
        self.data = DataPaths(self.db.parent)
        self.token = server_token(self.data)
        self.thumbs = Thumbnails(self.data.root / "thumbnails", thumb_px)
        self._refs: dict[int, reads.ImageRef] = {}
        self._refs_lock = threading.Lock()
        self._html = {
            name: _template(f"{name}.html")
            .replace("{{TOKEN}}", self.token)
            .replace("{{WHY_TWO_MODELS}}", html.escape(WHY_TWO_MODELS))
            for name in ("label", "map", "search")
        }

    def page(self, name: str) -> HTMLResponse:
        return HTMLResponse(self._html[name], headers=PAGE_HEADERS)

    def remember(self, refs: dict[int, reads.ImageRef]) -> None:
        with self._refs_lock:
            self._refs.update(refs)

    def ref(self, image_id: int) -> reads.ImageRef | None:
        """Where the image of `image_id` is: known from a page-data read, else one short
        catalog read; while a run holds the catalog, the served index's snapshot (in memory)."""
        found = self._refs.get(image_id)
        if found is not None:
            return found
        try:
            found = reads.image_ref(self.db, image_id)
        except CatalogLockedError:
            found = self._snapshot_ref(image_id)
            if found is None:
                raise
            return found
        if found is not None:
            self.remember({image_id: found})
        return found

    def _snapshot_ref(self, image_id: int) -> reads.ImageRef | None:
        searcher = getattr(self.live, "_searcher", None) if self.live is not None else None
        if searcher is None:
            return None
        row = int(searcher.lookup.rows(np.asarray([image_id]))[0])
        path = searcher.rows.paths[row] if row >= 0 else None
        return reads.ImageRef(path, None) if path else None

    def check_write(self, request: Request) -> None:
        """403 unless the request carries this server's token (and, when the browser says where
        it comes from, comes from this server's own origin: scheme, host and port; HostGuard
        checks the same before any endpoint, this holds where the pages are mounted alone)."""
        sent = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode(), self.token.encode()):
            raise HTTPException(403, "missing or wrong page token: label from this server's pages")
        host = split_host(request.headers.get("host", ""))
        why = cross_site(
            {k.lower(): v for k, v in request.headers.items()},
            request.url.scheme,
            host or ("", None),
        )
        if why:
            raise HTTPException(403, why)


def _catalog_errors(fn):
    """Run a catalog read; a locked, missing or not yet built catalog is a 503 with the reason."""
    try:
        return fn()
    except CatalogLockedError as exc:
        raise HTTPException(503, f"catalog busy, try again: {exc.one_line()}") from exc
    except FileNotFoundError as exc:
        raise HTTPException(503, str(exc)) from exc
    except duckdb.Error as exc:
        raise HTTPException(503, f"catalog not readable now ({exc})") from exc


def _public(payload: dict) -> dict:
    return {k: v for k, v in payload.items() if not k.startswith("_")}


def mount_pages(app: FastAPI, live, db_path: Path, *, thumb_px: int = MAX_PX) -> Pages:
    """Add the pages and their endpoints to `app` (the search app of `live`, a LiveIndex)."""
    pages = Pages(db_path, live, thumb_px)
    app.state.pages = pages

    @app.get("/", include_in_schema=False)
    def home() -> Response:
        return pages.page("label")

    @app.get("/label", include_in_schema=False)
    def label_page() -> Response:
        return pages.page("label")

    @app.get("/map", include_in_schema=False)
    def map_page() -> Response:
        return pages.page("map")

    @app.get("/search/page", include_in_schema=False)
    def search_page() -> Response:
        return pages.page("search")

    @app.get("/web/plotly.min.js", include_in_schema=False)
    def plotly_bundle() -> Response:
        return FileResponse(
            plotly_js(),
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    @app.get("/label/data", tags=["pages"])
    def label_data() -> JSONResponse:
        """The open label requests (most uncertain first), classes and learning curve."""
        state = _catalog_errors(lambda: reads.label_state(pages.db))
        pages.remember(state["_refs"])
        return JSONResponse(_public(state), headers={"Cache-Control": "no-store"})

    @app.get("/label/round", tags=["pages"])
    def label_round() -> JSONResponse:
        """The newest label-request round: the page polls it to notice a retrain."""
        return JSONResponse(
            _catalog_errors(lambda: reads.latest_round(pages.db)),
            headers={"Cache-Control": "no-store"},
        )

    @app.post("/label/answer", tags=["pages"])
    def label_answer(body: Answer, request: Request) -> JSONResponse:
        """Label these image ids (source `web`); needs the page token."""
        pages.check_write(request)
        ids = list(dict.fromkeys(body.image_ids))
        try:
            result = _catalog_errors(lambda: reads.write_web_labels(pages.db, ids, body.label))
        except label_rules.LabelWriteError as exc:  # rolled back: nothing written
            raise HTTPException(503, str(exc)) from exc
        if not result["inserted"]:  # a 200 always wrote something; 422 says why not
            result["rejected"] = result["rejected"] or ["nothing was written"]
            return JSONResponse(result, status_code=422)
        return JSONResponse(result)

    @app.get("/map/data", tags=["pages"])
    def map_data(
        request: Request, method: str | None = Query(None, pattern="^(pca|umap|tsne)$")
    ) -> Response:
        """The points of one projection, columnar, with label/cluster/prediction/anomaly."""
        found = _catalog_errors(lambda: reads.map_data(pages.db, method))
        pages.remember(found["_refs"])
        body = json.dumps(_public(found), separators=(",", ":")).encode()
        headers = {"Cache-Control": "no-store"}
        if len(body) > 100_000 and "gzip" in request.headers.get("accept-encoding", ""):
            body = gzip.compress(body, compresslevel=1)  # 100k points: 3.6 MB -> ~1 MB
            headers.update({"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
        return Response(body, media_type="application/json", headers=headers)

    @app.get("/thumb/{image_id}", tags=["pages"])
    def thumb(
        image_id: Annotated[
            int,
            IdText,
            PathParam(ge=IMAGE_ID_MIN, le=IMAGE_ID_MAX, description="Catalog image id."),
        ],
    ) -> Response:
        """A thumbnail (JPEG, at most thumb_px on a side) of a usable catalog image."""
        ref = _catalog_errors(lambda: pages.ref(image_id))
        if ref is None:
            raise HTTPException(404, f"no usable image with id {image_id}")
        try:
            source = ref.path if is_url(ref.path) else pages.data.resolve(ref.path)
            data = pages.thumbs.get(image_id, source, ref.sha256)
        except FileNotFoundError as exc:
            raise HTTPException(404, f"image {image_id}: its file is gone") from exc
        except StoreReadError as exc:  # the store, not the image: a gateway error
            raise HTTPException(502, f"image {image_id}: {exc}") from exc
        except ValueError as exc:
            raise HTTPException(422, f"image {image_id}: {exc}") from exc
        return Response(
            data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"}
        )

    return pages
