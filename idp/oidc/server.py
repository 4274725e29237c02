"""The authlib authorization server: grants, token storage, client authentication and token endpoints.

authlib runs the protocol (parameter checks, PKCE, prompt, error shapes, ID token encoding with joserfc);
this module supplies what it leaves to us: storage of codes (idp.state.oidc_codes) and tokens (hashed, see
idp.store.oidc), single use of codes and refresh tokens with revocation on replay, the signing keys, the
claims, and one decision point (:func:`decide`) that every grant calls. The token endpoint commits on
success (a code exchange in Redis mode commits its tokens just before marking the code used).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Request
from authlib.oauth2.rfc6749 import OAuth2Request, grants
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator, BearerTokenValidator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9207 import IssuerParameter
from authlib.oidc.core.grants import OpenIDCode, OpenIDToken
from flask import has_request_context
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Row, bindparam, select, update

from idp import audit, clock
from idp.access.decide import AccessDenied, AppTarget, authorize
from idp.audit import AuditEvent
from idp.authn.principal import Principal, UserSnapshot, load_snapshot, snapshot_of, with_snapshot
from idp.authn.revalidation import principal_now
from idp.authn.session import session_goes_on
from idp.errors import dependency_unavailable, first_line
from idp.extensions import db
from idp.keys import EC, RSA, SigningKey
from idp.oidc import access_tokens, clients
from idp.oidc.claims import subject, user_claims
from idp.runtime import keystore, per_request, settings
from idp.state import changed, from_row, labelled, once
from idp.state import oidc_codes as codes
from idp.state.oidc_codes import AuthorizationCode
from idp.store import OidcToken, SsoSessionRow, User
from idp.store.oidc import Client, digest

log = logging.getLogger(__name__)

ACCESS_TOKEN_SECONDS = 3600
# request.environ: when the assignment that gives this request's user the client ends (decide() found it).
_APP_ENDS = "idp.oidc_app_ends"
REFRESH_TOKEN_LIFETIME = timedelta(days=14)
# However often it is refreshed, a grant ends this long after the sign-in that started it (ASVS 5 V10.4.8): a
# device's tokens belong to no SSO session whose absolute lifetime would end them (a browser's do, sooner).
REFRESH_FAMILY_LIFETIME = timedelta(days=90)
ID_TOKEN_SECONDS = 600
SECRET_AUTH = ["client_secret_basic", "client_secret_post", "private_key_jwt"]


@dataclass(frozen=True)
class EndUser:
    """The user a grant acts for, as authlib carries it in ``request.user``; ``session_id`` ties issued
    codes and tokens to the SSO session for logout."""

    principal: Principal
    session_id: str | None


# --- the decision point -------------------------------------------------------------------------------

def decide(principal: Principal | None, client: Client, grant_type: str) -> None:
    """May ``principal`` (None for a machine client, or before a device's user is known) use ``client``
    now? Every grant asks here: the client must still allow the grant (UnauthorizedClientError), and the
    user must have been given the client (:func:`idp.access.decide.authorize`, which audits a refusal and
    raises AccessDenied). Callers answer AccessDenied the way their endpoint must: ``access_denied`` at the
    redirect URI (authorize), ``invalid_grant`` at the token endpoint (:func:`decide_token`), the error page
    on the device page. A machine client (client_credentials) acts for no user: no app check.
    """
    # As the client stands now: a commit earlier in this request (a directory asked again, a jti spent) drops
    # the request's copy, so a client removed or changed meanwhile is read again here.
    current = clients.get(client.client_id)
    if current is None:
        raise InvalidClientError(description="The client is no longer registered.")
    if not current.check_grant_type(grant_type):
        raise UnauthorizedClientError(f"The client is not allowed to use {grant_type}.")
    if principal is not None:
        ends = _authorize(principal, client.client_id)
        if ends is not None and has_request_context():
            flask_request.environ[_APP_ENDS] = ends  # for the access token this request may issue


def _authorize(principal: Principal, client_id: str) -> datetime | None:
    """The user's access to the client now (AccessDenied, audited, when they have none): when the assignment
    that gives it ends, if it does."""
    grant = authorize(principal, AppTarget("oidc", client_id), clock.now(),
                      client_ip=flask_request.remote_addr if has_request_context() else None)
    return grant.apps[0].until if grant.apps else None


def still_given(principal: Principal, client_id: str) -> bool:
    """Is a token's user still given its client (the check every grant makes, at a token's use: userinfo,
    introspection)? A user unassigned, whose assignment ended or who left the assigned group gets no claims
    and an inactive token at once, not when it expires; a refusal is audited as ``access.denied``. The token
    is not revoked: given the client again, the user's tokens work again, as their refresh token does."""
    try:
        _authorize(principal, client_id)
    except AccessDenied:
        return False
    return True


