"""OpenID Connect clients, tokens and consents, on authlib's contracts; the tables behind idp.state's
authorization and device codes when there is no Redis.

Nothing secret is stored in clear: client secrets, codes, access and refresh tokens are kept as SHA-256
digests. They are all 256-bit random values we generated, so a fast unsalted hash cannot be brute-forced,
and it keeps a token request at a hash look-up (argon2 would add ~20 ms to every token request).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin
from sqlalchemy import JSON, ForeignKey, Index, String, false
from sqlalchemy.orm import Mapped, mapped_column

from idp.clock import now
from idp.extensions import db
from idp.store.directory import User
from idp.store.types import UTCDateTime
from idp.urls import split_url

PUBLIC_AUTH_METHOD = "none"
_LOOPBACK_IPS = ("127.0.0.1", "::1")


def digest(value: str) -> str:
    """How every secret, code and token is stored and looked up."""
    return hashlib.sha256(value.encode()).hexdigest()


class OidcClient(db.Model):  # type: ignore[name-defined,misc]
    """A registered client, as the services that add, change and remove clients keep it; the protocol flows
    read it as a :class:`Client`."""

    __tablename__ = "oidc_clients"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    # SHA-256 of the secret; None for public clients and for private_key_jwt.
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    public: Mapped[bool] = mapped_column(default=False)
    # "none" for public clients, else client_secret_basic | client_secret_post | private_key_jwt.
    auth_method: Mapped[str] = mapped_column(String(32))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    # The client's public keys (a JWKS) for private_key_jwt.
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    id_token_alg: Mapped[str] = mapped_column(String(16), default="RS256")
    first_party: Mapped[bool] = mapped_column(default=False)
    # [{"attribute": "email", "name": "email", "scope": "email"}]: idp.access.claims.release rules.
    claim_map: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Without an app assignment a client is open to nobody, unless this is set (idp app open-to-all).
    open_to_all: Mapped[bool] = mapped_column(default=False, server_default=false())
    # The client's own "start sign-in" page (OIDC's initiate_login_uri): where the portal launches it.
    login_url: Mapped[str | None] = mapped_column(String(2048))
    # "opaque" (random, looked up by digest) or "jwt" (RFC 9068, signed; still stored by digest so that it
    # can be revoked and introspected): see idp.oidc.access_tokens.
    access_token_format: Mapped[str] = mapped_column(String(16), default="opaque", server_default="opaque")
    # A confidential client must use PKCE too (a public one always must): RFC 9700 2.1.1 advises it for all.
    require_pkce: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now, onupdate=now)


def _loopback_port_of(registered: str, requested: str) -> bool:
    """RFC 8252 section 7.3: a native app (a CLI) listens on whatever port the system gives it, so a loopback
    redirect registered without a port, ``http://127.0.0.1/cb`` or ``http://[::1]/cb``, is met by the same URI
    with any port. Not ``localhost`` (section 8.3: a name may resolve elsewhere), and a registered port stays
    exact."""
    reg = split_url(registered)
    if reg is None or reg.scheme != "http" or reg.hostname not in _LOOPBACK_IPS or reg.port is not None:
        return False
    req = split_url(requested)
    return (req is not None and requested.startswith("http://") and bool(req.port)
            and req.netloc == f"{reg.netloc}:{req.port}" and req._replace(netloc=reg.netloc) == reg)


@dataclass(frozen=True, eq=False)
class Client(ClientMixin):  # type: ignore[misc]
    """A registered client as the protocol flows see it: the columns of its row named here, read with one Core
    statement per request (idp.oidc.clients.get) and never written through; authlib's ClientMixin on top."""

    id: int
    client_id: str
    name: str
    secret_hash: str | None
    public: bool
    auth_method: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    grant_types: list[str]
    scopes: list[str]
    jwks: dict[str, Any] | None
    id_token_alg: str
    first_party: bool
    claim_map: list[dict[str, Any]]
    open_to_all: bool
    login_url: str | None
    access_token_format: str
    require_pkce: bool
    created_at: datetime
    updated_at: datetime

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        # Only when there is exactly one: with several, the request must say which one it means.
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return ""
        allowed = set(self.scopes)
        # Each scope once: repeated ones would only inflate what we store.
        return " ".join(dict.fromkeys(s for s in scope.split() if s in allowed))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string match, no prefixes or wildcards; the loopback rule below is the one exception.
        return any(redirect_uri == uri or _loopback_port_of(uri, redirect_uri) for uri in self.redirect_uris)

    def check_client_secret(self, client_secret: str) -> bool:
        if self.secret_hash is None:
            return False
        return secrets.compare_digest(self.secret_hash, digest(client_secret))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    @property
    def id_token_signed_response_alg(self) -> str:
        return self.id_token_alg

    @property
    def client_metadata(self) -> dict[str, Any]:
        # authlib's UserInfoEndpoint reads userinfo_signed_response_alg here; we answer plain JSON.
        return {}


