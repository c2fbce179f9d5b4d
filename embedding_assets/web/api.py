"""HTTP search for applications: `/search` by image id, uploaded image or text, `/search/batch`
for many ids or files in one request, and `/health`. Answers come from memory (see LiveIndex):
nothing on the request path opens DuckDB, so search goes on while a run holds the writer.

Built so that hostile input costs a 4xx, never the process: the Host header must name this
server and writes must come from its own origin (see guards: 400 / 403), the request body is
capped before any parsing (413), the image header is checked against a pixel limit before
decoding (413 for a decompression bomb), undecodable bytes are a 400, k and ids are bounded
(422, without echoing a large input back).
"""

# No `from __future__ import annotations`: FastAPI must evaluate the endpoint annotations, which
# refer to `max_k` inside create_app.
import io
import json
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field

from embedding_assets.catalog.labels import IMAGE_ID_MAX, IMAGE_ID_MIN
from embedding_assets.search.clip import ClipUnavailable
from embedding_assets.search.live import LiveIndex
from embedding_assets.search.searcher import Hit, QueryError, Searcher, UnknownImageError
from embedding_assets.search.text_answers import NoMatch, TextHit
from embedding_assets.search.text_search import LiveText
from embedding_assets.web.api_docs import docs_html
from embedding_assets.web.atlas import mount_atlas
from embedding_assets.web.guards import HostGuard, IdText, ImageId, validation_error
from embedding_assets.web.pages import mount_pages
from resources.paths import DataPaths

DEFAULT_MAX_K = 100
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_MAX_PIXELS = 40_000_000
MAX_TEXT = 200  # characters of a text query


class BodyLimit:
    """ASGI middleware: refuse bodies over `max_bytes` before FastAPI parses (or spools) them."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._reject(scope, receive, send)
            return
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _reject(self, scope, receive, send) -> None:
        detail = f"request body over {self.max_bytes} bytes; send a smaller image"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


def open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """Decode uploaded bytes, checking the pixel count from the header before decoding."""
    if not data:
        raise HTTPException(400, "empty upload: send an image file in the form field `file`")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"image refused as a decompression bomb: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HTTPException(400, f"upload is not an image Pillow can read ({exc})") from exc
    width, height = image.size
    if width * height > max_pixels:
        raise HTTPException(
            413, f"image is {width}x{height} = {width * height} pixels, over the {max_pixels} limit"
        )
    try:
        image.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is a 400
        raise HTTPException(400, f"image data is corrupt or truncated ({exc})") from exc
    return image


class SearchAnswer(BaseModel):
    model_key: str
    index_version: str
    query: dict
    results: list[Hit]


class TextSearchAnswer(BaseModel):
    model_key: str = Field(description="The backbone whose tags answered, or the CLIP model.")
    via: str = Field(description="tags (ImageNet classes of the backbone) or clip.")
    query: dict = Field(description="The text, and how its words were understood.")
    source: str = Field(description="Which model answered, in words.")
    results: list[TextHit]


class BatchItem(BaseModel):
    query: dict
    results: list[Hit] | None = None
    error: str | None = Field(None, description="Why this query has no results (e.g. unknown id).")
    status: int = Field(200, description="The HTTP status this query alone would have had.")


class BatchAnswer(BaseModel):
    model_key: str
    index_version: str
    results: list[BatchItem]


class BatchByIds(BaseModel):
    image_ids: list[ImageId] = Field(description="Catalog image ids of the query images.")
    k: int = Field(10, ge=1, description="Results per query, 1 to the server's max_k.")


def _named_upload(upload: UploadFile, max_pixels: int) -> Image.Image:
    """open_upload for one file of a batch: its error names the file."""
    try:
        return open_upload(upload.file.read(), max_pixels)
    except HTTPException as exc:
        raise HTTPException(exc.status_code, f"{upload.filename}: {exc.detail}") from exc


def _json(payload: dict) -> Response:
    """Serialised here rather than through FastAPI's encoder: the answers are plain dicts of
    str/int/float, and skipping the encoder is most of a by-id request's cost."""
    return Response(json.dumps(payload), media_type="application/json")


