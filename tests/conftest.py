"""Shared fixtures: an app on a fresh database per test, keys made once, a live server, a movable clock."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import SHORT_IDLE, SHORT_MAX

# The session's OpenLDAP server (fixture ``slapd``), started on first use.
from ldap_server import slapd, spare_slapd  # noqa: F401

# The session's Samba AD domain controller (fixture ``samba_ad``), provisioned on first use.
from samba_ad import samba_ad  # noqa: F401
from sqlalchemy import create_engine, text
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from idp import clock, create_app
from idp.authn.connectors.chain import close_all as close_connectors
from idp.config import Settings
from idp.extensions import db
from idp.keys import generate_key_pair

PG_URL = os.environ.get("IDP_TEST_DATABASE_URL")
# The production pass of tests/run keeps shared state in Redis; each test starts with it empty.
REDIS_URL = os.environ.get("IDP_TEST_REDIS_URL")


def pytest_report_header() -> str:
    return (f"database: {'PostgreSQL ' + PG_URL if PG_URL else 'SQLite'}; "
            f"shared state: {'Redis ' + REDIS_URL if REDIS_URL else 'in the database'}")


@pytest.fixture(scope="session")
def signing_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One IdP key pair for the whole session: RSA generation is too slow to repeat per test."""
    d = tmp_path_factory.mktemp("keys")
    key_pem, cert_pem = generate_key_pair("127.0.0.1")
    (d / "idp.key").write_bytes(key_pem)
    (d / "idp.key").chmod(0o600)
    (d / "idp.crt").write_bytes(cert_pem)
    return d / "idp.key", d / "idp.crt"


@pytest.fixture(scope="session")
def _database_template(tmp_path_factory: pytest.TempPathFactory, signing_files: tuple[Path, Path]) -> Path:
    """Migrate once per session; each test starts from a copy (SQLite) or truncated tables (PostgreSQL)."""
    d = tmp_path_factory.mktemp("template")
    if PG_URL:
        engine = create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        app = create_app(Settings(data_dir=d, database_url=PG_URL, signing_key_file=signing_files[0],
                                  signing_cert_file=signing_files[1], log_format="text"))
        from flask_migrate import upgrade

        from idp.database import MIGRATIONS
        with app.app_context():
            upgrade(directory=MIGRATIONS)
            db.engine.dispose()
    else:
        create_app(Settings(data_dir=d, signing_key_file=signing_files[0],
                            signing_cert_file=signing_files[1], log_format="text"))
    return d


@pytest.fixture
def make_settings(
    tmp_path: Path, signing_files: tuple[Path, Path], _database_template: Path
) -> Callable[..., Settings]:
    """Settings for a fresh instance; keyword arguments override fields."""
    if PG_URL:
        engine = create_engine(PG_URL)
        with engine.begin() as conn:
            tables = [r[0] for r in conn.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' AND tablename <> 'alembic_version'"))]
            sequences = [r[0] for r in conn.execute(text(
                "SELECT sequencename FROM pg_sequences WHERE schemaname='public'"))]
            # DELETE with the foreign-key triggers off, not TRUNCATE ... RESTART IDENTITY CASCADE: the same empty
            # tables and restarted ids in 7 ms instead of 50 (TRUNCATE makes new files for every table), which
            # was a minute of the PostgreSQL pass. (Turning the triggers off takes a superuser, as tests/run's is.)
            quote = conn.dialect.identifier_preparer.quote
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("".join(f"DELETE FROM {quote(t)};" for t in tables)  # noqa: S608 (catalog names)
                              + "".join(f"ALTER SEQUENCE {quote(s)} RESTART;" for s in sequences)))
        engine.dispose()
    else:
        shutil.copy(_database_template / "idp.db", tmp_path / "idp.db")
    if REDIS_URL:
        with redis.Redis.from_url(REDIS_URL) as r:
            r.flushdb()

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": tmp_path,
            "database_url": PG_URL,
            "redis_url": REDIS_URL,
            "signing_key_file": signing_files[0],
            "signing_cert_file": signing_files[1],
            "secret_key": "test-secret-key-of-32-characters-or-more",
            "log_format": "text",
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return make


