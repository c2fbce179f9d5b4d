"""Images in object storage: `image_dir` may be an fsspec URL (s3://, gs://, az://, ...).

Plain functions over fsspec, imported only when a URL is met, so local folders keep their own
fast path. Credentials and endpoints come from each store's standard environment variables
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_...), read by
the store's own client. The catalog keys an object by its full URL and tells a changed object by
its size and ETag.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from embedding_assets.catalog.files import FoundFile

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: C:\ is a local path
# The extra of this package that installs the fsspec implementation of a protocol.
_EXTRAS = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "abfs": "azure",
    "abfss": "azure",
}


def is_url(path: object) -> bool:
    """True for `scheme://...` strings: those are read through fsspec, anything else is a
    local path (bytes paths are non-UTF-8 local file names)."""
    return isinstance(path, str) and _URL.match(path) is not None


def filesystem(url: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem of `url` and the path inside it; a missing optional package or an
    unknown protocol is one line that says what to install."""
    import fsspec

    protocol = url.split("://", 1)[0].lower()
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        extra = _EXTRAS.get(protocol)
        fix = (
            f"pip install 'embedding-assets[{extra}]'"
            if extra
            else f"install the fsspec implementation for {protocol}://"
        )
        raise ImportError(
            f"{url}: reading {protocol}:// URLs needs a package that is not installed ({exc}); "
            f"{fix}"
        ) from None
    except ValueError as exc:
        raise ValueError(f"{url}: {exc}; use s3://, gs://, az:// or a local folder") from None


def normalize(url: str) -> str:
    """The canonical form of a folder URL (protocol alias resolved, no trailing slash): the
    catalog's `images.root` for the objects under it."""
    fs, path = filesystem(url)
    return fs.unstrip_protocol(path.rstrip("/"))


def check_folder(url: str) -> None:
    """Fail early, in one line, when `url` names no bucket or prefix (one cheap request, not a
    listing): `emb run` checks before it starts the job."""
    fs, root = filesystem(url)
    try:
        there = fs.isdir(root.rstrip("/"))
    except Exception as exc:  # noqa: BLE001 - botocore's errors are no OSError: all mean the same
        raise _unlistable(url, exc) from None
    if not there:
        raise _missing(url)


CREDENTIALS_HINT = (
    "check the store's credentials and endpoint "
    "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...)"
)


class StoreReadError(OSError):
    """An object that could not be fetched (credentials, endpoint, network): says nothing
    about the image, so it is never a reason to call the image corrupt."""


def _unlistable(url: str, exc: Exception) -> OSError:
    return OSError(f"cannot list {url}: {_one_line(exc)}; {CREDENTIALS_HINT}")


def _one_line(exc: Exception) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())


def _missing(url: str) -> NotADirectoryError:
    return NotADirectoryError(
        f"image_dir {url} has no objects (no such bucket or prefix, or it is empty); set "
        "image_dir in the image_catalog config (or EMB_IMAGE_DIR) to a folder of images"
    )


def list_images(url: str, extensions: set[str]) -> list[FoundFile]:
    """Every object under `url` whose name ends in one of `extensions` (lower case, with the
    dot), skipping hidden names as walking a folder does. NotADirectoryError when nothing is
    there at all (no such bucket or prefix), which is a wrong URL rather than an empty folder."""
    fs, root = filesystem(url)
    root = root.rstrip("/")
    fs.invalidate_cache(root)  # a long-lived process (dagster dev) must see today's objects
    try:
        listing = fs.find(root, detail=True)
    except FileNotFoundError:
        listing = {}
    except Exception as exc:  # noqa: BLE001 - botocore's errors are no OSError: all mean the same
        raise _unlistable(url, exc) from None
    if not listing:
        raise _missing(url)
    found = []
    for key, info in sorted(listing.items()):
        if info.get("type", "file") != "file":
            continue
        rel = PurePosixPath(key[len(root) :].lstrip("/"))
        if any(part.startswith(".") for part in rel.parts) or rel.suffix.lower() not in extensions:
            continue
        etag = info.get("ETag") or info.get("etag")
        mtime = info.get("mtime")  # only consulted where a store gives no ETag
        found.append(
            FoundFile(
                path=fs.unstrip_protocol(key),
                path_bytes=None,
                size=info.get("size"),
                mtime_ns=int(mtime * 1e9) if etag is None and isinstance(mtime, float) else None,
                etag=etag.strip('"') if etag else None,
            )
        )
    return found


def read_bytes(url: str) -> bytes:
    """The whole object: images are small, and one read serves both the hash and the decode."""
    fs, path = filesystem(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's errors are no OSError
        raise StoreReadError(f"cannot read {url}: {_one_line(exc)}; {CREDENTIALS_HINT}") from exc


def relative_parts(path: str, root: str | os.PathLike) -> tuple[str, ...]:
    """The parts of an object's URL below the folder URL `root`."""
    return PurePosixPath(path[len(str(root).rstrip("/")) :].lstrip("/")).parts
