"""What every API resource module shares: :func:`blueprint` (a flask-smorest Blueprint with the token check,
CSRF exemption and JSON errors already attached), :func:`caller` (the token's name for the audit log), paging
(:class:`PageArgs`, :func:`page_of`), :class:`ErrorSchema`, the body of every error answer
({"code", "status", "message", "errors"}), :class:`StrictBoolean`, and the refusal of unstorable text (also the admin
UI's check of what it is sent).

The document must say what the API accepts (schemathesis checks it): in JSON bodies use :class:`StrictBoolean`
and ``ma.fields.Integer(strict=True)``, since marshmallow's defaults also take 1 for true and "5" for 5.

Every operation documents 401, 403 and a default error by itself, and ``@blp.arguments`` adds its 422.
Document the other errors a view can answer with ``@blp.alt_response(404, schema=ErrorSchema)`` (likewise 409,
or 422 where a service refuses a value of a request without arguments).

A service's refusal names the value it is about by the service's parameter (:attr:`idp.errors.IdpError.field`);
when the request sent that value, the answer puts the reason where a schema's refusal would be, ``errors:
{"json": {FIELD: [reason]}}`` (or "query"). A resource whose request calls a parameter otherwise says so once:
``blueprint(..., fields={"session_hours": "session_duration_hours"})``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial, wraps
from typing import Any

import marshmallow as ma
from flask import Response, g, jsonify, request
from flask_smorest import Blueprint, abort
from flask_smorest.error_handler import ErrorSchema as ErrorSchema
from sqlalchemy import Select, func, select
from werkzeug.exceptions import HTTPException

from idp import audit
from idp.admin import tokens
from idp.audit import AuditEvent
from idp.errors import BadRequest, IdpError, unexpected
from idp.extensions import csrf, db
from idp.text import unstorable_text

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
_READ_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_PAGE_SIZE = 200
# Far deeper than any body the API takes (an IAM policy document is some six levels); a deeper one is refused
# before anything parses or walks it recursively (marshmallow, the stored JSON's serializer).
MAX_JSON_DEPTH = 32
_REALM = 'Bearer realm="idp-admin"'
_UNAUTHENTICATED = "An admin API token is required (Authorization: Bearer ...)."


def caller() -> str:
    """The audit name of the token making this request."""
    return str(g.idp_api_actor)


# ErrorSchema, re-exported for the resource modules, is the schema flask-smorest documents its own error answers
# with (a schema's 422, the default error) and exactly the body _json_error writes: one "Error" for them all.
_SHARED_ERRORS = {
    "401": "No admin API token, or an unknown or revoked one.",
    "403": "The token may not do this: a read-only token asking to change something.",
}


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


def _refuse(status: int, name: str, message: str, reason: str, challenge: str, actor: str | None = None
            ) -> Response:
    db.session.rollback()
    if actor is None:
        # No live token: anyone can send these, so they are logged, not stored (they would grow the audit table
        # at a stranger's will). A token's refusals are audit events naming it.
        log.warning("admin API refused %s %r from %s: %s", request.method, request.path, request.remote_addr, reason)
    else:
        audit.record(AuditEvent(type="admin.api.denied", outcome="failure", actor=actor,
                                client_ip=request.remote_addr, reason=reason,
                                details={"method": request.method, "path": request.path}))
    return _json_error(status, name, message, headers={"WWW-Authenticate": challenge})


def _authenticate() -> Response | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return _refuse(401, "Unauthorized", _UNAUTHENTICATED, "no bearer token", _REALM)
    row = tokens.authenticate(value.strip())
    if row is None:
        return _refuse(401, "Unauthorized", _UNAUTHENTICATED, "unknown or revoked token", _REALM)
    if request.method not in _READ_METHODS and row.scope != "write":
        return _refuse(403, "Forbidden", "This token is read-only.", "read-only token",
                       'Bearer error="insufficient_scope", scope="write"', tokens.actor_of(row))
    g.idp_api_actor = tokens.actor_of(row)
    db.session.commit()  # last_used_at
    return None


def too_deep(value: Any) -> bool:
    """Whether a parsed JSON value nests lists and objects more than MAX_JSON_DEPTH levels (walked without
    recursion, so that any depth can be measured)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            if level > MAX_JSON_DEPTH:
                return True
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def _number_too_long() -> bool:
    """Whether the body fails to load for an integer longer than Python converts (4,300 digits): a ValueError
    that webargs, which answers malformed JSON itself, would let through as a server error."""
    try:
        json.loads(request.get_data(cache=True))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    except ValueError:
        return True
    return False


def _refuse_unusable_body() -> Response | None:
    values: list[Any] = [request.view_args or {}, request.args.to_dict(flat=False)]
    if request.is_json:
        try:
            body = request.get_json(silent=True)
            deep = too_deep(body)
        except RecursionError:  # the JSON parser's own limit: some thousand levels
            deep = True
        if deep:
            return _json_error(422, "Unprocessable Entity",
                               f"The JSON body nests lists and objects more than {MAX_JSON_DEPTH} levels deep.")
        if body is None and _number_too_long():
            return _json_error(400, "Bad Request", "The JSON body holds a number too long to read.")
        values.append(body)
    if not any(unstorable_text(v) for v in values):
        return None
    return _json_error(422, "Unprocessable Entity", "Text may not contain NUL characters or lone surrogates.")


