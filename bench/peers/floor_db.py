"""The floor apps' SQLite connection: one per thread, with the bridge's pragmas. WAL and the tables are set up
by peers.floor before the workers exist: two workers switching a new file to WAL at once fail with "database is
locked" (the busy timeout does not cover that switch)."""

from __future__ import annotations

import os
import sqlite3
import threading

_local = threading.local()


def connection() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = _local.conn = sqlite3.connect(os.environ["FLOOR_DATABASE"], isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn
