"""A short, stable hash of JSON-able parts, for keys that must read the same in every run and
process: input fingerprints (`fingerprints`) and the settings key an index snapshot stores
(`search.builds`). One function, so a key stored yesterday still matches today."""

from __future__ import annotations

import hashlib
import json


def stable_hash(*parts: object) -> str:
    """16 hex digits of the SHA-256 of the parts as canonical JSON (sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
