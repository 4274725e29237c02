"""URLs as people type them (settings, the admin API and UI, the CLI): read once, or refused without a crash."""

from __future__ import annotations

from urllib.parse import SplitResult, urlsplit


def split_url(value: str) -> SplitResult | None:
    """``value`` split into its parts, or None when it cannot be one URL: a bracketed host that is no IPv6
    address (``http://[::1``, ``http://[x]/``) or a port that is not a number from 0 to 65535, where ``urlsplit``
    or ``.port`` would raise ValueError in the caller's hands."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError:
        return None
    return parts
