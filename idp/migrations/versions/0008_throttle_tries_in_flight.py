"""throttle tries in flight

A sign-in's try is held against its counters (name, user, address) while its password is checked, apart from
the failures: only a failure counts as one, and only failures start a lockout (idp.state.counters).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 04:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('login_throttle') as batch_op:
        batch_op.add_column(sa.Column('in_flight', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('login_throttle') as batch_op:
        batch_op.drop_column('in_flight')
