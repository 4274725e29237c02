"""PostgreSQL's statement timeout (IDP_DATABASE_STATEMENT_TIMEOUT_SECONDS): a request whose query waits on a
lock held elsewhere (a long admin transaction, a migration, a stuck session) is cancelled by the server and
answered 503, instead of holding a worker thread for as long as the lock lasts."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from conftest import PG_URL
from flask import Flask
from helpers import login, make_user
from sqlalchemy import create_engine, text

from idp import audit, create_app
from idp.config import Settings
from idp.extensions import db

pytestmark = pytest.mark.skipif(not PG_URL, reason="a statement timeout is PostgreSQL's (IDP_TEST_DATABASE_URL)")

PASSWORD = "correct horse battery"
# Without the timeout, the blocked request waits until the lock goes, this long after the request starts: long
# enough that it cannot pass for the timeout's answer.
LOCK_HELD = 8.0


@pytest.fixture
def timed_app(make_settings: Callable[..., Settings]) -> Iterator[Flask]:
    application = create_app(make_settings(database_statement_timeout_seconds=1))
    application.config["TESTING"] = True
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@contextmanager
def lock_held(table: str) -> Iterator[None]:
    """An exclusive lock on ``table`` in another connection (no read or write of it gets through) for the
    block, or LOCK_HELD seconds if that is shorter."""
    assert PG_URL is not None
    engine = create_engine(PG_URL)
    conn = engine.connect()
    conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
    released = threading.Lock()

    def release() -> None:
        if released.acquire(blocking=False):
            conn.rollback()
            conn.close()
            engine.dispose()

    timer = threading.Timer(LOCK_HELD, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        release()


def test_a_sign_in_blocked_on_a_lock_is_answered_503_within_the_timeout_and_leaves_nothing(
    timed_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    make_user("alice", PASSWORD)
    client = timed_app.test_client()
    # A sign-in records its audit event in the same commit as its session.
    with lock_held("audit_events"), caplog.at_level(logging.ERROR, logger="idp"):
        started = time.monotonic()
        blocked = login(client, "alice", PASSWORD, next="/")
        waited = time.monotonic() - started
    assert blocked.status_code == 503, blocked.get_data(as_text=True)[:300]
    assert waited < LOCK_HELD / 2, f"the request waited {waited:.1f} s for the lock"
    assert blocked.headers["Retry-After"] == "5"
    assert "briefly unavailable" in blocked.get_data(as_text=True)
    assert not any(h.startswith("idp_session=") for h in blocked.headers.getlist("Set-Cookie"))
    assert any("dependency unavailable on POST /login" in r.getMessage() and "statement timeout" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]

    # The lock gone, the same sign-in goes through, and the cancelled one left no event behind.
    assert login(client, "alice", PASSWORD, next="/").status_code == 302
    assert [e.outcome for e in audit.events(type="login")] == ["success"]


def test_the_timeout_is_on_every_connection_and_can_be_turned_off(make_settings: Callable[..., Settings]) -> None:
    for seconds, shown in ((3, "3s"), (0, "0")):
        application = create_app(make_settings(database_statement_timeout_seconds=seconds))
        with application.app_context():
            assert db.session.execute(text("SHOW statement_timeout")).scalar() == shown
            db.session.remove()
            db.engine.dispose()
