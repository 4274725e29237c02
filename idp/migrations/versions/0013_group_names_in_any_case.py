"""group names in any case

Assignments name groups in any case (an assignment to group:Engineers is engineers' too): the access decision
asks lower(group_name), by these indexes rather than by reading every assignment.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 03:55:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

_INDEXES = {'assignments': 'ix_assignments_group_lower', 'app_assignments': 'ix_app_assignments_group_lower'}


def upgrade() -> None:
    for table, name in _INDEXES.items():
        op.create_index(name, table, [sa.text('lower(group_name)')])


def downgrade() -> None:
    for table, name in _INDEXES.items():
        op.drop_index(name, table_name=table)
