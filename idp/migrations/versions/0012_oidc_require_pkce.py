"""oidc clients: require_pkce

A confidential client may be made to use PKCE as a public one must (RFC 9700 section 2.1.1); existing clients
keep what they had (not required).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 03:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if 'require_pkce' in {c['name'] for c in sa.inspect(op.get_bind()).get_columns('oidc_clients')}:
        return  # left by a downgrade on SQLite (below)
    # A constant default, not sa.false(): with an expression Alembic rebuilds the table on SQLite, and dropping
    # the old one deletes, by ON DELETE CASCADE, every row that refers to a client (its app assignments).
    with op.batch_alter_table('oidc_clients') as batch_op:
        batch_op.add_column(sa.Column('require_pkce', sa.Boolean(), server_default='0', nullable=False))


def downgrade() -> None:
    # On SQLite a dropped column rebuilds the table, with the cascade above: the column stays there, unread.
    if op.get_context().dialect.name != 'sqlite':
        op.drop_column('oidc_clients', 'require_pkce')
