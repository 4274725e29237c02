"""The admin web UI under /admin: server-rendered pages (Flask-WTF forms, CSRF on every form) for members of
IDP_ADMIN_GROUP, whatever directory they come from. Each page module registers its views on :data:`bp`
and calls the same services as the CLI and the REST API, passing :func:`admin_actor` as the actor."""

from __future__ import annotations

import pkgutil
from importlib import import_module

from flask import Blueprint, g, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from idp import audit
from idp.audit import AuditEvent
from idp.authn.principal import Principal
from idp.authn.session import current_session, login_url, principal_for
from idp.errors import BadRequest, Forbidden
from idp.runtime import settings
from idp.text import unstorable_text

bp = Blueprint("admin", __name__, url_prefix="/admin")


def admin() -> Principal:
    """The signed-in admin of this request (set by the check below)."""
    principal: Principal = g.idp_admin
    return principal


def admin_actor() -> str:
    """How the audit log names the admin acting in this request."""
    return f"admin:{admin().username}"


@bp.before_request
def _refuse_unstorable_text() -> None:
    # The database cannot store a NUL or a lone surrogate (PostgreSQL's driver raises before the query): a form
    # field, a query argument or a path part holding one is refused here, before any view or audit event sees it.
    given = [request.view_args or {}, request.args.to_dict(flat=False), request.form.to_dict(flat=False)]
    if any(unstorable_text(v) for v in given):
        raise BadRequest("A field or the address holds a character that cannot be stored (a NUL character or a "
                         "lone surrogate): remove it and try again.", "unstorable text in the request")


@bp.before_request
def _require_admin() -> BaseResponse | None:
    session = current_session()
    if session is None:
        return redirect(login_url(request.full_path.rstrip("?")))
    principal = principal_for(session)
    group = settings().admin_group
    if not principal.in_group(group):
        audit.record(AuditEvent(type="admin.denied", outcome="failure", username=principal.username,
                                client_ip=request.remote_addr, reason=f"not a member of {group}",
                                details={"path": request.path}))
        raise Forbidden("The admin pages are for administrators of the identity bridge.",
                        f"not a member of {group}")
    g.idp_admin = principal
    return None


def _import_pages() -> None:
    # Every module of this package is a page module that registers its views on bp when imported.
    for module in pkgutil.iter_modules(__path__):
        import_module(f"{__name__}.{module.name}")


_import_pages()
