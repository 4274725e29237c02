"""`idp db upgrade` run by several instances at once, as the Kubernetes Deployment's init containers and a
scaled compose service do: every one succeeds and the schema is migrated once, instead of all but one failing
on the tables the first is making (and their pods restarting in back-off)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from conftest import PG_URL
from helpers import IDP
from sqlalchemy import create_engine, make_url, text

from idp.database import MIGRATIONS

pytestmark = pytest.mark.skipif(not PG_URL, reason="several instances share PostgreSQL (IDP_TEST_DATABASE_URL)")

INSTANCES = 3


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database of its own, empty, dropped after the test."""
    assert PG_URL is not None
    name = f"idp_upgrade_{secrets.token_hex(4)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def test_instances_upgrading_at_once_all_succeed_and_migrate_once(empty_database: str, tmp_path: Path) -> None:
    env = {**os.environ, "IDP_DATABASE_URL": empty_database, "IDP_DATA_DIR": str(tmp_path)}
    runs = [subprocess.Popen([IDP, "db", "upgrade"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True) for _ in range(INSTANCES)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]

    assert [run.returncode for run in runs] == [0] * INSTANCES, "\n----\n".join(outputs)
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    engine = create_engine(empty_database)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
        assert conn.execute(text("SELECT count(*) FROM pg_tables WHERE tablename = 'users'")).scalar_one() == 1
    engine.dispose()
