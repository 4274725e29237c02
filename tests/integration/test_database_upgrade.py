"""`idp db upgrade` on a database of its own: run by several instances at once, as the Kubernetes Deployment's
init containers and a scaled compose service do (every one succeeds and the schema is migrated once, instead of
all but one failing on the tables the first is making, their pods restarting in back-off); and what an upgrade
does to rows already stored."""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import access_rows as rows
import click
import pytest
from alembic.script import ScriptDirectory
from conftest import PG_URL
from flask_migrate import downgrade, upgrade
from helpers import IDP, make_user
from saml_peers import python3_saml_metadata, register_sp
from sqlalchemy import MetaData, Table, create_engine, delete, make_url, select, text
from sqlalchemy.exc import IntegrityError

from idp import create_app
from idp.authn import directory
from idp.authn.connectors import chain
from idp.config import Settings
from idp.database import MIGRATIONS
from idp.extensions import db
from idp.store import AppAssignment, Assignment, Directory, Group, OidcClient, PersistentNameId, ServiceProvider

INSTANCES = 3


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    """A database of its own, empty: a PostgreSQL database dropped after the test, or a SQLite file."""
    if not PG_URL:
        yield f"sqlite:///{tmp_path / 'upgraded.db'}"
        return
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


@pytest.mark.skipif(not PG_URL, reason="several instances share PostgreSQL (IDP_TEST_DATABASE_URL)")
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