def decide_token(principal: Principal, client: Client, grant_type: str) -> None:
    """:func:`decide` at the token endpoint: a user no longer given the client makes the code, refresh
    token or device code held for them an invalid grant (RFC 6749 5.2)."""
    try:
        decide(principal, client, grant_type)
    except AccessDenied as exc:
        raise InvalidGrantError(exc.message) from exc


# --- keys and tokens -------------------------------------------------------------------------------------

_KEYS = "idp.oidc_signing_keys"


def signing_key(alg: str) -> SigningKey:
    """The active key for an algorithm, parsed once per process (KeyStore caches the ring) and looked up once per
    request: an ID token's header and signature then name the same key even if a rotation lands between the two
    (each look-up stats the key manifest)."""
    return per_request(_KEYS, alg, lambda: keystore(EC if alg == "ES256" else RSA).ring().active)


def _access_token(client: Client, grant_type: str, user: EndUser | None, scope: str) -> str:
    if client.access_token_format == access_tokens.JWT:
        return access_tokens.signed(signing_key(access_tokens.ALG), client, user, scope,
                                    _expires_in(client, grant_type))
    return access_tokens.opaque()


def _refresh_token(**_: Any) -> str:
    return access_tokens.opaque()


def _expires_in(client: Client, grant_type: str) -> int:
    """An access token's lifetime: no longer than the assignment that gives its user the client, as a SAML app's
    session (SessionNotOnOrAfter); a JWT one is checked by resource servers without asking here."""
    ends: datetime | None = flask_request.environ.get(_APP_ENDS) if has_request_context() else None
    if ends is None:
        return ACCESS_TOKEN_SECONDS
    return max(1, min(ACCESS_TOKEN_SECONDS, int((ends - clock.now()).total_seconds())))


def active_user(user_id: int | None) -> UserSnapshot | None:
    """The user with their groups (one Core statement), or None when they were deleted or disabled."""
    return _enabled(load_snapshot(user_id)) if user_id is not None else None


def _enabled(user: UserSnapshot | None) -> UserSnapshot | None:
    return user if user is not None and user.enabled else None


def audit_event(type_: str, client_id: str | None, *, outcome: str = "success", username: str | None = None,
           reason: str | None = None, details: dict[str, Any] | None = None, commit: bool = True) -> None:
    audit.record(AuditEvent(type=type_, outcome=outcome, username=username, sp=client_id,
                            client_ip=flask_request.remote_addr if has_request_context() else None, reason=reason,
                            details=details or {}), commit=commit)


def revoke_tokens(*conditions: Any) -> int:
    """Revoke the matching tokens; how many."""
    return _every_row(update(OidcToken).where(OidcToken.revoked_at.is_(None), *conditions)
                      .values(revoked_at=clock.now()))


def _every_row(statement: Any) -> int:
    """Run an UPDATE of tokens until it changes nothing; how many rows it changed. On PostgreSQL an UPDATE that
    waited on a row a refresh held goes on with the rows it had found, and misses the token that refresh added:
    each new statement sees it (once more in the usual case)."""
    total = 0
    while count := changed(db.session.execute(statement)):
        total += count
    return total


def session_ended(ids: list[str], successor: str | None) -> None:
    """Tokens issued in an SSO session end with it, and so do its unused codes, however it ends (logout, SAML
    SLO, expiry, a disabled user), as Keycloak binds refresh tokens to the session; when the same user signs
    in again the session goes on under a new id, and so do its tokens and codes."""
    # Codes first: a code exchange in flight is then settled before its tokens are looked for below.
    codes.session_ended(ids, successor, clock.now())
    if successor is not None:
        _every_row(update(OidcToken).where(OidcToken.session_id.in_(ids)).values(session_id=successor))
        return
    revoke_tokens(OidcToken.session_id.in_(ids))


