"""Requests waiting for a sign-in, and the database's storage of SSO sessions and the SPs each one has signed
in to. Sessions are used through :mod:`idp.state.sessions` (rows here only when state lives in the database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from idp.clock import now
from idp.extensions import db
from idp.store.types import UTCDateTime


class SsoSessionRow(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "sso_sessions"

    # SHA-256 of the cookie value: a database leak does not leak live sessions.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    authn_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    client_ip: Mapped[str | None] = mapped_column(String(64))


class ParticipantRow(db.Model):  # type: ignore[name-defined,misc]
    """An SP that received an assertion in this session: whom Single Logout must reach."""

    __tablename__ = "session_participants"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("sso_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    sp_id: Mapped[int] = mapped_column(
        ForeignKey("service_providers.id", ondelete="CASCADE"), primary_key=True
    )
    name_id: Mapped[str] = mapped_column(String(1024))
    name_id_format: Mapped[str] = mapped_column(String(255))
    session_index: Mapped[str] = mapped_column(String(64))


class PendingRequest(db.Model):  # type: ignore[name-defined,misc]
    """A validated protocol request parked while the user signs in."""

    __tablename__ = "pending_requests"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
