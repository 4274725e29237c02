"""/admin: where an admin starts."""

from __future__ import annotations

from flask import render_template

from idp.admin.ui import admin, bp


@bp.get("/")
def dashboard() -> str:
    return render_template("admin/dashboard.html", admin=admin())
