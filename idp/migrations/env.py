"""Alembic environment: runs against the app's own engine and models."""

import logging
import zlib

from alembic import context
from alembic.util.exc import CommandError
from flask import current_app
from sqlalchemy import Connection, text

import idp.store  # noqa: F401  (registers every model on the metadata)
from idp.extensions import db

log = logging.getLogger("idp.migrations")

# One advisory lock key for every instance of the bridge on this database.
_UPGRADE_LOCK = zlib.crc32(b"idp db upgrade")


def run_migrations_online() -> None:
    with db.engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A table that batch mode rebuilds is copied, dropped and renamed: with foreign keys enforced, the drop
            # would delete, by ON DELETE CASCADE, every row referring to it. Enforcement off for the migrations (a
            # PRAGMA that takes only outside a transaction), the references checked before they commit.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            _migrate(connection, sqlite)
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()


def _migrate(connection: Connection, sqlite: bool) -> None:
    context.configure(
        connection=connection,
        target_metadata=db.metadata,
        render_as_batch=sqlite,  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # The statement timeout (idp.database) is for requests: an index built on a large table may take
            # longer. LOCAL: for this transaction only, not for the pooled connection after it. A migration
            # that steps outside it (autocommit_block, for CREATE INDEX CONCURRENTLY) must SET its own.
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            # Several instances (init containers, compose services) may upgrade at once: the others wait
            # here, then read the version the first one committed and find nothing left to do, instead of
            # failing on the tables it is making. Per transaction: a migration that commits midway
            # (autocommit_block) must take it again.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
            # Once it is this instance's turn: a change that waits on a table's lock (a long request holding it)
            # fails after a minute, to be tried again, rather than hold every query on that table behind it.
            connection.exec_driver_sql("SET LOCAL lock_timeout = '60s'")
        migrations = context.get_context()
        before = set(migrations.get_current_heads())
        # What the command does: alembic names the step it hands over (upgrade, downgrade, do_stamp).
        upgrading = getattr(migrations.opts.get("fn"), "__name__", "") == "upgrade"
        if upgrading and (newer := sorted(rev for rev in before if not _known(rev))):
            # A newer release migrated this database, and this one is started again (a rollback, an old pod
            # restarting during a rollout): it runs on the schema as it is, which a release's migrations leave
            # usable by the release before (they add; what the old code still reads goes a release later).
            log.warning("the database is at revision %s, which this release does not know (a newer release "
                        "migrated it): no migration run", ", ".join(newer))
            return
        # Rows referring to nothing before the command (a hand edit with the sqlite3 shell, which enforces no
        # foreign keys) are not the migration's doing: only new ones stop it. An upgrade with nothing to run (every
        # start of the embedded database) checks nothing.
        at_head = before == set(context.script.get_heads())
        dangling = _dangling(connection) if sqlite and not (upgrading and at_head) else set()
        context.run_migrations()
        if sqlite and set(migrations.get_current_heads()) != before and (
                broken := _dangling(connection) - dangling):
            raise RuntimeError("a migration left rows referring to nothing (table, rowid, parent): "
                               f"{sorted(broken)[:5]}")


def _known(revision: str) -> bool:
    try:
        context.script.get_revision(revision)
    except CommandError:  # "Can't locate revision"
        return False
    return True


def _dangling(connection: Connection) -> set[tuple[object, ...]]:
    return {tuple(row[:3]) for row in connection.exec_driver_sql("PRAGMA foreign_key_check")}


if context.is_offline_mode():
    context.configure(url=current_app.config["SQLALCHEMY_DATABASE_URI"], target_metadata=db.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
