"""The instances serving from this database, as each last announced itself (idp.ops.instances)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from idp.extensions import db
from idp.store.types import UTCDateTime


class InstanceRow(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random hex, one per `idp serve`
    host: Mapped[str] = mapped_column(String(255))
    # HMAC of a fixed text with IDP_SECRET_KEY: equal when the secrets are, and tells nothing of them.
    secret_check: Mapped[str] = mapped_column(String(64))
    # "rsa:<kid> ec:<kid>": the keys it signs with now, and every key its metadata and JWKS publish.
    signing_keys: Mapped[str] = mapped_column(String(1024))
    published_keys: Mapped[str] = mapped_column(String(1024))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
