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
from conftest import PG_URL, REDIS_URL
from flask import Flask
from flask_migrate import upgrade
from helpers import login, make_user
from sqlalchemy import create_engine, func, select, text

from idp import audit, create_app
from idp.config import Settings
from idp.database import MIGRATIONS
from idp.extensions import db
from idp.store import SsoSessionRow

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
    released = threading.Lock()
    with engine.connect() as conn:

        def release() -> None:
            if released.acquire(blocking=False):
                conn.rollback()

        timer = threading.Timer(LOCK_HELD, release)
        try:
            conn.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            timer.start()
            yield
        finally:
            timer.cancel()
            release()
            if timer.ident is not None:  # started
                timer.join()
    engine.dispose()


def test_a_sign_in_blocked_on_a_lock_is_answered_503_within_the_timeout_and_signs_nobody_in(
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
    if not REDIS_URL:  # in Redis, a session written before the cancelled commit is left unreachable until it expires
        assert db.session.scalar(select(func.count()).select_from(SsoSessionRow)) == 0
    assert any("dependency unavailable on POST /login" in r.getMessage() and "statement timeout" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]

    # The lock gone, the same sign-in goes through, and the cancelled one left no event behind.
    assert login(client, "alice", PASSWORD, next="/").status_code == 302
    assert [e.outcome for e in audit.events(type="login")] == ["success"]


def shown(make_settings: Callable[..., Settings], setting: str, **overrides: object) -> str:
    """What the app's connections show for ``setting`` (SHOW), with these settings."""
    application = create_app(make_settings(**overrides))
    with application.app_context():
        try:
            return str(db.session.execute(text(f"SHOW {setting}")).scalar())
        finally:
            db.session.remove()
            db.engine.dispose()


def test_the_timeout_is_on_every_connection_and_can_be_turned_off(make_settings: Callable[..., Settings]) -> None:
    assert shown(make_settings, "statement_timeout", database_statement_timeout_seconds=3) == "3s"
    assert shown(make_settings, "statement_timeout", database_statement_timeout_seconds=0) == "0"


def test_options_in_the_database_url_are_kept_beside_the_timeout(make_settings: Callable[..., Settings]) -> None:
    assert PG_URL is not None and "?" not in PG_URL
    url = PG_URL + "?options=-c%20lock_timeout%3D2500"
    assert shown(make_settings, "lock_timeout", database_url=url, database_statement_timeout_seconds=3) == "2500ms"
    assert shown(make_settings, "statement_timeout", database_url=url, database_statement_timeout_seconds=3) == "3s"


def test_the_connections_are_named_unless_the_operator_names_them(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DBA tells the bridge's connections in pg_stat_activity; a name the URL or PGAPPNAME gives wins."""
    assert PG_URL is not None and "?" not in PG_URL
    monkeypatch.delenv("PGAPPNAME", raising=False)
    assert shown(make_settings, "application_name") == "idp"
    assert shown(make_settings, "application_name", database_url=PG_URL + "?application_name=sso-eu") == "sso-eu"
    monkeypatch.setenv("PGAPPNAME", "sso-us")
    assert shown(make_settings, "application_name") == "sso-us"


def test_migrations_leave_the_timeout_on_the_pooled_connection(make_settings: Callable[..., Settings]) -> None:
    """Alembic runs without the timeout (SET LOCAL in idp/migrations/env.py), and only for its transaction."""
    application = create_app(make_settings(database_statement_timeout_seconds=3))
    with application.app_context():
        try:
            upgrade(directory=MIGRATIONS)  # at head already: its transaction still runs
            assert db.session.execute(text("SHOW statement_timeout")).scalar() == "3s"
        finally:
            db.session.remove()
            db.engine.dispose()


def test_an_admin_command_blocked_on_a_lock_fails_in_one_line_with_the_way_round(timed_app: Flask) -> None:
    """The idp command runs under the same timeout: a command waiting on a lock is cancelled, and says so in one
    line, with the setting that lifts the limit for a long report, not with a stack trace."""
    from idp.cli import cli

    make_user("alice", PASSWORD)
    db.session.commit()
    with lock_held("users"):
        started = time.monotonic()
        result = timed_app.test_cli_runner().invoke(cli, ["user", "list"])
        waited = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert waited < LOCK_HELD / 2, f"waited {waited:.1f} s: not the 1 s timeout"
    assert "a dependency did not answer" in result.output and "statement timeout" in result.output
    assert "IDP_DATABASE_STATEMENT_TIMEOUT_SECONDS=0" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    db.session.rollback()  # the command ran in this test's app context; an idp process would have ended here
    assert "alice" in timed_app.test_cli_runner().invoke(cli, ["user", "list"]).output  # the lock gone: it works
