"""Content ids: equal values always give equal text, and equal text equal hashes. A protocol's
id, and every id derived from a canonical JSON, must never change for the same value."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def protocol_id(protocol: dict[str, Any]) -> str:
    """Short id of a training protocol: sha256 of its canonical JSON, first 10 hex digits.

    Canonical = sorted keys, no whitespace; `1` and `1.0` are different protocols.
    """
    return hashlib.sha256(canonical_json(protocol).encode("utf-8")).hexdigest()[:10]


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace: equal values always give equal text (and equal hashes)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))
