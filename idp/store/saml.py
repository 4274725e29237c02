"""Registered SAML service providers and the stable identifiers we give users at each."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from idp.clock import now
from idp.extensions import db
from idp.store.types import UTCDateTime


class ServiceProvider(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "service_providers"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never given twice (migration 0014)

    id: Mapped[int] = mapped_column(primary_key=True)
    entity_id: Mapped[str] = mapped_column(String(1024), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    metadata_xml: Mapped[str] = mapped_column(Text)
    # Where the metadata came from (file path or URL), for `idp sp refresh`.
    metadata_source: Mapped[str | None] = mapped_column(String(2048))
    nameid_format: Mapped[str] = mapped_column(String(255))
    sign_response: Mapped[bool] = mapped_column(default=True)
    sign_assertion: Mapped[bool] = mapped_column(default=True)
    encrypt_assertion: Mapped[bool] = mapped_column(default=False)
    require_signed_requests: Mapped[bool] = mapped_column(default=False)
    allow_sha1: Mapped[bool] = mapped_column(default=False)
    # [{"attribute": "email", "name": "...", "name_format": "...", "friendly_name": "..."}]
    attribute_map: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Without an app assignment an SP is open to nobody, unless this is set (idp app open-to-all).
    open_to_all: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


class PersistentNameId(db.Model):  # type: ignore[name-defined,misc]
    """A random opaque identifier per (user, SP): stable, and unlinkable across SPs."""

    __tablename__ = "persistent_nameids"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    sp_id: Mapped[int] = mapped_column(
        ForeignKey("service_providers.id", ondelete="CASCADE"), primary_key=True
    )
    value: Mapped[str] = mapped_column(String(64), unique=True)
