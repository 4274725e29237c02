"""GET /api/v1/audit: the audit log, newest first, filtered by user, actor, type, outcome and time, paged
(:func:`idp.audit.query`, as the admin UI)."""

from __future__ import annotations

from typing import Any

import marshmallow as ma

from idp import audit
from idp.admin.api.base import PageArgs, blueprint, page_of, page_schema

blp = blueprint("audit_log", "/audit", "The audit log: every sign-in, refusal, issuance and admin change.")


class AuditEventSchema(ma.Schema):
    id = ma.fields.Integer(required=True)
    at = ma.fields.AwareDateTime(required=True)
    type = ma.fields.String(required=True)
    outcome = ma.fields.String(required=True)
    actor = ma.fields.String(allow_none=True)
    username = ma.fields.String(allow_none=True)
    sp = ma.fields.String(allow_none=True)
    client_ip = ma.fields.String(allow_none=True)
    reason = ma.fields.String(allow_none=True)
    details = ma.fields.Dict(required=True)


class AuditQuery(PageArgs):
    username = ma.fields.String(validate=ma.validate.Length(max=255), metadata={
        "description": "events about this user"})
    actor = ma.fields.String(validate=ma.validate.Length(max=255), metadata={
        "description": "events done by this party: token:ID:NAME, admin:USERNAME, cli:NAME ... (exact)"})
    type = ma.fields.String(validate=ma.validate.Length(max=64))
    outcome = ma.fields.String(validate=ma.validate.OneOf(["success", "failure"]))
    since = ma.fields.AwareDateTime(metadata={"description": "events at or after this time (with a zone)"})
    until = ma.fields.AwareDateTime(metadata={"description": "events before this time (with a zone)"})


@blp.route("")
@blp.arguments(AuditQuery, location="query")
@blp.response(200, page_schema(AuditEventSchema))
def audit_events(args: dict[str, Any]) -> dict[str, Any]:
    """The audit log, newest first."""
    filters = {k: args[k] for k in ("username", "actor", "type", "outcome", "since", "until") if k in args}
    return page_of(audit.query(**filters), args)