def _status(exc: QueryError) -> int:
    return 404 if isinstance(exc, UnknownImageError) else 422


@dataclass(frozen=True)
class ServeOptions:
    """How a server answers: which set, its limits, how often it looks for a newer index, and
    the names requests may use for it (`emb serve` passes these to each worker as JSON)."""

    model_key: str | None = None  # None: the newest published
    max_k: int = DEFAULT_MAX_K
    max_batch: int = DEFAULT_MAX_BATCH
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    reload_seconds: float = 1.0
    host: str = "127.0.0.1"  # the address it is bound to
    allowed_hosts: tuple[str, ...] = ()


def create_app(db_path: Path, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The app over the newest published index of `options.model_key`.

    The index is loaded on the first request that needs it, so the server starts (and /health
    says why) even before an index is published; after that a background thread switches to
    newer published versions and refreshes labels (see LiveIndex). Answers come from memory.
    Requests must name the server in their Host header: 127.0.0.1, localhost, ::1, the host it
    is bound to or one of `allowed_hosts` (see guards.HostGuard).
    """
    max_k, max_batch, max_pixels = options.max_k, options.max_batch, options.max_pixels
    max_upload_bytes, reload_seconds = options.max_upload_bytes, options.reload_seconds
    live = LiveIndex(Path(db_path), options.model_key, reload_seconds=reload_seconds)
    live_text = LiveText(DataPaths(Path(db_path).parent), reload_seconds or float("inf"))

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        live.stop()

    app = FastAPI(
        title="Image similarity search",
        version="2",
        description=f"Cosine similarity over the published FAISS index. k is 1 to {max_k}; a "
        f"batch holds at most {max_batch} queries; bodies are capped at {max_upload_bytes} "
        "bytes. Newly published index versions are picked up without a restart (`/health` "
        "shows the version served).",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's Swagger UI comes from a public CDN: see api_docs
        redoc_url=None,
    )
    app.state.live = live

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(docs_html(app.openapi()))

    app.add_exception_handler(RequestValidationError, validation_error)

    def searcher() -> Searcher:
        try:
            return live.current()
        except (LookupError, FileNotFoundError) as exc:
            raise HTTPException(503, str(exc)) from exc

    def answer(s: Searcher, query: dict, hits: list) -> Response:
        return _json(
            {
                "model_key": s.model_key,
                "index_version": s.record.version,
                "query": query,
                "results": [h.as_dict() for h in hits],
            }
        )

    def batch(s: Searcher, queries: list[dict], answers: list) -> Response:
        items = []
        for query, found in zip(queries, answers, strict=True):
            if isinstance(found, QueryError):
                items.append({"query": query, "error": str(found), "status": _status(found)})
            else:
                items.append(
                    {"query": query, "results": [h.as_dict() for h in found], "status": 200}
                )
        return _json(
            {"model_key": s.model_key, "index_version": s.record.version, "results": items}
        )

    def check_batch(n: int) -> None:
        if n == 0:
            raise HTTPException(422, "an empty batch: send at least one query")
        if n > max_batch:
            raise HTTPException(413, f"{n} queries in one batch, over the limit of {max_batch}")

    @app.get("/health")
    async def health() -> dict:
        s = searcher()
        return {
            "status": "ok",
            "model_key": s.model_key,
            "index_version": s.record.version,
            "index_type": s.record.index_type,
            "vectors": s.index.ntotal,
            "reloads": live.reloads,
            "max_k": max_k,
            "max_batch": max_batch,
        }

    @app.get("/search", response_model=SearchAnswer | TextSearchAnswer)
    async def search_by_id_or_text(
        image_id: Annotated[
            int | None,
            IdText,
            Query(
                ge=IMAGE_ID_MIN,
                le=IMAGE_ID_MAX,
                description="Catalog image id of the query image (a 64-bit integer).",
            ),
        ] = None,
        text: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=MAX_TEXT,
                description="Words to find images by (e.g. 'a red truck'), instead of an id: "
                "ranked by the image tags' probabilities of the classes the words name, spread "
                "to the images that resemble them (each result's matched_by and like say which).",
            ),
        ] = None,
        k: Annotated[int, Query(ge=1, le=max_k, description=f"Results, 1 to {max_k}.")] = 10,
    ) -> Response:
        if (image_id is None) == (text is None):
            raise HTTPException(422, "give exactly one of image_id or text")
        if text is not None:
            return by_text(text, k)
        s = searcher()
        try:
            return answer(s, {"image_id": image_id}, s.by_id(image_id, k))
        except QueryError as exc:
            raise HTTPException(_status(exc), str(exc)) from exc

    def by_text(text: str, k: int) -> Response:
        try:
            found = live_text.current().answer(text, k)
        except (LookupError, ClipUnavailable) as exc:
            raise HTTPException(503, str(exc)) from exc
        except NoMatch as exc:
            raise HTTPException(422, str(exc)) from exc
        query = {"text": text, "understood": found.understood}
        payload = {
            "model_key": found.model_key,
            "via": found.via,
            "query": query,
            "source": found.source,
        }
        return _json({**payload, "results": [h.as_dict() for h in found.hits]})

    @app.post("/search", response_model=SearchAnswer)
    def search_by_upload(
        file: Annotated[UploadFile, File(description="The query image.")],
        k: Annotated[int, Form(ge=1, le=max_k, description=f"Results, 1 to {max_k}.")] = 10,
    ) -> Response:
        image = open_upload(file.file.read(), max_pixels)  # bad bytes: a 400, index or not
        s = searcher()
        try:
            return answer(s, {"upload": file.filename}, s.by_image(image, k))
        except QueryError as exc:
            raise HTTPException(_status(exc), str(exc)) from exc

    @app.post("/search/batch", response_model=BatchAnswer)
    async def search_batch_by_ids(body: BatchByIds) -> Response:
        """Many image ids in one request and one FAISS call; an unknown id gets its error in
        its place and the others their results."""
        check_batch(len(body.image_ids))
        if body.k > max_k:
            raise HTTPException(422, f"k={body.k} is over this server's max_k of {max_k}")
        s = searcher()
        queries = [{"image_id": i} for i in body.image_ids]
        return batch(s, queries, s.by_ids(body.image_ids, body.k))

    @app.post("/search/batch/upload", response_model=BatchAnswer)
    def search_batch_by_upload(
        files: Annotated[list[UploadFile], File(description="The query images.")],
        k: Annotated[int, Form(ge=1, le=max_k, description=f"Results, 1 to {max_k}.")] = 10,
    ) -> Response:
        """Many uploaded images embedded in one batch; all must decode (400/413 otherwise)."""
        check_batch(len(files))
        images = [_named_upload(f, max_pixels) for f in files]
        s = searcher()
        try:
            found = s.by_images(images, k)
        except QueryError as exc:
            raise HTTPException(_status(exc), str(exc)) from exc
        return batch(s, [{"upload": f.filename} for f in files], found)

    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.add_middleware(HostGuard, bind_host=options.host, allowed=options.allowed_hosts)
    mount_atlas(app, mount_pages(app, live, Path(db_path)))
    return app


SERVE_CONFIG_ENV = "EMB_SERVE_CONFIG"
SUPERVISOR_ENV = "EMB_SERVE_SUPERVISOR"  # pid of the `emb serve` that started the workers


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process, configured by `emb serve` through the
    environment (worker processes import the app by name and take no arguments)."""
    options = json.loads(os.environ[SERVE_CONFIG_ENV])
    supervisor = os.environ.get(SUPERVISOR_ENV, "")
    if supervisor.isdigit() and int(supervisor) != os.getpid():
        exit_with(int(supervisor))
    hosts = tuple(options.pop("allowed_hosts", ()))
    return create_app(Path(options.pop("db_path")), ServeOptions(**options, allowed_hosts=hosts))


def exit_with(supervisor: int, every_s: float = 0.5) -> None:
    """End this worker (SIGTERM: uvicorn's own graceful stop) once `supervisor` is no longer
    its parent. A `kill -9` of `emb serve` gives it no time to stop its workers, which would
    go on answering and hold the port, so that a restart failed with "Address already in
    use"."""
    import signal
    import threading
    import time

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-emb-serve", daemon=True).start()
