"""What admin/base.html needs on every admin page, so that no view has to pass it: the signed-in admin."""

from __future__ import annotations

from typing import Any

from flask import g

from idp.admin.ui import admin, bp


@bp.context_processor
def _layout() -> dict[str, Any]:
    # An error page under /admin may render before the admin check ran (a refused CSRF token): nothing then.
    return {"admin": admin()} if "idp_admin" in g else {}
