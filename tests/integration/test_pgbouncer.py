"""Behind PgBouncer in transaction mode, set up as deploy/README.md tells: no statement timeout in the startup
options (PgBouncer refuses the parameter) and no prepared statements (IDP_DATABASE_PREPARED_STATEMENTS=false: a
transaction may run on a server connection that never saw the statement psycopg prepared on another). Migrations,
then sign-ins and signed-in pages from several threads at once, all over PgBouncer's one server connection."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PG_URL
from flask import Flask
from helpers import DEFAULT_PASSWORD, login, migrate
from services import PgBouncer, PostgresServer

from idp import create_app
from idp.config import Settings
from idp.extensions import db

# Once, in the PostgreSQL pass (it brings its own PostgreSQL and PgBouncer).
pytestmark = pytest.mark.skipif(not PG_URL, reason="runs in the PostgreSQL pass (IDP_TEST_DATABASE_URL)")

THREADS, REQUESTS = 4, 40


@pytest.fixture
def pooled(tmp_path: Path, signing_files: tuple[Path, Path]) -> Iterator[Flask]:
    """An app whose database is a fresh PostgreSQL behind PgBouncer, migrated through it."""
    server = PostgresServer()
    try:
        server.start()
        bouncer = PgBouncer(server)
        bouncer.start()
        try:
            settings = Settings(
                data_dir=tmp_path, database_url=bouncer.url, signing_key_file=signing_files[0],
                signing_cert_file=signing_files[1], database_statement_timeout_seconds=0,
                database_prepared_statements=False)
            migrate(settings, ["alice"])
            app = create_app(settings)
            app.config["TESTING"] = True
            yield app
            with app.app_context():
                db.engine.dispose()
        finally:
            bouncer.stop()
    finally:
        server.remove()


def test_sign_ins_and_pages_from_several_threads_all_go_through(pooled: Flask) -> None:
    answers: list[int] = []  # list.append is atomic; a Counter's += is not
    errors: list[BaseException] = []

    def browse() -> None:
        client = pooled.test_client()
        try:
            with pooled.app_context():
                for i in range(REQUESTS):
                    # Every eighth a sign-in (throttle, user, session and audit rows); the others the signed-in
                    # home page (the session read, the same statements again and again).
                    if i % 8 == 0:
                        resp = login(client, "alice", DEFAULT_PASSWORD, next="/", force=True)
                    else:
                        resp = client.get("/")
                    answers.append(resp.status_code)
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=browse, daemon=True) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a thread's requests hang"
    assert not errors, errors
    statuses = Counter(answers)
    assert statuses == {302: THREADS * REQUESTS // 8, 200: THREADS * REQUESTS * 7 // 8}, statuses