def user_ended(user_id: int) -> None:
    """All of a user's sessions were ended for them (disabled, deleted, password reset): the tokens issued in
    none end too, a device's, which signing out of a browser leaves alone. (Those of the ended sessions ended
    with them; those of a session kept, where an admin set their own password, stay.)"""
    revoke_tokens(OidcToken.user_id == user_id, OidcToken.session_id.is_(None))


def _revoke_code_tokens(code: AuthorizationCode, why: str) -> None:
    """A replayed code: revoke everything issued from it (RFC 6749 4.1.2), audit, and commit now, since the
    token endpoint's own transaction is about to be rolled back with the refusal."""
    db.session.rollback()
    count = revoke_tokens(OidcToken.code_hash == code.code_hash)
    audit_event("oidc.code_reuse", code.client_id, outcome="failure", username=_username(code.user_id),
           reason=why, details={"revoked_tokens": count})


def _revoke_family(token: RefreshToken, why: str) -> None:
    db.session.rollback()
    count = revoke_tokens(OidcToken.family_id == token.family_id)
    audit_event("oidc.refresh_reuse", token.client_id, outcome="failure", username=_username(token.user_id),
           reason=why, details={"revoked_tokens": count, "family": token.family_id})


def _username(user_id: int | None) -> str | None:
    if user_id is None:
        return None
    name: str | None = db.session.scalar(select(User.username).where(User.id == user_id))
    return name


def save_token(token: dict[str, Any], request: OAuth2Request) -> None:
    """Store a new token row (hashes only). Not committed here: the view commits with the code or refresh
    token consumption that follows, or rolls both back."""
    t = clock.now()
    client: Client = request.client
    end_user: EndUser | None = request.user
    code: AuthorizationCode | None = request.authorization_code
    parent: RefreshToken | None = request.refresh_token
    refresh = token.get("refresh_token")
    scope = token.get("scope", "")
    # A refresh that asked for less: the access token gets less, the next refresh token keeps what it had.
    kept = parent.get_scope() if parent is not None and refresh else scope
    row = dict(
        client_id=client.client_id,
        user_id=end_user.principal.user_id if end_user else None,
        session_id=end_user.session_id if end_user else None,
        grant_type=request.payload.grant_type,
        scope=scope,
        refresh_scope=kept if kept != scope else None,
        access_token_hash=digest(token["access_token"]),
        refresh_token_hash=digest(refresh) if refresh else None,
        family_id=parent.family_id if parent else secrets.token_hex(16),
        code_hash=code.code_hash if code else (parent.code_hash if parent else None),
        auth_time=end_user.principal.authn_at if end_user else None,
        issued_at=t,
        expires_at=t + timedelta(seconds=int(token.get("expires_in") or ACCESS_TOKEN_SECONDS)),
        refresh_expires_at=_refresh_expiry(t, end_user) if refresh else None,
    )
    # A Core INSERT on the connection, not an ORM object: nothing in this request reads the row back, and the
    # unit of work's flush machinery was a tenth of a token request.
    db.session.connection().execute(_INSERT_TOKEN, row)
    issued = functools.partial(
        audit_event, "oidc.refresh" if parent else "oidc.token", client.client_id,
        username=end_user.principal.username if end_user else None, commit=False,
        details={"grant_type": row["grant_type"], "scope": row["scope"], "refresh_token": bool(refresh),
                 "family": row["family_id"]})
    if code is None:
        issued()
    else:
        # Audited once this exchange has won the code (delete_authorization_code): in Redis mode the tokens are
        # committed before the code is marked used, and an exchange that loses that race is refused.
        request.audit_issued = issued


_INSERT_TOKEN = OidcToken.__table__.insert()


def _refresh_expiry(t: datetime, end_user: EndUser | None) -> datetime:
    until = t + REFRESH_TOKEN_LIFETIME
    return min(until, end_user.principal.authn_at + REFRESH_FAMILY_LIFETIME) if end_user is not None else until


# --- grants -----------------------------------------------------------------------------------------------

