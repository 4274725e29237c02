"""Alembic environment: runs against the app's own engine and models."""

from alembic import context
from flask import current_app

import idp.store  # noqa: F401  (registers every model on the metadata)
from idp.extensions import db


def run_migrations_online() -> None:
    with db.engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=db.metadata,
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # The statement timeout (idp.database) is for requests: an index built on a large table may take
                # longer. LOCAL: for this transaction only, not for the pooled connection after it. A migration
                # that steps outside it (autocommit_block, for CREATE INDEX CONCURRENTLY) must SET its own.
                connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=current_app.config["SQLALCHEMY_DATABASE_URI"], target_metadata=db.metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
