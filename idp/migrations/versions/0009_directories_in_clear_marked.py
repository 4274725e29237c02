"""directories in clear marked

An ldap:// URL to another machine without StartTLS sends passwords in clear, and from now on is refused unless
the directory says allow_plaintext. The directories stored before that are marked so, not broken by the upgrade:
`idp directory show` tells, until the admin secures them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 06:45:00
"""
import ipaddress
from urllib.parse import urlsplit

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

directories = sa.table('directories', sa.column('id', sa.Integer), sa.column('settings', sa.JSON))


def _in_clear(url: str) -> bool:
    """An ldap:// URL to another machine (as idp.authn.connectors.settings judges it, as of this revision)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    if parts.scheme != 'ldap' or host == 'localhost':
        return False
    try:
        return not ipaddress.ip_address(host or '').is_loopback
    except ValueError:
        return True


def _rewrite(change) -> None:  # type: ignore[no-untyped-def]
    conn = op.get_bind()
    for row in conn.execute(sa.select(directories.c.id, directories.c.settings)).all():
        settings = dict(row.settings or {})
        if change(settings):
            conn.execute(directories.update().where(directories.c.id == row.id).values(settings=settings))


def upgrade() -> None:
    def mark(settings: dict) -> bool:  # type: ignore[type-arg]
        if settings.get('start_tls') or not any(_in_clear(str(u)) for u in settings.get('urls') or []):
            return False
        settings['allow_plaintext'] = True
        return True

    _rewrite(mark)


def downgrade() -> None:
    # The revisions before this one refuse a setting they do not know.
    _rewrite(lambda settings: settings.pop('allow_plaintext', None) is not None)
