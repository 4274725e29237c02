"""one row per grant: unique assignments and application assignments

Two identical grants made at once (a retried request reaching another instance) both went in; revoking one
left the other granting. Duplicates already stored are merged first, keeping the row that grants longest (no
end, else the latest end; then the oldest), which is what the pair granted together.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 22:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

_KEYS = {
    "assignments": ("permission_set_id", "user_id", "group_name", "account_id", "ou_id"),
    "app_assignments": ("sp_id", "client_id", "user_id", "group_name"),
}
_INDEXES = {"assignments": "uq_assignments_grant", "app_assignments": "uq_app_assignments_grant"}


def _unset_as_zero(name: str, alias: str = "") -> str:
    empty = "''" if name == "group_name" else "0"
    return f"coalesce({alias}{name}, {empty})"


def upgrade() -> None:
    for table, keys in _KEYS.items():
        same = " AND ".join(f"{_unset_as_zero(k, 'a.')} = {_unset_as_zero(k, 'b.')}" for k in keys)
        # b grants at least as long as a, and is kept instead of a.
        better = ("(a.until IS NOT NULL AND (b.until IS NULL OR b.until > a.until))"
                  " OR (((a.until IS NULL AND b.until IS NULL) OR a.until = b.until) AND b.id < a.id)")
        op.execute(f"DELETE FROM {table} WHERE id IN (SELECT a.id FROM {table} a JOIN {table} b"
                   f" ON {same} AND a.id <> b.id AND ({better}))")
        op.create_index(_INDEXES[table], table, [sa.text(k if k == "permission_set_id" else _unset_as_zero(k))
                                                 for k in keys], unique=True)


def downgrade() -> None:
    for table, index in _INDEXES.items():
        op.drop_index(index, table_name=table)
