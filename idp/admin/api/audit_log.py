"""GET /api/v1/audit: the audit log, newest first, filtered by user, type and time, paged."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import marshmallow as ma
from sqlalchemy import select

from idp.admin.api.base import PageArgs, blueprint, page_of, page_schema
from idp.store import AuditRecord

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
    username = ma.fields.String(validate=ma.validate.Length(max=255))
    type = ma.fields.String(validate=ma.validate.Length(max=64))
    outcome = ma.fields.String(validate=ma.validate.OneOf(["success", "failure"]))
    since = ma.fields.AwareDateTime(metadata={"description": "events at or after this time (with a zone)"})
    until = ma.fields.AwareDateTime(metadata={"description": "events before this time (with a zone)"})


@blp.route("")
@blp.arguments(AuditQuery, location="query")
@blp.response(200, page_schema(AuditEventSchema))
def audit_events(args: dict[str, Any]) -> dict[str, Any]:
    """The audit log, newest first."""
    query = select(AuditRecord).order_by(AuditRecord.at.desc(), AuditRecord.id.desc())
    for column in ("username", "type", "outcome"):
        if column in args:
            query = query.where(getattr(AuditRecord, column) == args[column])
    if "since" in args:
        query = query.where(AuditRecord.at >= _utc(args["since"]))
    if "until" in args:
        query = query.where(AuditRecord.at < _utc(args["until"]))
    return page_of(query, args)


def _utc(moment: datetime) -> datetime:
    # 0001-01-01T00:00+05:00 is a valid time that UTC cannot hold (year 0): the earliest one stands for it, and the
    # latest one for a time in year 10000.
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)