class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only ("plain" protects nothing against a leaked request); required for public clients,
    and confidential ones registered with require_pkce, at the authorization request already, not only at the
    token request."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        challenge = data.get("code_challenge")
        client = grant.request.client
        if not challenge and (client.public or client.require_pkce):
            raise InvalidRequestError("This client must use PKCE (code_challenge with S256).")
        if challenge and data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only code_challenge_method=S256 is supported.")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: AuthorizationCode) -> str | None:
        return authorization_code.code_challenge

    def get_authorization_code_challenge_method(self, authorization_code: AuthorizationCode) -> str | None:
        return authorization_code.code_challenge_method


def _granted_scope(request: OAuth2Request) -> str:
    """The scope of the grant being exchanged: an authorization code's or a device code's."""
    granted = request.authorization_code or request.credential
    scope: str = granted.get_scope() if granted is not None else ""
    return scope


class IdTokens(OpenIDToken):  # type: ignore[misc]
    """ID tokens for any grant with a user: our issuer, the client's algorithm and our active key for it,
    and the released claims."""

    def resolve_client_private_key(self, client: Client) -> Any:
        return signing_key(client.id_token_alg).jwk

    def get_encode_header(self, client: Client) -> dict[str, str]:
        key = signing_key(client.id_token_alg)
        return {"alg": key.alg, "kid": key.jwk_kid, "typ": "JWT"}

    def get_compatible_claims(self, request: OAuth2Request) -> dict[str, Any]:
        # Called once per ID token with the request (generate_user_info is not given the client).
        t = int(clock.now().timestamp())
        end_user: EndUser = request.user
        client: Client = request.client
        claims = user_claims(end_user.principal, client.claim_map, _granted_scope(request))
        claims.update(iss=settings().base, aud=client.client_id, azp=client.client_id, iat=t,
                      exp=t + ID_TOKEN_SECONDS, auth_time=int(end_user.principal.authn_at.timestamp()))
        return claims

    def generate_user_info(self, user: EndUser, scope: str) -> dict[str, Any]:
        return {"sub": subject(user.principal)}


class OpenIDConnect(IdTokens, OpenIDCode):  # type: ignore[misc]
    """ID tokens for the code grant, plus its authorization-request checks (nonce, prompt)."""

    def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
        # A nonce seen before for this client is a replayed authentication request.
        return codes.nonce_seen(request.payload.client_id, nonce, clock.now())


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_AUTH, "none"]
    # Set by query_authorization_code (authlib makes a grant per request): the rows of the code's user, read with
    # it in the database (none in Redis).
    user_rows: Sequence[Row[Any]] | None = None

    def generate_authorization_code(self) -> str:
        # 256 bits from the OS at once, like our tokens (authlib draws each of its 48 characters separately).
        return access_tokens.opaque()

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        end_user: EndUser = request.user
        data = request.payload.data
        codes.save(AuthorizationCode(
            code_hash=digest(code), client_id=request.client.client_id, user_id=end_user.principal.user_id,
            session_id=end_user.session_id, redirect_uri=request.payload.redirect_uri or "",
            scope=request.scope or "", nonce=data.get("nonce"), auth_time=end_user.principal.authn_at,
            code_challenge=data.get("code_challenge"), code_challenge_method=data.get("code_challenge_method"),
            expires_at=clock.now() + codes.LIFETIME,
        ))
        audit_event("oidc.authorize", request.client.client_id, username=end_user.principal.username, commit=False,
               details={"scope": request.scope, "redirect_uri": request.payload.redirect_uri})
        db.session.commit()

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        if len(code) > 256:
            return None
        # Its user with their groups, read with it in the database (authenticate_user judges); in Redis, read then.
        found, self.user_rows = codes.find_joined(digest(code), _CODE_AND_USER)
        if found is None or found.client_id != client.client_id:
            return None
        if found.used_at is not None:
            _revoke_code_tokens(found, "authorization code used twice")
            return None
        if found.expires_at <= clock.now():
            return None
        return found

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        # Kept, marked used: only one of two concurrent exchanges gets FIRST.
        outcome = codes.use(authorization_code, clock.now())
        if outcome is codes.Use.AGAIN:
            _revoke_code_tokens(authorization_code, "authorization code used concurrently")
            raise InvalidGrantError("The authorization code has already been used.")
        if outcome is codes.Use.GONE:
            # Expired, or its sign-in ended, while being exchanged: nothing issued from it may stay (in Redis
            # mode the tokens were already committed, see codes.use).
            db.session.rollback()
            revoke_tokens(OidcToken.code_hash == authorization_code.code_hash)
            db.session.commit()
            raise InvalidGrantError("The authorization code has expired or its sign-in has ended.")
        self.request.audit_issued()

    def authenticate_user(self, authorization_code: AuthorizationCode) -> EndUser | None:
        rows = self.user_rows
        user = _enabled(snapshot_of(rows)) if rows is not None else active_user(authorization_code.user_id)
        if user is None:
            return None
        principal = principal_now(user, authorization_code.auth_time)
        if principal is None:
            raise InvalidGrantError("The user is no longer active.")
        decide_token(principal, self.request.client, self.GRANT_TYPE)
        # Consent withdrawn since the code was issued (revoking it revokes tokens, and a code is not one yet).
        # Imported here: consent revokes tokens through this module. A first-party client asks nothing of it.
        from idp.oidc import consent

        if consent.needed(principal, self.request.client, authorization_code.scope):
            raise InvalidGrantError("The user has withdrawn their consent to this client.")
        return EndUser(principal, authorization_code.session_id)