def _keep_changes(resp: Response) -> Response:
    # Services commit with their audit event; whatever else a successful view changed is kept too. A failed
    # commit (the database lost meanwhile) is answered as if the view had raised it: Flask would make it a 500.
    if resp.status_code < 400:
        try:
            db.session.commit()
        except Exception as exc:  # errors.unexpected decides what it is, and logs it
            return unexpected(exc)
    return resp


def _http_error(exc: HTTPException) -> Response:
    # A schema's refusal (webargs' abort) carries the field errors in exc.data["messages"], by location:
    # {"json": {"field": ["reason"]}}.
    data = getattr(exc, "data", None) or {}
    return _json_error(exc.code or 500, exc.name, data.get("message") or exc.description,
                       data.get("messages") or data.get("errors"), data.get("headers"))


def _field_errors(exc: IdpError, names: Mapping[str, str]) -> dict[str, dict[str, list[str]]] | None:
    """The refusal as a schema's is shown, {location: {field: [reason]}}, under the name the request gives the
    value (``names``: service parameter → request field, where they differ) and where it sent it (the query
    string or the JSON body); None when it is about no value this request sent (the request as a whole, or a
    stored setting it did not give)."""
    if exc.field is None:
        return None
    name = names.get(exc.field, exc.field)
    if name in request.args:
        return {"query": {name: [exc.message]}}
    body = request.get_json(silent=True) if request.is_json else None
    if isinstance(body, dict) and name in body:
        return {"json": {name: [exc.message]}}
    return None


def _idp_error(exc: IdpError, names: Mapping[str, str]) -> Response:
    db.session.rollback()
    # A service refusing a value is a validation error of the request: 422, like the schemas' own refusals.
    status, title = (422, "Unprocessable Entity") if isinstance(exc, BadRequest) else (exc.status, exc.title)
    return _json_error(status, title, exc.message, _field_errors(exc, names))


class _Blueprint(Blueprint):  # type: ignore[misc]
    """Documents the errors every operation shares with :class:`ErrorSchema`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prepare_doc_cbks.append(self._prepare_error_doc)

    def arguments(self, schema: Any, *, location: str = "json", required: bool = True, **kwargs: Any
                  ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """flask-smorest's, and a JSON body the document requires must be there: webargs would take a missing
        body, or one of another type, for {} (a PATCH with nothing in it would then succeed)."""
        parse = super().arguments(schema, location=location, required=required, **kwargs)
        if location != "json" or not required:
            return parse  # type: ignore[no-any-return]

        def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
            view = parse(func)

            @wraps(view)
            def checked(*args: Any, **kw: Any) -> Any:
                if not request.get_data(cache=True).strip():
                    abort(422, message="A JSON body is required.")
                if not request.is_json:
                    abort(415, message="Send the body as JSON (Content-Type: application/json).")
                return view(*args, **kw)

            return checked

        return decorator

    @staticmethod
    def _prepare_error_doc(doc: dict[str, Any], doc_info: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        responses = doc.setdefault("responses", {})
        for status, description in _SHARED_ERRORS.items():
            if status not in responses and int(status) not in responses:
                responses[status] = {"description": description,
                                     "content": {"application/json": {"schema": ErrorSchema}}}
        return doc


def blueprint(name: str, path: str, description: str, *, fields: Mapping[str, str] | None = None) -> Blueprint:
    """A resource's blueprint at PREFIX + path, with the API's authentication and error handling. ``fields``: the
    request's name for each service parameter it names otherwise, for the services' refusals."""
    blp = _Blueprint(f"api_{name}", f"idp.admin.api.{name}", url_prefix=PREFIX + path, description=description)
    blp.before_request(_authenticate)
    blp.before_request(_refuse_unusable_body)
    blp.after_request(_keep_changes)
    blp.register_error_handler(HTTPException, _http_error)
    blp.register_error_handler(IdpError, partial(_idp_error, names=dict(fields or {})))
    csrf.exempt(blp)
    return blp


class StrictBoolean(ma.fields.Boolean):
    """true or false, nothing else: marshmallow's Boolean also takes 0, 1, "yes", "off"..., which the document
    (type: boolean) does not allow. Use it in JSON bodies (a query string's booleans are text: use Boolean)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


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


def page_of_list(items: Sequence[Any], args: dict[str, Any]) -> dict[str, Any]:
    """One page of ``items`` (already in order), for a list that is built whole (a tree), in :func:`page_of`'s
    envelope."""
    page, per_page = args["page"], args["per_page"]
    start = (page - 1) * per_page
    return {"items": list(items[start:start + per_page]), "page": page, "per_page": per_page, "total": len(items)}


def page_of(query: Select[Any], args: dict[str, Any], convert: Callable[[Any], Any] = lambda row: row
            ) -> dict[str, Any]:
    """One page of ``query`` (already ordered) and the total count."""
    page, per_page = args["page"], args["per_page"]
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    rows = db.session.scalars(query.limit(per_page).offset((page - 1) * per_page))
    return {"items": [convert(r) for r in rows], "page": page, "per_page": per_page, "total": total}
