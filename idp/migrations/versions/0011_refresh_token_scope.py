"""refresh token scope

A refresh that asks for less scope than its refresh token holds narrows the access token only; the next
refresh token keeps the whole scope (RFC 6749 section 6), kept here when the two differ.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 11:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('oidc_tokens') as batch_op:
        batch_op.add_column(sa.Column('refresh_scope', sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('oidc_tokens') as batch_op:
        batch_op.drop_column('refresh_scope')
