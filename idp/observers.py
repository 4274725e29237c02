"""Observers of one kind of event in this process (the metrics are the usual ones): each added once, each told in
turn, and one that raises is logged without stopping the others or the request that made the event."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Observers(Generic[T]):
    def __init__(self, what: str) -> None:
        self._what = what  # names an observer that failed, in the log
        self._items: list[T] = []

    def add(self, observer: T) -> None:
        """Tell ``observer`` from now on (once, however often added)."""
        if observer not in self._items:
            self._items.append(observer)

    def tell(self, call: Callable[[T], None]) -> None:
        for observer in list(self._items):
            try:
                call(observer)
            except Exception:
                # A metric is not worth a failed request.
                log.exception("%s %r failed", self._what, observer)
