"""Small JPEG thumbnails of catalog images, made on demand and cached twice: in memory (LRU of
encoded bytes) and as files under `<data>/thumbnails/`, named by image id and content hash so a
changed file gets a new thumbnail. Callers hand in the catalog's path for an image id: no path
ever comes from a request."""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image, ImageOps

from embedding_assets.catalog import object_store
from embedding_assets.catalog.images import open_image

MAX_PX = 128
MEMORY_ITEMS = 4096
MAX_SOURCE_PIXELS = 100_000_000  # refuse to decode larger files (a bomb in the image folder)


class Thumbnails:
    def __init__(self, cache_dir: Path, max_px: int = MAX_PX, memory_items: int = MEMORY_ITEMS):
        self.cache_dir = Path(cache_dir)
        self.max_px = max_px
        self.memory_items = memory_items
        self._memory: OrderedDict[int, tuple[str, bytes]] = OrderedDict()  # id: (sha, jpeg)
        self._lock = threading.Lock()

    def get(self, image_id: int, source: Path | str, sha256: str | None) -> bytes:
        """The thumbnail bytes of a file (or an object by its URL); FileNotFoundError when the
        image is gone, object_store.StoreReadError when its store cannot be read, ValueError
        when it cannot be decoded."""
        tag = sha256 or ""
        with self._lock:
            found = self._memory.get(image_id)
            if found is not None and found[0] == tag:
                self._memory.move_to_end(image_id)
                return found[1]
        file = self.cache_dir / f"{image_id}-{(sha256 or 'nohash')[:16]}-{self.max_px}.jpg"
        try:
            data = file.read_bytes()
        except OSError:
            data = self._make(source)
            self._store_file(file, data)
        with self._lock:
            self._memory[image_id] = (tag, data)
            self._memory.move_to_end(image_id)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)
        return data

    def _make(self, source: Path | str) -> bytes:
        try:
            with open_image(source) as image:
                w, h = image.size
                if w * h > MAX_SOURCE_PIXELS:
                    raise ValueError(f"{w}x{h} pixels is too large to thumbnail")
                image.draft("RGB", (self.max_px, self.max_px))  # JPEG: decode at reduced size
                image = ImageOps.exif_transpose(image)
                image.thumbnail((self.max_px, self.max_px))
                if image.mode not in ("RGB", "L"):
                    image = image.convert("RGB")
                out = io.BytesIO()
                image.save(out, format="JPEG", quality=82)
                return out.getvalue()
        except (FileNotFoundError, object_store.StoreReadError):
            raise
        except (OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"cannot read the image ({exc})") from exc

    def _store_file(self, file: Path, data: bytes) -> None:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(f".{file.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            tmp.replace(file)
        except OSError:
            pass  # a read-only data folder: memory cache only
