"""Audit events: one stored row and one structured log line per decision, and listeners told of each event
once its row is committed (the metrics count them)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, String, delete, insert, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, SessionTransaction

from idp.clock import now
from idp.extensions import db
from idp.state import changed
from idp.store import AuditRecord

log = logging.getLogger("idp.audit")
_PENDING = "idp.audit.pending"
_INSERT = insert(AuditRecord.__table__)
_LENGTHS = {c.name: c.type.length for c in AuditRecord.__table__.c if isinstance(c.type, String) and c.type.length}


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


Listener = Callable[[AuditEvent], None]
_listeners: list[Listener] = []


def listen(listener: Listener) -> None:
    """Call ``listener(event)`` for every event recorded from now on, in this process, once the transaction that
    stores it commits: an event rolled back with its transaction (record(..., commit=False), then a failure)
    never happened for listeners either. A listener that raises is logged and the request goes on. Listening
    twice with the same function is listening once."""
    if listener not in _listeners:
        _listeners.append(listener)


def record(event: AuditEvent, *, commit: bool = True) -> None:
    """Store the event and log it. Commits by default so that a refusal is kept even when nothing else is."""
    # One copy, NUL characters replaced and text cut to its column (events quote what clients sent; PostgreSQL
    # stores no NUL in text or JSON and no longer string than the column's, and a failed insert would take the
    # request's transaction with it). The row, the log line and the listeners read that same copy.
    data = {f.name: _stored(f.name, getattr(event, f.name)) for f in fields(event)}
    event = AuditEvent(**data)
    # A Core insert in the session's transaction: the ORM's unit of work costs more than the row itself, and
    # nothing reads these rows back as objects in the same request.
    db.session.connection().execute(_INSERT, data)
    db.session.info.setdefault(_PENDING, []).append(event)
    if commit:
        db.session.commit()
    payload = {**data, "at": event.at.isoformat()}
    log.info("audit %s %s", event.type, event.outcome, extra={"audit": payload})


def _stored(name: str, value: Any) -> Any:
    value = _without_nul(value)
    limit = _LENGTHS.get(name)
    return value[:limit] if limit is not None and isinstance(value, str) else value


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nul(v) for v in value]
    return value


@sa_event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    # Released savepoints fire after_commit too: their events wait for the outer transaction.
    if session.in_nested_transaction():
        return
    for event in session.info.pop(_PENDING, ()):
        for listener in list(_listeners):
            try:
                listener(event)
            except Exception:
                # The row is stored and the answer decided: a metric is not worth a failed request.
                log.exception("audit listener %s failed on %s", getattr(listener, "__qualname__", listener),
                              event.type)


@sa_event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    # After _committed on a commit; on a rollback or a close, the events went with their rows.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def query(*, username: str | None = None, actor: str | None = None, type: str | None = None,
          outcome: str | None = None, since: datetime | None = None, until: datetime | None = None
          ) -> Select[tuple[AuditRecord]]:
    """The stored events, newest first: those about ``username``, done by ``actor``, of ``type`` and ``outcome``
    (exact matches; None: any), at or after ``since`` and before ``until`` (a time without a zone is UTC). The
    admin API and UI filter the log with it, so both show the same rows."""
    found = select(AuditRecord).order_by(AuditRecord.at.desc(), AuditRecord.id.desc())
    for column, value in (("username", username), ("actor", actor), ("type", type), ("outcome", outcome)):
        if value is not None:
            found = found.where(getattr(AuditRecord, column) == value)
    if since is not None:
        found = found.where(AuditRecord.at >= _utc(since))
    if until is not None:
        found = found.where(AuditRecord.at < _utc(until))
    return found


def prune(before: datetime, *, actor: str, batch: int = 10_000) -> int:
    """Delete the events older than ``before``, ``batch`` rows per transaction (each holds its locks briefly, on
    a table the sign-ins write to), then record the pruning itself; how many were deleted."""
    oldest = select(AuditRecord.id).where(AuditRecord.at < _utc(before)).order_by(AuditRecord.id).limit(batch)
    deleted = 0
    while True:
        batch_of = delete(AuditRecord).where(AuditRecord.id.in_(oldest.scalar_subquery()))
        # Not the ORM's synchronisation, which fetches every deleted id back.
        count = changed(db.session.execute(batch_of.execution_options(synchronize_session=False)))
        db.session.commit()
        deleted += count
        if count < batch:
            break
    record(AuditEvent(type="audit.prune", actor=actor, details={"before": _utc(before).isoformat(),
                                                                "deleted": deleted}))
    return deleted


def _utc(moment: datetime) -> datetime:
    # 0001-01-01T00:00+05:00 is a valid time that UTC cannot hold (year 0): the earliest UTC time stands for it,
    # and the latest one for a time in year 10000 (9999-12-31T23:59-05:00).
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


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
