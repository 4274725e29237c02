"""The floor apps' SQLite connection (one per thread, with the bridge's pragmas) and how they key its rows. WAL
and the tables are set up by peers.floor before the workers exist: two workers switching a new file to WAL at
once fail with "database is locked" (the busy timeout does not cover that switch)."""

from __future__ import annotations

import hashlib
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


def digest(value: str) -> str:
    """How the floors key sessions, codes and tokens: by the SHA-256 of the secret, never the secret."""
    return hashlib.sha256(value.encode()).hexdigest()
