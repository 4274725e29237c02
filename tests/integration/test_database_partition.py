"""A PostgreSQL server that goes silent on open connections (a failover took its host away, the network between
is cut) is given up after IDP_DATABASE_NETWORK_TIMEOUT_SECONDS: the request on such a connection is answered 503,
instead of waiting with its worker thread through TCP's retries (about 15 minutes), and once the network is back
the bridge works again without a restart. Unlike a stopped or restarted server (tests/integration/test_faults.py),
nothing acknowledges here: this module's own PostgreSQL is cut off by dropping its port's packets (tests/services.py).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import PG_URL, apps_from
from flask import Flask
from flask.testing import FlaskClient
from helpers import DEFAULT_PASSWORD, Aside, login, migrate
from services import PostgresServer, cut_off
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from werkzeug.test import TestResponse

from idp.config import Settings
from idp.database import CONNECT_TIMEOUT

# Once, in the PostgreSQL pass (tc's root queue on the loopback is one for the machine). The SQLite pass beside it
# meets that queue for the cut's duration, which lets every other port's packets straight through.
pytestmark = pytest.mark.skipif(not PG_URL, reason="runs in the PostgreSQL pass (IDP_TEST_DATABASE_URL)")

BOUND = 2  # IDP_DATABASE_NETWORK_TIMEOUT_SECONDS here
# The answer must come within the bound, plus one new connection's attempt (refused by the same cut: the 503
# path opens no other), plus slack for a loaded machine; the password hash is done before the cut.
PROMPT = BOUND + CONNECT_TIMEOUT + 3.0


@pytest.fixture(scope="module")
def pg(signing_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        migrate(Settings(data_dir=tmp_path_factory.mktemp("migrate"), database_url=server.url,
                         signing_key_file=signing_files[0], signing_cert_file=signing_files[1]), ["alice"])
        yield server
    finally:
        server.remove()


@pytest.fixture
def app_on(pg: PostgresServer, tmp_path: Path, signing_files: tuple[Path, Path]) -> Iterator[Callable[..., Flask]]:
    """An app on this module's server with the bound, and these settings."""
    yield from apps_from(functools.partial(
        Settings, data_dir=tmp_path, database_url=pg.url, signing_key_file=signing_files[0],
        signing_cert_file=signing_files[1], database_network_timeout_seconds=BOUND))


def assert_unavailable(resp: TestResponse) -> None:
    assert resp.status_code == 503, resp.get_data(as_text=True)[:300]
    assert resp.headers["Retry-After"] == "5"
    assert "briefly unavailable" in resp.get_data(as_text=True)


def signed_in_client(app: Flask) -> FlaskClient:
    client = app.test_client()
    with app.app_context():
        assert login(client, "alice", DEFAULT_PASSWORD, next="/").status_code == 302
    return client


def test_a_pooled_connection_cut_off_is_given_up_and_the_request_answered_503(
    pg: PostgresServer, app_on: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The signed-in user's next page checks its pooled connection out with a pre-ping that nobody acknowledges
    (tcp_user_timeout), then cannot open another (connect_timeout): 503. The network back, the same session
    works at once."""
    app = app_on()
    client = signed_in_client(app)
    with cut_off(pg.port), caplog.at_level(logging.ERROR, logger="idp"):
        assert_unavailable(Aside(lambda: client.get("/")).answer(PROMPT))
    assert any(r.getMessage().startswith("dependency unavailable on GET /: OperationalError")
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert client.get("/").status_code == 200


def test_a_query_awaiting_its_reply_when_the_server_went_silent_is_given_up(
    pg: PostgresServer, app_on: Callable[..., Flask]
) -> None:
    """A sign-in's query has reached the server (it waits on a lock held elsewhere) when the server goes silent:
    nothing is left to acknowledge, so only keepalives can tell, and the sign-in is answered 503 within the
    bound. The statement timeout is off, so that it cannot be what answers."""
    app = app_on(database_statement_timeout_seconds=0)
    client = app.test_client()
    holder = create_engine(pg.url, poolclass=NullPool)
    with holder.connect() as lock:
        # A sign-in records its audit event in the same commit as its session.
        lock.execute(text("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE"))
        sign_in = Aside(lambda: _login(app, client))
        _wait_for_a_lock_wait(pg)
        with cut_off(pg.port):
            answer = sign_in.answer(PROMPT)
        lock.rollback()
    holder.dispose()
    assert_unavailable(answer)
    assert _login(app, client).status_code == 302


def _login(app: Flask, client: FlaskClient) -> TestResponse:
    with app.app_context():
        return login(client, "alice", DEFAULT_PASSWORD, next="/")


def _wait_for_a_lock_wait(pg: PostgresServer) -> None:
    """Until a query of the server waits on a lock (the sign-in's insert has arrived)."""
    probe = create_engine(pg.url, poolclass=NullPool)
    try:
        for _ in range(100):
            with probe.connect() as conn:
                if conn.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")):
                    return
            time.sleep(0.05)
        raise AssertionError("the sign-in never waited on the lock")
    finally:
        probe.dispose()
