"""Login throttling counters and single-use identifiers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.store.types import UTCDateTime


class LoginThrottle(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "login_throttle"

    # "user:<name>", "subject:<source>:<id>" or "ip:<address>" (idp.authn.throttle)
    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Tries reserved whose password is still being checked (idp.state.counters.reserve).
    in_flight: Mapped[int] = mapped_column(server_default="0")


class ConsumedId(db.Model):  # type: ignore[name-defined,misc]
    """An identifier that may be used once (SAML request IDs): the primary key makes the second use fail."""

    __tablename__ = "consumed_ids"

    namespace: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(512), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
