"""group names unique in any case

The built-in directory refused a group whose name differed from another's only in case, but by a check
before the insert: two such groups created at once (on two instances) both went in. The database now refuses
the second. Of groups stored that way already, those that nobody is in and no assignment names (the second of
two made at once, most likely) are removed; any other clash stops the upgrade, naming the groups, for an admin
to settle in the database (this runs before the bridge can start).

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


_CLASHING = "lower(name) IN (SELECT lower(name) FROM groups GROUP BY lower(name) HAVING count(*) > 1)"
# Nobody in it, and no assignment names it: removing it changes no one's access.
_UNUSED = ("id NOT IN (SELECT group_id FROM group_members)"
           " AND name NOT IN (SELECT group_name FROM assignments WHERE group_name IS NOT NULL)"
           " AND name NOT IN (SELECT group_name FROM app_assignments WHERE group_name IS NOT NULL)")


def upgrade() -> None:
    bind = op.get_bind()
    # One group of each clash is kept whatever happens: the oldest among the unused, if all are.
    bind.execute(sa.text(f"DELETE FROM groups WHERE {_CLASHING} AND {_UNUSED} AND id NOT IN ("
                         f"SELECT min(id) FROM groups WHERE {_CLASHING} GROUP BY lower(name)"
                         f" HAVING count(*) = sum(CASE WHEN {_UNUSED} THEN 1 ELSE 0 END))"))
    clashes = bind.execute(sa.text(f"SELECT name FROM groups WHERE {_CLASHING} ORDER BY lower(name), id")).scalars()
    names = list(clashes)
    if names:
        raise click.ClickException(
            "groups whose names differ only in case, each with members or assignments: " + ", ".join(names)
            + ". Move the members and assignments of all but one of each to it and delete the others (in the "
            "database: tables group_members, assignments, app_assignments, groups), then run the upgrade again.")
    op.create_index("uq_groups_name_any_case", "groups", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_groups_name_any_case", table_name="groups")
