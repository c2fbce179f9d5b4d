"""HTTP search for applications: `/search` by image id or uploaded image, and `/health`.

Built so that hostile input costs a 4xx, never the process: the request body is capped before
any parsing (413), the image header is checked against a pixel limit before decoding (413 for
a decompression bomb), undecodable bytes are a 400, and k is bounded (422).
"""

# No `from __future__ import annotations`: FastAPI must evaluate the endpoint annotations, which
# refer to `max_k` inside create_app.
import io
import threading
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

from embedding_assets.search import QueryError, Searcher, UnknownImageError

DEFAULT_MAX_K = 100
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_MAX_PIXELS = 40_000_000


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


def create_app(
    db_path: Path,
    model_key: str | None = None,
    *,
    max_k: int = DEFAULT_MAX_K,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FastAPI:
    """The app over the newest published index of `model_key` (default: the current set's).

    The index is opened on the first request that needs it, so the server starts (and /health
    says why) even before an index is published.
    """
    app = FastAPI(title="Image similarity search", version="1")
    lock = threading.Lock()
    loaded: dict[str, Searcher] = {}

    def searcher() -> Searcher:
        with lock:
            if "s" not in loaded:
                try:
                    loaded["s"] = Searcher(Path(db_path), model_key)
                except (LookupError, FileNotFoundError) as exc:
                    raise HTTPException(503, str(exc)) from exc
            return loaded["s"]

    def answer(s: Searcher, query: dict, run) -> dict:
        try:
            hits = run()
        except UnknownImageError as exc:
            raise HTTPException(404, str(exc)) from exc
        except QueryError as exc:
            raise HTTPException(422, str(exc)) from exc
        return {
            "model_key": s.model_key,
            "index_version": s.record.version,
            "query": query,
            "results": [h.as_dict() for h in hits],
        }

    @app.get("/health")
    def health() -> dict:
        s = searcher()
        return {
            "status": "ok",
            "model_key": s.model_key,
            "index_version": s.record.version,
            "index_type": s.record.index_type,
            "vectors": s.index.ntotal,
        }

    @app.get("/search")
    def search_by_id(
        image_id: Annotated[int, Query(description="Catalog image id of the query image.")],
        k: Annotated[int, Query(ge=1, le=max_k, description=f"Results, 1 to {max_k}.")] = 10,
    ) -> dict:
        s = searcher()
        return answer(s, {"image_id": image_id}, lambda: s.by_id(image_id, k))

    @app.post("/search")
    def search_by_upload(
        file: Annotated[UploadFile, File(description="The query image.")],
        k: Annotated[int, Form(ge=1, le=max_k, description=f"Results, 1 to {max_k}.")] = 10,
    ) -> dict:
        s = searcher()
        image = open_upload(file.file.read(), max_pixels)
        return answer(s, {"upload": file.filename}, lambda: s.by_image(image, k))

    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    return app
