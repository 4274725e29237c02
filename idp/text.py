"""Text the bridge can store, hash and write: what a database, a password hash or a file name takes."""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 controls, DEL, and the Unicode line and paragraph separators: in a name they break the CLI's
# one-line-per-row listings, and an escape sequence (ESC [ ...) reaches the admin's terminal as a command.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The controls a caller may allow: line breaks (a textarea's CR LF), and tabs with them (a YAML block).
_LINE_BREAKS = str.maketrans("", "", "\r\n")
_SPACING = str.maketrans("", "", "\t\r\n")


def has_control(value: str, *, lines: bool = False, spacing: bool = False) -> bool:
    """Whether ``value`` holds a control character; with ``lines``, line breaks do not count; with ``spacing``,
    tabs and line breaks do not."""
    allowed = _SPACING if spacing else _LINE_BREAKS if lines else None
    return _CONTROL.search(value.translate(allowed) if allowed else value) is not None


def check_line(value: str, label: str, field: str | None = None, *, lines: bool = False) -> str:
    """``value`` when it holds no control character (but line breaks when ``lines``, for a description: a
    browser sends a textarea's as CR LF); BadRequest naming ``label`` otherwise."""
    if has_control(value, lines=lines):
        # Imported here: idp.config reads directory settings through this module before idp.errors can load.
        from idp.errors import BadRequest

        raise BadRequest(f"{label} may not contain a control character", field=field)
    return value


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
