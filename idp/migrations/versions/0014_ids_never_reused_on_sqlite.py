"""ids never reused on SQLite

A user's id is their OIDC subject (sub), which OIDC Core 2 says is never reassigned; a service provider's id keys
what sessions record of it. SQLite gives a new row the highest id + 1, so the newest user's id, once deleted,
went to the next user made: a relying party keyed on sub would have let them into the deleted user's account.
AUTOINCREMENT makes SQLite never give an id twice (from this upgrade on: ids freed before it cannot be known).
PostgreSQL's sequences never did. The tables are rebuilt; env.py turns foreign key enforcement off meanwhile, so
that dropping the old table cascades to nothing.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 16:30:00
"""
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

_TABLES = ('users', 'service_providers')


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != 'sqlite':
        return
    for table in _TABLES:
        with op.batch_alter_table(table, recreate='always', table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