@dataclass(frozen=True)
class RefreshToken:
    """A presented refresh token's row, as much of it as a refresh reads, read with one Core statement (the ORM's
    loading cost more than the query); authlib asks it for the client and the scope."""

    id: int
    client_id: str
    user_id: int | None
    session_id: str | None
    scope: str
    refresh_scope: str | None
    family_id: str
    code_hash: str | None
    auth_time: datetime | None
    refresh_expires_at: datetime | None
    refresh_used_at: datetime | None
    revoked_at: datetime | None
    # Its user with their groups, read with the row (None: deleted since); authenticate_user judges.
    user: UserSnapshot | None = field(default=None, compare=False, repr=False)
    # The absolute end of its SSO session, read with the row when sessions live in the database (None: no such
    # session row, or sessions in Redis).
    session_ends_at: datetime | None = field(default=None, compare=False, repr=False)

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope if self.refresh_scope is None else self.refresh_scope


def _session_goes_on(session_id: str) -> bool:
    """session_goes_on, where Redis (the sessions' store; the tokens are in the database) being down lets the
    refresh go on as before the check: an outage there must not end every client's access. (The database down
    fails the refresh anyway: its transaction is gone.)"""
    try:
        return session_goes_on(session_id)
    except redis.RedisError as exc:
        if not dependency_unavailable(exc):
            raise
        log.warning("refresh in session %s… not checked against it, its store is unavailable: %s",
                    session_id[:8], first_line(exc))
        return True


class RefreshTokenGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_AUTH, "none"]
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh token is used once

    def authenticate_refresh_token(self, refresh_token: str) -> RefreshToken | None:
        rows = db.session.connection().execute(_BY_REFRESH_HASH, {"hash": digest(refresh_token)}).all()
        # The token's columns (labelled), then its user's (one row per group).
        row = (from_row(RefreshToken, rows[0], _ROW_PREFIX, user=snapshot_of(rows),
                        session_ends_at=rows[0].session_ends_at) if rows else None)
        if row is None or row.revoked_at is not None:
            return None
        if row.refresh_used_at is not None:
            _revoke_family(row, "refresh token used twice")
            return None
        t = clock.now()
        if row.refresh_expires_at is None or row.refresh_expires_at <= t:
            return None
        if row.auth_time is not None and row.auth_time + REFRESH_FAMILY_LIFETIME <= t:
            return None  # a grant older than the cap, stored before it (its own expiry knows nothing of it)
        return row

    def authenticate_user(self, refresh_token: RefreshToken) -> EndUser:
        user = _enabled(refresh_token.user)
        if user is None or refresh_token.auth_time is None:
            # authlib's own answer to no user would be invalid_request; the grant is what no longer holds
            # (RFC 6749 5.2), as for a code.
            raise InvalidGrantError("The user is no longer active.")
        # Tokens issued in an SSO session end with it, also when its absolute lifetime runs out with nobody's
        # browser there to notice (session_goes_on says why not its idle timeout). A device's tokens belong to
        # no session.
        ends = refresh_token.session_ends_at
        read = refresh_token.session_id
        # Read with the token in the database: a session within its lifetime needs no second look.
        if read is not None and not (ends is not None and clock.now() < ends) and not _session_goes_on(read):
            # Or the same user signed in again since the token was read: the session went on under a new id,
            # and its tokens with it.
            now_in = db.session.scalar(select(OidcToken.session_id).where(OidcToken.id == refresh_token.id))
            if now_in in (None, read) or not _session_goes_on(now_in):
                raise InvalidGrantError("The sign-in this token was issued in has ended.")
        # The directory is asked again now and then: a user gone there gets no new tokens (their refresh tokens
        # were revoked with their sessions).
        principal = principal_now(user, refresh_token.auth_time)
        if principal is None:
            raise InvalidGrantError("The user is no longer active.")
        decide_token(principal, self.request.client, self.GRANT_TYPE)
        return EndUser(principal, refresh_token.session_id)

    def revoke_old_credential(self, refresh_token: RefreshToken) -> None:
        # Statements built once, on the connection: the ORM's bulk update cost several times the SQL.
        connection = db.session.connection()
        session_id = refresh_token.session_id
        for _ in range(3):
            # Used only in the session it was read in: the token just issued was written with that session's id.
            if connection.execute(_USE_REFRESH, {"row": refresh_token.id, "t": clock.now(),
                                                 "session": session_id}).rowcount == 1:
                if session_id != refresh_token.session_id:
                    connection.execute(_FOLLOW_SESSION, {"family": refresh_token.family_id,
                                                         "old": refresh_token.session_id, "new": session_id})
                return
            used, revoked, session_id = connection.execute(_REFRESH_STATE, {"row": refresh_token.id}).one()
            if used is not None:
                _revoke_family(refresh_token, "refresh token used concurrently")
                raise InvalidGrantError("The refresh token has already been used.")
            if revoked is not None:
                # Revoked since it was read (a logout, a revocation), not used: no replay to answer.
                raise InvalidGrantError("The refresh token has been revoked.")
            # Neither: the same user signed in again since it was read, and its session went on under a new id
            # (session_ended moved the family). Used there, the token just issued follows it, or a logout would
            # leave that token alive.
        raise InvalidGrantError("The refresh token's sign-in changed while it was used; try again.")


_TOKENS = OidcToken.__table__
_CODE_AND_USER = codes.select_joined(with_snapshot)
_REFRESH_FIELDS = [f.name for f in fields(RefreshToken) if f.name not in ("user", "session_ends_at")]
# Labelled: the user's columns come under their own names (snapshot_of).
_ROW_PREFIX = "token_"
_SESSIONS = SsoSessionRow.__table__
_BY_REFRESH_HASH = with_snapshot(
    select(*labelled((_TOKENS.c[name] for name in _REFRESH_FIELDS), _ROW_PREFIX),
           _SESSIONS.c.expires_at.label("session_ends_at"))
    .select_from(_TOKENS.outerjoin(_SESSIONS, _SESSIONS.c.id == _TOKENS.c.session_id))
    .where(_TOKENS.c.refresh_token_hash == bindparam("hash")), _TOKENS.c.user_id)
_USE_REFRESH = (update(_TOKENS)
                .where(_TOKENS.c.id == bindparam("row"), _TOKENS.c.refresh_used_at.is_(None),
                       _TOKENS.c.revoked_at.is_(None), _TOKENS.c.session_id.is_not_distinct_from(bindparam("session")))
                .values(refresh_used_at=bindparam("t")))
_FOLLOW_SESSION = (update(_TOKENS)
                   .where(_TOKENS.c.family_id == bindparam("family"), _TOKENS.c.session_id == bindparam("old"))
                   .values(session_id=bindparam("new")))
_REFRESH_STATE = select(_TOKENS.c.refresh_used_at, _TOKENS.c.revoked_at, _TOKENS.c.session_id).where(
    _TOKENS.c.id == bindparam("row"))


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_AUTH

    def validate_token_request(self) -> None:
        super().validate_token_request()
        decide(None, self.request.client, self.GRANT_TYPE)


