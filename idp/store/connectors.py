"""Directory connectors configured in the database (``idp directory add``), beside those of the YAML file."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from idp.clock import now
from idp.extensions import db
from idp.store.types import UTCDateTime


class Directory(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "directories"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(32))
    # Everything but the secret, in the same shape as a YAML entry (urls, base_dn, user_filter, ...).
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The service account's password, encrypted with a key derived from the app's secret key (Fernet).
    bind_password_encrypted: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)