def apps_from(settings: Callable[..., Settings]) -> Iterator[Callable[..., Flask]]:
    """For a fixture to yield from: a maker of apps from ``settings(**overrides)``, whose database connections are
    closed after the test."""
    made: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        application = create_app(settings(**overrides))
        application.config["TESTING"] = True
        made.append(application)
        return application

    yield make
    for application in made:
        with application.app_context():
            db.engine.dispose()


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Flask]]:
    """Apps beside the test's own (other instances, another process's view of the data dir)."""
    yield from apps_from(make_settings)


@pytest.fixture
def generated_app(make_app: Callable[..., Flask]) -> Flask:
    """An instance that generates and rotates its own keys (no IDP_SIGNING_KEY_FILE), on the test's database."""
    return make_app(signing_key_file=None, signing_cert_file=None)


@pytest.fixture
def app(make_settings: Callable[..., Settings]) -> Iterator[Flask]:
    application = create_app(make_settings())
    application.config["TESTING"] = True
    with application.app_context():
        yield application
        close_connectors()  # pooled directory connections
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def short_app(make_settings: Callable[..., Settings]) -> Iterator[Flask]:
    """An app whose sessions end soon enough for a frozen clock to pass: idle 10 minutes, absolute 40."""
    application = create_app(make_settings(session_idle_seconds=SHORT_IDLE, session_max_seconds=SHORT_MAX))
    application.config["TESTING"] = True
    with application.app_context():
        yield application
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.current = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


@pytest.fixture
def frozen_clock() -> Iterator[Clock]:
    c = Clock()
    clock.set_clock(c)
    yield c
    clock.set_clock(None)


class _OneRequestPerConnection(WSGIRequestHandler):
    # No keep-alive: a client reusing a pooled connection just as the server drops it gets a reset (seen once
    # in CI, mid-test); a connection per request costs nothing on loopback.
    protocol_version = "HTTP/1.0"


class LiveServer:
    """The app served over real HTTP on a free loopback port, so that SP libraries talk to it as to any IdP."""

    def __init__(self, make_settings: Callable[..., Settings], **overrides: object) -> None:
        self._app: Flask | None = None
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, self._dispatch, threaded=True,
                                                   request_handler=_OneRequestPerConnection)
        # A client that connects and resets before accept() would leave a blocking accept() waiting forever,
        # and shutdown() with it; with a timeout, serve_forever just goes round again.
        self.server.socket.settimeout(1.0)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.app = create_app(make_settings(base_url=self.url, **overrides))
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _dispatch(self, environ, start_response):  # type: ignore[no-untyped-def]
        return self.app(environ, start_response)

    def stop(self) -> None:
        self.server.shutdown()
        self._thread.join(5)


@pytest.fixture
def live_server(make_settings: Callable[..., Settings]) -> Iterator[LiveServer]:
    server = LiveServer(make_settings)
    with server.app.app_context():
        yield server
        close_connectors()
        db.session.remove()
    server.stop()
    with server.app.app_context():
        db.engine.dispose()


@pytest.fixture
def with_directories(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Flask]]:
    """An app whose IDP_CONFIG lists these directories (and these settings), its context pushed."""
    from flask.ctx import AppContext

    from idp.authn.connectors.chain import close_all

    contexts: list[AppContext] = []

    def build(*directories: object, **overrides: object) -> Flask:
        app = create_app(make_settings(directories=directories, **overrides))
        app.config["TESTING"] = True
        contexts.append(app.app_context())
        contexts[-1].push()
        return app

    yield build
    for ctx in reversed(contexts):
        close_all()
        db.session.remove()
        db.engine.dispose()
        ctx.pop()


@pytest.fixture
def directory_server(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., LiveServer]]:
    """A live server whose IDP_CONFIG lists these directories; its connector pools closed afterwards."""
    from idp.authn.connectors.chain import close_all

    servers: list[LiveServer] = []

    def start(*directories: object) -> LiveServer:
        server = LiveServer(make_settings, directories=directories)
        servers.append(server)
        return server

    yield start
    for server in servers:
        with server.app.app_context():
            close_all()
        server.stop()
        with server.app.app_context():
            close_all()
            db.engine.dispose()


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving files from a folder."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()
    thread.join(5)
