"""unsigned sps sign assertions

A service provider set to get neither a signed Response nor a signed Assertion is refused from now on (SAML
Profiles 4.1.3.5). Those stored before get signed assertions, which every SP verifies or ignores; the downgrade
leaves them signed (it cannot tell them from SPs set so by hand).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 11:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

service_providers = sa.table('service_providers', sa.column('sign_response', sa.Boolean),
                             sa.column('sign_assertion', sa.Boolean))


def upgrade() -> None:
    op.execute(service_providers.update()
               .where(service_providers.c.sign_response.is_(sa.false()),
                      service_providers.c.sign_assertion.is_(sa.false()))
               .values(sign_assertion=True))


def downgrade() -> None:
    pass
