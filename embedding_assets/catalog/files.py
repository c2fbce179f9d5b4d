"""Find image files under a folder: the candidates a scan considers, with the fields that tell
whether a file changed. Plain Python; objects in storage are listed by `object_store`."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"}
# Image files we recognise but cannot decode: recorded as `unsupported` rather than ignored.
KNOWN_UNSUPPORTED_EXTENSIONS = {
    ".heic",
    ".heif",
    ".avif",
    ".jp2",
    ".j2k",
    ".svg",
    ".psd",
    ".dng",
    ".cr2",
    ".nef",
    ".arw",
}
_CANDIDATE_EXTENSIONS = {e.encode() for e in IMAGE_EXTENSIONS | KNOWN_UNSUPPORTED_EXTENSIONS}


@dataclass(frozen=True, slots=True)
class FoundFile:
    """A candidate file seen while walking (or an object listed under a URL), with the fields
    that decide if it changed."""

    path: str  # display form: valid UTF-8, undecodable bytes as \xNN; an object's full URL
    path_bytes: bytes | None  # raw name, only when it is not valid UTF-8
    size: int | None
    mtime_ns: int | None
    error: str | None = None  # set when the file could not even be stat'ed
    etag: str | None = None  # an object's ETag: changes with its content

    @property
    def fs_path(self) -> str | bytes:
        return self.path_bytes if self.path_bytes is not None else self.path


def walk_images(root: str | Path) -> Iterator[FoundFile]:
    """Yield every image-like file under `root`, following directory symlinks without looping.

    Works on bytes paths so that file names which are not valid UTF-8 are still found. This
    loop is the whole cost of a no-op re-scan, so it stays flat.
    """
    root_b = os.fsencode(os.path.abspath(root))
    seen_dirs: set[tuple[int, int]] = set()
    stack = [root_b]
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory)
            entries = list(os.scandir(directory))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen_dirs:
            continue  # a symlink back to a folder we already walked
        seen_dirs.add((st.st_dev, st.st_ino))
        for entry in entries:
            name = entry.name
            if name[:1] == b".":
                continue
            try:
                if entry.is_dir():
                    stack.append(entry.path)
                    continue
            except OSError:
                pass  # a symlink loop: reported below as an unreadable file
            dot = name.rfind(b".")
            if dot < 0 or name[dot:].lower() not in _CANDIDATE_EXTENSIONS:
                continue
            raw = entry.path
            try:
                path, path_bytes = raw.decode("utf-8"), None
            except UnicodeDecodeError:
                path, path_bytes = raw.decode("utf-8", "backslashreplace"), raw
            try:
                fst = entry.stat()
            except OSError as exc:
                yield FoundFile(path, path_bytes, None, None, f"cannot stat: {exc.strerror}")
                continue
            error = None if stat.S_ISREG(fst.st_mode) else "not a regular file"
            yield FoundFile(path, path_bytes, fst.st_size, fst.st_mtime_ns, error)