# authlib's and most client libraries' default lifetime for a client assertion is an hour.
MAX_ASSERTION_SECONDS = 3600 + 300


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    """private_key_jwt (RFC 7523 / OIDC Core 9): a JWT signed with a key from the client's registered JWKS."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def get_audiences(self) -> list[str]:
        base = settings().base
        return [base, f"{base}/oauth/token", f"{base}/oauth/introspect", f"{base}/oauth/revoke"]

    def resolve_client_public_key(self, client: Client) -> KeySet:
        # authlib asks before it knows the client may use this method; joserfc raises on an empty key set.
        if client.auth_method != self.CLIENT_AUTH_METHOD or not client.jwks:
            raise InvalidClientError(description="The client does not authenticate with private_key_jwt.")
        return KeySet.import_key_set(client.jwks)  # type: ignore[arg-type]

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        # authlib's, but for the TypeError joserfc raises on a crit header that is no list (read before the
        # signature): invalid_client, not a 500. Caught around the decoding only, not our claim checks.
        try:
            token = jwt.decode(assertion, resolve_key)
        except JoseError as exc:
            raise InvalidClientError(description=exc.description) from exc
        except TypeError as exc:
            raise InvalidClientError(description="The client assertion's header is malformed.") from exc
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: Any) -> None:
        # A client assertion is for one request: one valid for years would be a long-lived secret, and an
        # absurd exp must be a refusal, not an overflow.
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp - clock.now().timestamp() > MAX_ASSERTION_SECONDS:
            raise InvalidClientError(description="The client assertion must expire within an hour.")
        super().verify_claims(claims)

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        """Each assertion once: its jti is remembered until the assertion could no longer pass (exp)."""
        namespace = "oidc-jti:" + hashlib.sha256(str(claims["sub"]).encode()).hexdigest()[:48]
        exp = claims["exp"]  # verify_claims has bounded it
        keep_until = max(clock.now(), datetime.fromtimestamp(exp, UTC)) + timedelta(seconds=self.leeway)
        # Committed at once: a refused token request rolls its transaction back, and the assertion must stay
        # spent all the same (RFC 7523 3: a jti is used once).
        return once.claim(namespace, str(jti)[:512], keep_until, commit=True)


# --- introspection, revocation, bearer tokens ---------------------------------------------------------

@dataclass
class FoundToken:
    """A token row and which of its two tokens was presented."""

    row: OidcToken
    kind: str  # "access_token" | "refresh_token"

    def check_client(self, client: Client) -> bool:
        return self.row.check_client(client)

    @property
    def active(self) -> bool:
        row, t = self.row, clock.now()
        if row.revoked_at is not None:
            return False
        if self.kind == "refresh_token":
            return row.refresh_used_at is None and row.refresh_expires_at is not None and t < row.refresh_expires_at
        return t < row.expires_at


# Opaque tokens are 43 characters, a JWT access token a kilobyte or two: anything longer is not ours.
MAX_TOKEN = 4096


def find_token(value: str, hint: str | None) -> FoundToken | None:
    if not value or len(value) > MAX_TOKEN:
        return None
    h = digest(value)
    order = ("refresh_token", "access_token") if hint == "refresh_token" else ("access_token", "refresh_token")
    for kind in order:
        column = OidcToken.access_token_hash if kind == "access_token" else OidcToken.refresh_token_hash
        row = db.session.scalar(select(OidcToken).where(column == h))
        if row is not None:
            return FoundToken(row, kind)
    return None


class _AnyHint:
    """RFC 7009 2.1 and RFC 7662 2.1: the token_type_hint only speeds up the look-up, and one the server does not
    know is ignored (authlib refuses it, unsupported_token_type, and a revocation would not happen)."""

    def check_params(self, request: OAuth2Request, client: Client) -> None:
        if "token" not in request.form:
            raise InvalidRequestError("The token to look up is missing.")


class Introspection(_AnyHint, IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = SECRET_AUTH

    def query_token(self, token_string: str, token_type_hint: str | None) -> FoundToken | None:
        return find_token(token_string, token_type_hint)

    def check_permission(self, token: FoundToken, client: Client, request: OAuth2Request) -> bool:
        # A client may introspect its own tokens; resource servers get their own permission later.
        return token.check_client(client)

    def create_introspection_payload(self, token: FoundToken | None) -> dict[str, Any]:
        if token is None or not token.active:
            return {"active": False}
        row = token.row
        user = active_user(row.user_id)
        # Disabled or deleted since, or no longer given the client. The groups are the user's row's: a resource
        # server may introspect on every call, and must not wait on a directory (userinfo and refresh ask it again
        # when due).
        if row.user_id is not None and (user is None or row.auth_time is None
                                        or not still_given(user.principal(row.auth_time), row.client_id)):
            return {"active": False}
        access = token.kind == "access_token"
        exp = row.expires_at if access else row.refresh_expires_at
        payload: dict[str, Any] = {
            "active": True, "client_id": row.client_id, "scope": row.scope if access else row.refresh_scope_now,
            "iat": int(row.issued_at.timestamp()), "exp": int(exp.timestamp()) if exp else None,
            "iss": settings().base, "aud": row.client_id,
        }
        if access:
            # Only an access token is a Bearer token (RFC 7662 2.2): an API must not take a refresh token for one.
            payload["token_type"] = "Bearer"  # noqa: S105 - a token type, no secret
        if user is not None:
            payload.update(sub=str(user.id), username=user.username)
        return payload


class Revocation(_AnyHint, RevocationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = [*SECRET_AUTH, "none"]

    def query_token(self, token_string: str, token_type_hint: str | None) -> FoundToken | None:
        return find_token(token_string, token_type_hint)

    def revoke_token(self, token: FoundToken, request: OAuth2Request) -> None:
        # Revoking either token ends the grant: the whole family, so a refresh cannot bring it back.
        count = revoke_tokens(OidcToken.family_id == token.row.family_id)
        audit_event("oidc.revoke", token.row.client_id, username=_username(token.row.user_id),
               details={"token_type": token.kind, "revoked_tokens": count})


class AccessTokenValidator(BearerTokenValidator):  # type: ignore[misc]
    def authenticate_token(self, token_string: str) -> OidcToken | None:
        if not token_string or len(token_string) > MAX_TOKEN:
            return None
        row: OidcToken | None = db.session.scalar(
            select(OidcToken).where(OidcToken.access_token_hash == digest(token_string)))
        return row


# --- the server -------------------------------------------------------------------------------------------

class Server(AuthorizationServer):  # type: ignore[misc]
    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        # A request parked during sign-in is replayed from its stored parameters (idp.oidc.authorize).
        if isinstance(request, OAuth2Request):
            return request
        # The request itself, not Flask's proxy to it: authlib reads it a few dozen times per request, and each
        # read through the proxy looked the request up again.
        return FlaskOAuth2Request(cast(Any, flask_request)._get_current_object())


def query_client(client_id: Any) -> Client | None:
    if not isinstance(client_id, str) or not client_id or len(client_id) > 64:
        return None
    return clients.get(client_id)


class _Issuer(IssuerParameter):  # type: ignore[misc]
    """RFC 9207: every authorization response, an error's too, names us, so that a client of several providers
    cannot be handed one's code as if another had sent it (a mix-up attack)."""

    def get_issuer(self) -> str:
        return settings().base


def build_server() -> Server:
    server = Server(query_client=query_client, save_token=save_token)
    server.register_extension(_Issuer())
    server.register_token_generator("default", BearerTokenGenerator(_access_token, _refresh_token, _expires_in))
    server.register_client_auth_method(PrivateKeyJwt.CLIENT_AUTH_METHOD, PrivateKeyJwt())
    server.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), OpenIDConnect()])
    server.register_grant(RefreshTokenGrant)
    server.register_grant(ClientCredentialsGrant)
    server.register_endpoint(Introspection)
    server.register_endpoint(Revocation)
    # Imported here: the device grant builds on this module's decide(), EndUser and IdTokens.
    from idp.oidc import device

    server.register_grant(device.DeviceCodeGrant, [IdTokens()])
    server.register_endpoint(device.DeviceAuthorization)
    return server


def access_denied(redirect_uri: str, state: str | None, why: str) -> AccessDeniedError:
    return AccessDeniedError(description=why, redirect_uri=redirect_uri, state=state)


@functools.cache
def server() -> Server:
    """One server per process: it holds only configuration; all state is in the database or Redis."""
    return build_server()
