"""Audit events: one stored row and one structured log line per decision."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from idp.clock import now
from idp.extensions import db
from idp.store import AuditRecord

log = logging.getLogger("idp.audit")


@dataclass(frozen=True)
class AuditEvent:
    type: str
    outcome: str = "success"
    username: str | None = None
    actor: str | None = None
    sp: str | None = None
    client_ip: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=now)


def record(event: AuditEvent, *, commit: bool = True) -> None:
    """Store the event and log it. Commits by default so that a refusal is kept even when nothing else is."""
    db.session.add(AuditRecord(**asdict(event)))
    if commit:
        db.session.commit()
    payload = asdict(event)
    payload["at"] = event.at.isoformat()
    log.info("audit %s %s", event.type, event.outcome, extra={"audit": payload})


def events(
    *, username: str | None = None, since: datetime | None = None, type: str | None = None, limit: int = 100
) -> list[AuditEvent]:
    """Newest first."""
    query = select(AuditRecord).order_by(AuditRecord.at.desc(), AuditRecord.id.desc()).limit(limit)
    if username is not None:
        query = query.where(AuditRecord.username == username)
    if since is not None:
        query = query.where(AuditRecord.at >= since)
    if type is not None:
        query = query.where(AuditRecord.type == type)
    return [
        AuditEvent(
            type=r.type, outcome=r.outcome, username=r.username, actor=r.actor, sp=r.sp,
            client_ip=r.client_ip, reason=r.reason, details=r.details or {}, at=r.at,
        )
        for r in db.session.scalars(query)
    ]
