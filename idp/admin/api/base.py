"""What every API resource module shares: :func:`blueprint` (a flask-smorest Blueprint with the token check,
CSRF exemption and JSON errors already attached), :func:`caller` (the token's name for the audit log), and
paging (:class:`PageArgs`, :func:`page_of`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import marshmallow as ma
from flask import Response, g, jsonify, request
from flask_smorest import Blueprint
from sqlalchemy import Select, func, select
from werkzeug.exceptions import HTTPException

from idp.admin import tokens
from idp.errors import BadRequest, IdpError
from idp.extensions import csrf, db

PREFIX = "/api/v1"
_READ_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_PAGE_SIZE = 200


def caller() -> str:
    """The audit name of the token making this request."""
    return str(g.idp_api_actor)


def _json_error(status: int, name: str, message: str | None = None, errors: Any = None,
                headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": status, "status": name}
    if message:
        body["message"] = message
    if errors:
        body["errors"] = errors
    resp = jsonify(body)
    resp.status_code = status
    resp.headers.update(headers or {})
    return resp


def _authenticate() -> Response | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    row = tokens.authenticate(value.strip()) if scheme.lower() == "bearer" and value.strip() else None
    if row is None:
        db.session.rollback()
        return _json_error(401, "Unauthorized", "An admin API token is required (Authorization: Bearer ...).",
                           headers={"WWW-Authenticate": 'Bearer realm="idp-admin"'})
    if request.method not in _READ_METHODS and row.scope != "write":
        db.session.rollback()
        return _json_error(403, "Forbidden", "This token is read-only.",
                           headers={"WWW-Authenticate": 'Bearer error="insufficient_scope", scope="write"'})
    g.idp_api_actor = tokens.actor_of(row)
    db.session.commit()  # last_used_at
    return None


def _http_error(exc: HTTPException) -> Response:
    # A schema's refusal (webargs' abort) carries the field errors in exc.data["messages"], by location:
    # {"json": {"field": ["reason"]}}.
    data = getattr(exc, "data", None) or {}
    return _json_error(exc.code or 500, exc.name, data.get("message") or exc.description,
                       data.get("messages") or data.get("errors"), data.get("headers"))


def _idp_error(exc: IdpError) -> Response:
    db.session.rollback()
    # A service refusing a value is a validation error of the request: 422, like the schemas' own refusals.
    if isinstance(exc, BadRequest):
        return _json_error(422, "Unprocessable Entity", exc.message)
    return _json_error(exc.status, exc.title, exc.message)


def blueprint(name: str, path: str, description: str) -> Blueprint:
    """A resource's blueprint at PREFIX + path, with the API's authentication and error handling."""
    blp = Blueprint(f"api_{name}", f"idp.admin.api.{name}", url_prefix=PREFIX + path, description=description)
    blp.before_request(_authenticate)
    blp.register_error_handler(HTTPException, _http_error)
    blp.register_error_handler(IdpError, _idp_error)
    csrf.exempt(blp)
    return blp


class PageArgs(ma.Schema):
    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=1_000_000))
    per_page = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=MAX_PAGE_SIZE))


def page_schema(item: type[ma.Schema]) -> type[ma.Schema]:
    """The paged envelope of ``item``: {"items": [...], "page", "per_page", "total"}."""
    return ma.Schema.from_dict({
        "items": ma.fields.List(ma.fields.Nested(item), required=True),
        "page": ma.fields.Integer(required=True),
        "per_page": ma.fields.Integer(required=True),
        "total": ma.fields.Integer(required=True),
    }, name=f"{item.__name__.removesuffix('Schema')}Page")


def page_of(query: Select[Any], args: dict[str, Any], convert: Callable[[Any], Any] = lambda row: row
            ) -> dict[str, Any]:
    """One page of ``query`` (already ordered) and the total count."""
    page, per_page = args["page"], args["per_page"]
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = db.session.scalars(query.limit(per_page).offset((page - 1) * per_page))
    return {"items": [convert(r) for r in rows], "page": page, "per_page": per_page, "total": total}