def test_an_upgrade_merges_identical_grants_into_the_one_that_grants_longest(
        empty_database: str, tmp_path: Path, signing_files: tuple[Path, Path]) -> None:
    # Rows as two instances could store them before grants were unique (revision 0005).
    app = create_app(Settings(data_dir=tmp_path, database_url=empty_database, signing_key_file=signing_files[0],
                              signing_cert_file=signing_files[1], log_format="text"))
    soon, later = datetime(2030, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0004")
        alice = make_user("alice")
        admin, prod = rows.permission_set("Admin"), rows.account("111122223333", "Prod")
        # The table as it was then (the model has columns added since): the row through a reflection of it.
        table = Table("oidc_clients", MetaData(), autoload_with=db.session.connection())
        now = datetime.now(UTC)
        reports = OidcClient(id=db.session.execute(table.insert().values(
            client_id="reports", name="Reports", public=False, auth_method="client_secret_basic", redirect_uris=[],
            post_logout_redirect_uris=[], grant_types=[], scopes=[], id_token_alg="RS256", first_party=False,
            claim_map=[], created_at=now, updated_at=now)).inserted_primary_key[0])
        db.session.commit()
        for until in (soon, None, later):
            rows.assign(admin, user=alice, account=prod, until=until)
        for until in (soon, later):
            rows.assign(admin, group="staff", account=prod, until=until)
            rows.assign_app(reports, group="staff", until=until)
        kept_alone = rows.assign(admin, group="ops", account=prod, until=soon)
        db.engine.dispose()

        upgrade(directory=MIGRATIONS)
        grants = {(a.user_id, a.group_name, a.until) for a in db.session.scalars(select(Assignment))}
        assert grants == {(alice.id, None, None), (None, "staff", later), (None, "ops", soon)}
        assert [a.until for a in db.session.scalars(select(AppAssignment))] == [later]
        assert db.session.get(Assignment, kept_alone.id) is not None
        # And from now on, the database itself refuses a second row for a grant.
        with pytest.raises(IntegrityError):
            rows.assign(admin, group="ops", account=prod)
        db.session.rollback()
        db.engine.dispose()


def test_an_upgrade_removes_unused_groups_whose_names_differ_only_in_case_and_names_the_others(
        empty_database: str, tmp_path: Path, signing_files: tuple[Path, Path]) -> None:
    app = create_app(Settings(data_dir=tmp_path, database_url=empty_database, signing_key_file=signing_files[0],
                              signing_cert_file=signing_files[1], log_format="text"))
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0005")
        # As two instances could store them before the database refused it (revision 0006): Staff and staff
        # both in use, ops and OPS made at once and OPS left empty, Dev and DEV both unused.
        alice, bob = make_user("alice"), make_user("bob")
        staff, staff_too, ops = Group(name="Staff"), Group(name="staff"), Group(name="ops")
        db.session.add_all([staff, staff_too, ops, Group(name="OPS"), Group(name="Dev"), Group(name="DEV")])
        alice.groups, bob.groups = [staff, ops], [staff_too]
        db.session.commit()
        db.engine.dispose()
        with pytest.raises(click.ClickException) as refused:
            upgrade(directory=MIGRATIONS)
        assert refused.value.message.startswith(
            "groups whose names differ only in case, each with members or assignments: Staff, staff. ")
        # Nothing of it stayed: the schema is as it was, and the groups too.
        db.session.rollback()
        assert db.session.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "0005"
        assert len(db.session.scalars(select(Group.name)).all()) == 6

        bob.groups = [staff]  # the admin merges staff into Staff
        db.session.execute(delete(Group).where(Group.name == "staff"))
        db.session.commit()
        db.engine.dispose()
        upgrade(directory=MIGRATIONS)
        # The unused twins went (the first made of two unused stays); the used ones stayed.
        assert sorted(db.session.scalars(select(Group.name))) == ["Dev", "Staff", "ops"]
        with pytest.raises(IntegrityError):
            db.session.add(Group(name="STAFF"))
            db.session.commit()
        db.session.rollback()
        db.engine.dispose()


def test_an_upgrade_keeps_a_stored_directory_in_clear_working_and_says_so(
        empty_database: str, tmp_path: Path, signing_files: tuple[Path, Path]) -> None:
    """ldap:// to another machine without StartTLS is refused from revision 0009 on, unless allow_plaintext:
    a directory stored before that is marked so by the upgrade, not broken by it."""
    app = create_app(Settings(data_dir=tmp_path, database_url=empty_database, signing_key_file=signing_files[0],
                              signing_cert_file=signing_files[1], log_format="text"))
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0008")
        base = {"base_dn": "dc=corp,dc=example", "timeout": 5}
        db.session.add_all([
            Directory(name="clear", type="ldap", settings={**base, "urls": ["ldap://ldap.corp.example"]}),
            Directory(name="tls", type="ldap", settings={**base, "urls": ["ldap://ldap.corp.example"],
                                                         "start_tls": True}),
            Directory(name="near", type="ldap", settings={**base, "urls": ["ldap://127.0.0.1:389"]})])
        db.session.commit()
        db.engine.dispose()

        upgrade(directory=MIGRATIONS)
        stored = {d.name: d.settings for d in db.session.scalars(select(Directory))}
        assert stored["clear"]["allow_plaintext"] is True
        assert "allow_plaintext" not in stored["tls"] and "allow_plaintext" not in stored["near"]
        assert all(not c.problems for c in chain.configured() if c.name in stored)
        db.session.rollback()
        db.engine.dispose()
        downgrade(directory=MIGRATIONS, revision="0008")  # the revisions before refuse a setting they do not know
        assert all("allow_plaintext" not in d.settings for d in db.session.scalars(select(Directory)))
        db.session.rollback()
        db.engine.dispose()



def test_an_upgrade_makes_a_service_provider_set_to_nothing_signed_get_signed_assertions(
        empty_database: str, tmp_path: Path, signing_files: tuple[Path, Path]) -> None:
    """From revision 0010 on, neither a signed Response nor a signed Assertion is refused; an SP stored so
    before gets signed assertions, and keeps what it had otherwise."""
    app = create_app(Settings(data_dir=tmp_path, database_url=empty_database, signing_key_file=signing_files[0],
                              signing_cert_file=signing_files[1], log_format="text"))
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0009")
        sp = register_sp(python3_saml_metadata())
        db.session.execute(text("UPDATE service_providers SET sign_response = :f, sign_assertion = :f"),
                           {"f": False})
        db.session.commit()
        db.engine.dispose()

        upgrade(directory=MIGRATIONS)
        stored = db.session.get(ServiceProvider, sp.id)
        assert stored is not None and stored.sign_assertion is True and stored.sign_response is False
        db.session.rollback()
        db.engine.dispose()


def test_an_upgrade_and_a_downgrade_keep_what_refers_to_an_oidc_client(
        empty_database: str, tmp_path: Path, signing_files: tuple[Path, Path]) -> None:
    """A column added to oidc_clients rebuilds the table on SQLite if its default is an expression, and dropping
    the old table deleted, by ON DELETE CASCADE, every app assignment of every client (revision 0012's first
    version). Rows as revision 0011 stored them, through a reflection of its tables."""
    app = create_app(Settings(data_dir=tmp_path, database_url=empty_database, signing_key_file=signing_files[0],
                              signing_cert_file=signing_files[1], log_format="text"))
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0011")
        clients = Table("oidc_clients", MetaData(), autoload_with=db.session.connection())
        now = datetime.now(UTC)
        client_pk = db.session.execute(clients.insert().values(
            client_id="reports", name="Reports", public=False, auth_method="client_secret_basic", redirect_uris=[],
            post_logout_redirect_uris=[], grant_types=[], scopes=[], id_token_alg="RS256", first_party=False,
            claim_map=[], open_to_all=False, access_token_format="opaque", created_at=now,
            updated_at=now)).inserted_primary_key[0]
        db.session.execute(text("INSERT INTO app_assignments (client_id, group_name, created_by, created_at) "
                                "VALUES (:client, 'staff', 'test', :now)"), {"client": client_pk, "now": now})
        db.session.commit()
        db.engine.dispose()

        upgrade(directory=MIGRATIONS)
        assert [(a.client_id, a.group_name) for a in db.session.scalars(select(AppAssignment))] == [
            (client_pk, "staff")]
        assert db.session.scalar(select(OidcClient.require_pkce).where(OidcClient.id == client_pk)) is False
        db.session.rollback()
        db.engine.dispose()
        downgrade(directory=MIGRATIONS, revision="0011")
        assert db.session.execute(text("SELECT count(*) FROM app_assignments")).scalar() == 1
        db.session.rollback()
        db.engine.dispose()
        upgrade(directory=MIGRATIONS)  # and up again
        assert db.session.execute(text("SELECT count(*) FROM app_assignments")).scalar() == 1
        db.session.rollback()
        db.engine.dispose()
        downgrade(directory=MIGRATIONS, revision="0003")  # past 0004, which added a column to the clients too
        assert db.session.execute(text("SELECT count(*) FROM app_assignments")).scalar() == 1
        db.session.rollback()
        db.engine.dispose()
        upgrade(directory=MIGRATIONS)
        assert db.session.execute(text("SELECT count(*) FROM app_assignments")).scalar() == 1
        db.session.rollback()
        db.engine.dispose()


def test_ids_are_never_given_twice_and_the_upgrade_that_makes_it_so_keeps_every_row(
        empty_database: str, tmp_path: Path, signing_files: tuple[Path, Path]) -> None:
    """A user's id is their OIDC subject (never reassigned, OIDC Core 2). SQLite gave the newest user's id, once
    deleted, to the next user made; revision 0014 rebuilds users and service_providers with AUTOINCREMENT, and
    the rows referring to them stay (dropping the old table with foreign keys enforced cascades to them)."""
    app = create_app(Settings(data_dir=tmp_path, database_url=empty_database, signing_key_file=signing_files[0],
                              signing_cert_file=signing_files[1], log_format="text"))

    def counts() -> dict[str, int]:
        found = {t: db.session.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one()  # noqa: S608 - our names
                 for t in db.metadata.tables}
        db.session.rollback()
        db.engine.dispose()
        return found

    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0013")
        make_user("alice", groups=["staff"])
        bob = make_user("bob", groups=["staff"])
        sp = register_sp(python3_saml_metadata())
        db.session.add(PersistentNameId(user_id=bob.id, sp_id=sp.id, value="opaque-1"))
        db.session.add(Assignment(user_id=bob.id, account_id=rows.account("111111111111", "Prod").id,
                                  permission_set_id=rows.permission_set("Admin").id, created_by="test"))
        db.session.commit()
        before = counts()

        upgrade(directory=MIGRATIONS)
        assert counts() == before
        deleted = bob.id
        directory.delete_user("bob", actor="test")
        db.session.commit()
        assert make_user("carol").id > deleted  # not bob's subject
        db.session.commit()
        sp_id = sp.id
        db.session.delete(db.session.get(ServiceProvider, sp_id))
        db.session.commit()
        assert register_sp(python3_saml_metadata()).id > sp_id
        db.session.rollback()
        db.engine.dispose()

        kept = counts()
        downgrade(directory=MIGRATIONS, revision="0013")
        assert counts() == kept


def test_rows_referring_to_nothing_from_before_do_not_stop_an_upgrade_or_a_start(
        tmp_path: Path, signing_files: tuple[Path, Path]) -> None:
    """SQLite's shell enforces no foreign keys: a hand edit may leave a row referring to nothing. The check after
    an upgrade (foreign keys are off while it runs) stops only on rows the upgrade left so, and a start with
    nothing to upgrade checks nothing."""
    path = tmp_path / "edited.db"
    app = create_app(Settings(data_dir=tmp_path, database_url=f"sqlite:///{path}", signing_key_file=signing_files[0],
                              signing_cert_file=signing_files[1], log_format="text"))
    with app.app_context():
        upgrade(directory=MIGRATIONS, revision="0013")
        db.engine.dispose()
        with sqlite3.connect(path) as edit:
            edit.execute("INSERT INTO group_members (user_id, group_id) VALUES (998, 999)")
        upgrade(directory=MIGRATIONS)
        upgrade(directory=MIGRATIONS)  # nothing to do
        assert db.session.execute(text("SELECT count(*) FROM group_members")).scalar() == 1
        db.session.rollback()
        db.engine.dispose()
        downgrade(directory=MIGRATIONS, revision="0013")  # from the head: the row was there before it too
        assert db.session.execute(text("SELECT count(*) FROM group_members")).scalar() == 1
        db.session.rollback()
        db.engine.dispose()


def test_a_release_started_again_on_a_database_a_newer_one_migrated_runs_on_it(
        empty_database: str, tmp_path: Path) -> None:
    """A rollback (or an old pod restarting during a rollout) runs `idp db upgrade` again on a database a newer
    release migrated: it says so and migrates nothing, rather than fail (the init container in a crash loop, the
    rollback stuck). The migrations of a release leave the schema usable by the one before."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("IDP_")}, "IDP_DATA_DIR": str(tmp_path),
           "IDP_DATABASE_URL": empty_database, "IDP_LOG_FORMAT": "text"}
    assert subprocess.run([IDP, "db", "upgrade"], env=env, capture_output=True, timeout=120).returncode == 0
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeedbeef'"))
    engine.dispose()
    again = subprocess.run([IDP, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert "the database is at revision f00dfeedbeef, which this release does not know" in again.stderr
    listed = subprocess.run([IDP, "user", "list"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.startswith("USERNAME"), listed.stderr
    # Its own upgrade is what is skipped, not alembic's way out: a stamp still sets the revision it is told.
    stamped = subprocess.run([IDP, "db", "stamp", "--purge", "head"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert stamped.returncode == 0, stamped.stderr
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == ScriptDirectory(
            MIGRATIONS).get_current_head()
    engine.dispose()
