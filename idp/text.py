"""Text the bridge can store, hash and write: what a database, a password hash or a file name takes."""

from __future__ import annotations

from typing import Any


def unstorable_text(value: Any) -> bool:
    """Whether ``value`` (text, or JSON-like lists and dicts of it, keys included) holds something the database
    cannot store: a NUL character (PostgreSQL text holds none) or a lone surrogate (JSON "\\ud800", not UTF-8).
    Nesting too deep to walk counts as unstorable. Callers refuse such input as a validation error (422), not a
    500 from the database."""
    try:
        return not _storable(value)
    except RecursionError:
        return True


def _storable(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True
