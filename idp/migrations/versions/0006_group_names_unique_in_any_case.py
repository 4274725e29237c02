"""group names unique in any case

The built-in directory refused a group whose name differed from another's only in case, but by a check
before the insert: two such groups created at once (on two instances) both went in. The database now refuses
the second. Groups stored that way already are named, for an admin to rename or merge, before this runs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 22:40:00
"""
from alembic import op
import click
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    clashes = op.get_bind().execute(sa.text(
        "SELECT lower(name), count(*) FROM groups GROUP BY lower(name) HAVING count(*) > 1 ORDER BY 1")).all()
    if clashes:
        raise click.ClickException(
            "groups whose names differ only in case: " + ", ".join(name for name, _ in clashes)
            + ". Delete or empty all but one of each (idp group ...), then run `idp db upgrade` again.")
    op.create_index("uq_groups_name_any_case", "groups", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_groups_name_any_case", table_name="groups")
