"""The admin REST API from tests: real tokens (``idp.admin.tokens.create``, as ``idp admin token create`` makes
them) as request headers.

Import as ``from admin_api import bearer`` (needs an app context, as the ``app`` fixture gives).
"""

from __future__ import annotations

from idp.admin import tokens
from idp.extensions import db


def bearer(scope: str = "write", name: str = "test") -> dict[str, str]:
    """The Authorization header of a new token of this scope."""
    created = tokens.create(name, scope, actor="test")
    db.session.commit()
    return {"Authorization": f"Bearer {created.token}"}
