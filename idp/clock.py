"""The one clock: every "now" in the bridge comes from here, so tests can move time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_now: Callable[[], datetime] = lambda: datetime.now(UTC)  # noqa: E731


def now() -> datetime:
    """Current time, timezone-aware UTC, without microseconds (SAML and audit want whole seconds)."""
    return _now().replace(microsecond=0)


def set_clock(fn: Callable[[], datetime] | None) -> None:
    """Replace the clock (tests); ``None`` restores the real one."""
    global _now
    _now = fn if fn is not None else (lambda: datetime.now(UTC))