class OidcAuthorizationCode(db.Model):  # type: ignore[name-defined,misc]
    """An issued code, as idp.state.oidc_codes stores it without Redis. Kept after use (``used_at``) until
    a while after it expires, so that a replay is recognised and the tokens issued from it can be revoked
    (RFC 6749 section 4.1.2)."""

    __tablename__ = "oidc_authorization_codes"
    # The nonce replay check of every authorization request (idp.state.oidc_codes.nonce_seen): without it,
    # a scan of all the client's codes of the last minutes.
    __table_args__ = (Index("ix_oidc_authorization_codes_client_nonce", "client_id", "nonce"),)

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # SsoSession.id of the sign-in, for logout; not a foreign key since sessions end first.
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    scope: Mapped[str] = mapped_column(String(1024))
    nonce: Mapped[str | None] = mapped_column(String(512))
    auth_time: Mapped[datetime] = mapped_column(UTCDateTime)
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OidcToken(db.Model, TokenMixin):  # type: ignore[name-defined,misc]
    """An access token and, for user grants, its refresh token. Every refresh adds a row to the same
    ``family_id``; a refresh token presented twice revokes the whole family."""

    __tablename__ = "oidc_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Indexed: the end of a session revokes its tokens (idp.oidc.server.session_ended) in a table that grows.
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)
    grant_type: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(1024), default="")
    # The refresh token's scope where a refresh asked for less than it holds: the access token gets less, the next
    # refresh token keeps it all (RFC 6749 section 6). None: the same as scope.
    refresh_scope: Mapped[str | None] = mapped_column(String(1024))
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(64), index=True)
    # The code this family came from, so that a replayed code revokes what it produced.
    code_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set when the refresh token was exchanged for the next one (rotation).
    refresh_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # --- authlib TokenMixin ---

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope

    @property
    def refresh_scope_now(self) -> str:
        return self.scope if self.refresh_scope is None else self.refresh_scope

    def get_expires_in(self) -> int:
        return int((self.expires_at - self.issued_at).total_seconds())

    def is_expired(self) -> bool:
        return now() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def get_user(self) -> User | None:
        return db.session.get(User, self.user_id) if self.user_id is not None else None

    def get_client(self) -> Client | None:
        from idp.oidc import clients  # the flows' view of a client; imported here: idp.oidc imports the store

        return clients.get(self.client_id)


class OidcDeviceCode(db.Model):  # type: ignore[name-defined,misc]
    """A device authorization (RFC 8628), as idp.state.device_codes stores it without Redis.

    Both codes are stored as digests: the device code (256 bits of randomness) as a SHA-256, the user code
    (short: its entry is throttled) as an HMAC keyed with the server's secret (idp.oidc.device.user_code_digest).
    The row records the user's decision (``status``: pending, approved, denied), the polling pace
    (``poll_interval`` grows by 5 s at every ``slow_down``) and ``used_at``, set in the transaction that issues
    the tokens, so that a device code yields tokens once.
    """

    __tablename__ = "oidc_device_codes"

    device_code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(String(1024), default="")
    status: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    auth_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    poll_interval: Mapped[int] = mapped_column(default=5)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OidcConsent(db.Model):  # type: ignore[name-defined,misc]
    """What a user allowed a (third-party) client: the scopes consented to so far, one row per user and
    client. A request for scopes beyond these asks again; deleting the row revokes the consent."""

    __tablename__ = "oidc_consents"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(1024), default="")
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now)
