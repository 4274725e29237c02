"""instances

Each `idp serve` announces itself (a random id, its host, a check of its secret key, the keys it signs with)
at start and with each readiness check, so that instances sharing a database can tell when they do not share
their secrets (idp.ops.instances).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 01:40:00
"""
from alembic import op
import sqlalchemy as sa

import idp.store.types


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('instances',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('secret_check', sa.String(length=64), nullable=False),
    sa.Column('signing_keys', sa.String(length=1024), nullable=False),
    sa.Column('published_keys', sa.String(length=1024), nullable=False),
    sa.Column('seen_at', idp.store.types.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_instances_seen_at', 'instances', ['seen_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_instances_seen_at', table_name='instances')
    op.drop_table('instances')
