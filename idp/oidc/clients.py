"""Registered OpenID Connect clients: look-up for the flows, and the add/update/remove/rotate-secret services.

Services validate everything before storing anything, return the clear-text secret exactly once (only its
digest is stored), and record one audit event per change. The CLI and the admin API and UI call them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import bindparam, delete, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError

from idp import audit, clock
from idp.access.claims import rule_text, validate_rules
from idp.audit import AuditEvent
from idp.errors import BadRequest, Conflict, NotFound
from idp.extensions import db
from idp.key_strength import weakness
from idp.oidc.claims import RESERVED
from idp.runtime import RequestRows
from idp.state import device_codes, oidc_codes
from idp.store import OidcClient, OidcConsent, OidcToken
from idp.store.oidc import PUBLIC_AUTH_METHOD, Client, digest
from idp.text import check_line
from idp.urls import split_url

GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials",
               "urn:ietf:params:oauth:grant-type:device_code")
SCOPES = ("openid", "profile", "email", "groups")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt")
ID_TOKEN_ALGS = ("RS256", "ES256")
ACCESS_TOKEN_FORMATS = ("opaque", "jwt")

# Our attributes as standard OIDC claims, each released under the scope that asks for it. Same rules and
# the same release() as the SAML attribute map; "scope" is the only OIDC-specific key.
DEFAULT_CLAIM_MAP: tuple[dict[str, str], ...] = (
    {"attribute": "username", "name": "preferred_username", "scope": "profile"},
    {"attribute": "display_name", "name": "name", "scope": "profile"},
    {"attribute": "given_name", "name": "given_name", "scope": "profile"},
    {"attribute": "family_name", "name": "family_name", "scope": "profile"},
    {"attribute": "email", "name": "email", "scope": "email"},
    {"attribute": "groups", "name": "groups", "scope": "groups"},
)


def claim_rule(spec: str) -> dict[str, str]:
    """``--claim OURS=NAME[;SCOPE]``: release our attribute OURS as claim NAME when SCOPE (default profile)
    is granted. Checked like every stored map, by :func:`idp.access.claims.validate_rules`."""
    ours, sep, rest = spec.partition("=")
    name, _, scope = rest.partition(";")
    scope = scope.strip() or "profile"
    if not sep or not name.strip():
        raise BadRequest(f"claim {spec!r}: expected OURS=NAME or OURS=NAME;SCOPE", field="claim_map")
    if scope not in SCOPES:
        raise BadRequest(f"claim {spec!r}: unknown scope {scope!r} (known: {', '.join(SCOPES)})", field="claim_map")
    return {"attribute": ours.strip(), "name": name.strip(), "scope": scope}


@dataclass(frozen=True)
class ClientOptions:
    name: str
    redirect_uris: tuple[str, ...] = ()
    post_logout_redirect_uris: tuple[str, ...] = ()
    public: bool = False
    grant_types: tuple[str, ...] = ()  # empty: authorization_code and refresh_token
    scopes: tuple[str, ...] = ()  # empty: all of SCOPES
    auth_method: str | None = None  # None: "none" for public clients, else client_secret_basic
    jwks: dict[str, Any] | None = None
    id_token_alg: str = "RS256"  # noqa: S105 - an algorithm name, not a secret
    first_party: bool = False
    claim_map: tuple[dict[str, Any], ...] = field(default_factory=lambda: DEFAULT_CLAIM_MAP)
    # Every signed-in user may use the client; otherwise only those it is assigned to (idp.access.decide).
    open_to_all: bool = False
    # OIDC's initiate_login_uri: where the portal sends a user to start signing in to the client.
    login_url: str | None = None
    # "jwt": RFC 9068 access tokens a resource server can check offline (idp.oidc.access_tokens).
    access_token_format: str = "opaque"  # noqa: S105 - a format name, not a secret
    # PKCE for a confidential client too (a public client always needs it).
    require_pkce: bool = False


@dataclass(frozen=True)
class Registered:
    """What `add` and `rotate_secret` hand back: the secret is in clear here and nowhere else."""

    client_id: str
    client_secret: str | None


_CLIENTS = OidcClient.__table__
_ROWS = RequestRows("idp.oidc_clients", select(*(_CLIENTS.c[f.name] for f in fields(Client)))
                    .where(_CLIENTS.c.client_id == bindparam("key")), Client)


def get(client_id: str) -> Client | None:
    """The registered client as the flows use it, read once per request (client authentication, the grant and
    the access decision each ask for it). The services below forget it when they change a client, so this
    request then reads it again."""
    # No client id holds a NUL, and PostgreSQL refuses one even in a query: unknown, not a server error.
    return None if "\x00" in client_id else _ROWS.get(client_id)


_forget = _ROWS.forget


def get_or_404(client_id: str) -> OidcClient:
    """The client's row, for the services that change it and the admin views."""
    client: OidcClient | None = None if "\x00" in client_id else db.session.scalar(
        select(OidcClient).where(OidcClient.client_id == client_id))
    if client is None:
        raise NotFound(f"no OIDC client '{client_id}' is registered")
    return client


def all_clients() -> list[OidcClient]:
    return list(db.session.scalars(select(OidcClient).order_by(OidcClient.name, OidcClient.client_id)))


def _check_uri(uri: str, label: str, field: str) -> None:
    parts = split_url(uri)
    if parts is None:
        raise BadRequest(f"{label} {uri!r} is not a valid URI (its host or port cannot be read)", field=field)
    if not parts.scheme or (parts.scheme in ("http", "https") and not parts.hostname):
        raise BadRequest(f"{label} {uri!r} must be an absolute URI", field=field)
    if parts.fragment or "#" in uri:
        raise BadRequest(f"{label} {uri!r} must not have a fragment", field=field)
    if parts.scheme in ("javascript", "data", "file", "vbscript"):
        raise BadRequest(f"{label} {uri!r} uses a scheme that cannot be a redirect target", field=field)
    if len(uri) > 2048:
        raise BadRequest(f"{label} is longer than 2048 characters", field=field)
    if any(c.isspace() or not c.isprintable() for c in uri):
        raise BadRequest(f"{label} {uri!r} holds a space or a control character", field=field)
    if "\\" in uri:
        # Browsers read a backslash as a slash (https://good\@evil/ goes to good), Python's urlsplit does not
        # (its host is evil): the address checked and the one reached would differ.
        raise BadRequest(f"{label} {uri!r} holds a backslash", field=field)
    if "*" in (parts.hostname or ""):
        raise BadRequest(f"{label} {uri!r} has a '*' in its host: redirect URIs match exactly, with no wildcards",
                         field=field)


_LOOPBACK = ("localhost", "127.0.0.1", "::1")


def _check_login_url(uri: str) -> None:
    """A page the user's browser is sent to from the portal: https, or http on this machine only."""
    _check_uri(uri, "login URL", "login_url")
    parts = urlsplit(uri)
    if not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)):
        raise BadRequest(f"login URL {uri!r} must use https (http only on a loopback address)", field="login_url")


def _validated(options: ClientOptions, stored: OidcClient | None = None) -> dict[str, Any]:
    """The options as a row's values, or BadRequest. On a change (``stored``), what it keeps as it was is not
    judged again by checks newer than it: a client stored before them can still be changed otherwise."""
    name = options.name.strip()
    if not name or len(name) > 255:
        raise BadRequest("the name must be 1 to 255 characters", field="name")
    check_line(name, "the name", "name")
    grants = list(dict.fromkeys(options.grant_types or ("authorization_code", "refresh_token")))
    for g in grants:
        if g not in GRANT_TYPES:
            raise BadRequest(f"unknown grant type {g!r}; known: {', '.join(GRANT_TYPES)}", field="grant_types")
    scopes = list(dict.fromkeys(options.scopes or SCOPES))
    for s in scopes:
        if s not in SCOPES:
            raise BadRequest(f"unknown scope {s!r}; known: {', '.join(SCOPES)}", field="scopes")
    for uri in options.redirect_uris:
        if stored is None or uri not in stored.redirect_uris:
            _check_uri(uri, "redirect URI", "redirect_uris")
    for uri in options.post_logout_redirect_uris:
        if stored is None or uri not in stored.post_logout_redirect_uris:
            _check_uri(uri, "post-logout redirect URI", "post_logout_redirect_uris")
    if options.login_url is not None:
        _check_login_url(options.login_url)
    if "authorization_code" in grants and not options.redirect_uris:
        raise BadRequest("the authorization_code grant needs at least one --redirect-uri", field="redirect_uris")
    if options.public:
        if options.auth_method not in (None, PUBLIC_AUTH_METHOD):
            raise BadRequest("a public client has no credentials; it cannot use --auth-method", field="auth_method")
        if "client_credentials" in grants:
            raise BadRequest("a public client cannot use client_credentials: it has nothing to prove who it is",
                             field="grant_types")
        method = PUBLIC_AUTH_METHOD
    else:
        method = options.auth_method or "client_secret_basic"
        if method not in AUTH_METHODS:
            raise BadRequest(f"unknown auth method {method!r}; known: {', '.join(AUTH_METHODS)}", field="auth_method")
    jwks = options.jwks
    if method == "private_key_jwt":
        if not jwks:
            raise BadRequest("private_key_jwt needs the client's public keys (--jwks-file)", field="jwks")
        try:
            keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise BadRequest(f"the client's JWKS cannot be read: {exc}", field="jwks") from exc
        if any(k.is_private for k in keys.keys):
            raise BadRequest("the client's JWKS contains a private key; give only its public keys", field="jwks")
        # Only the keys it adds: a client stored with a weak key can publish a strong one beside it (a rollover).
        kept = ({k.thumbprint() for k in KeySet.import_key_set(stored.jwks).keys}  # type: ignore[arg-type]
                if stored is not None and stored.jwks else set())
        for key in keys.keys:
            if key.thumbprint() in kept:
                continue
            reason = weakness(key.public_key)
            if reason is not None:
                raise BadRequest(f"the client's key {key.kid or ''!r} is {reason}", field="jwks")
    elif jwks:
        raise BadRequest("a JWKS is only used with --auth-method private_key_jwt", field="jwks")
    if options.id_token_alg not in ID_TOKEN_ALGS:
        raise BadRequest(f"ID token algorithm {options.id_token_alg!r} is not one of {', '.join(ID_TOKEN_ALGS)}",
                         field="id_token_alg")
    if options.access_token_format not in ACCESS_TOKEN_FORMATS:
        raise BadRequest(f"access token format {options.access_token_format!r} is not one of "
                         f"{', '.join(ACCESS_TOKEN_FORMATS)}", field="access_token_format")
    unchanged = stored is not None and [dict(r) for r in options.claim_map] == list(stored.claim_map)
    problems = [] if unchanged else validate_rules(options.claim_map)
    names = [str(r.get("name")) for r in options.claim_map]
    problems += [] if unchanged else [f"claim {n!r} is the protocol's to set" for n in dict.fromkeys(names)
                                      if n in RESERVED]
    if problems:
        raise BadRequest("claim map: " + "; ".join(problems), field="claim_map")
    return {
        "name": name, "public": options.public, "auth_method": method,
        "redirect_uris": list(dict.fromkeys(options.redirect_uris)),
        "post_logout_redirect_uris": list(dict.fromkeys(options.post_logout_redirect_uris)),
        "grant_types": grants, "scopes": scopes, "jwks": jwks if method == "private_key_jwt" else None,
        "id_token_alg": options.id_token_alg, "first_party": options.first_party,
        "claim_map": [dict(r) for r in options.claim_map],
        "open_to_all": options.open_to_all, "login_url": options.login_url,
        "access_token_format": options.access_token_format, "require_pkce": options.require_pkce,
    }


def _uses_secret(method: str) -> bool:
    return method in ("client_secret_basic", "client_secret_post")


def _new_client_id() -> str:
    # Never starting with "-", which `idp oidc-client show <id>` (and any command line) would take for an option.
    while (client_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return client_id


def add(options: ClientOptions, actor: str) -> Registered:
    values = _validated(options)
    client_id = _new_client_id()
    secret = secrets.token_urlsafe(32) if _uses_secret(values["auth_method"]) else None
    client = OidcClient(client_id=client_id, secret_hash=digest(secret) if secret else None, **values)
    db.session.add(client)
    try:
        db.session.flush()
    except IntegrityError:  # a 128-bit random id collided: vanishingly unlikely, but never overwrite
        db.session.rollback()
        raise Conflict("client id collision; try again") from None
    _forget()
    audit.record(AuditEvent(type="oidc.client.add", actor=actor, sp=client_id, details=_audit_view(values)))
    return Registered(client_id, secret)


def options_of(client: OidcClient) -> ClientOptions:
    """A client's current settings, for :func:`update` to change some of (``dataclasses.replace``)."""
    return ClientOptions(
        name=client.name, redirect_uris=tuple(client.redirect_uris),
        post_logout_redirect_uris=tuple(client.post_logout_redirect_uris), public=client.public,
        grant_types=tuple(client.grant_types), scopes=tuple(client.scopes), auth_method=client.auth_method,
        jwks=client.jwks, id_token_alg=client.id_token_alg, first_party=client.first_party,
        claim_map=tuple(client.claim_map), open_to_all=client.open_to_all, login_url=client.login_url,
        access_token_format=client.access_token_format, require_pkce=client.require_pkce,
    )


def update(client_id: str, options: ClientOptions, actor: str, *, commit: bool = True) -> dict[str, dict[str, Any]]:
    """Change a client's settings to ``options`` (checked as on add); returns what changed ({} when nothing
    did, and then records nothing; without ``commit``, the caller commits it with the rest of its change). A
    client stays public or confidential, and one without a secret cannot start using one (it would have none);
    leaving secrets for private_key_jwt drops the secret at once."""
    client = get_or_404(client_id)
    if options.public != client.public:
        raise BadRequest(f"client '{client_id}' cannot change between public and confidential; register a new one",
                         field="public")
    values = _validated(options, client)
    if _uses_secret(values["auth_method"]) and not _uses_secret(client.auth_method):
        raise BadRequest(f"client '{client_id}' has no secret to authenticate with {values['auth_method']}; "
                         "register a new client", field="auth_method")
    before = {key: getattr(client, key) for key in values}
    changed = {key: {"from": before[key], "to": value} for key, value in values.items() if before[key] != value}
    if not changed:
        return {}
    for key in changed:
        setattr(client, key, values[key])
    if not _uses_secret(client.auth_method):
        client.secret_hash = None
    _forget()
    audit.record(AuditEvent(type="oidc.client.update", actor=actor, sp=client_id,
                            details={"changed": _audit_changes(changed)}), commit=commit)
    return changed


def rotate_secret(client_id: str, actor: str) -> Registered:
    """A new secret replaces the old one at once (there is no overlap: the old one may have leaked)."""
    client = get_or_404(client_id)
    if not _uses_secret(client.auth_method):
        raise BadRequest(f"client '{client_id}' authenticates with {client.auth_method}, not a secret")
    secret = secrets.token_urlsafe(32)
    client.secret_hash = digest(secret)
    _forget()
    audit.record(AuditEvent(type="oidc.client.rotate_secret", actor=actor, sp=client_id))
    return Registered(client_id, secret)


def remove(client_id: str, actor: str) -> None:
    """Unregister a client; its codes, tokens and users' consents go with it."""
    client = get_or_404(client_id)
    name = client.name
    oidc_codes.forget_client(client_id)
    device_codes.forget_client(client_id)
    db.session.execute(delete(OidcConsent).where(OidcConsent.client_id == client_id))
    db.session.execute(sql_update(OidcToken).where(OidcToken.client_id == client_id, OidcToken.revoked_at.is_(None))
                       .values(revoked_at=clock.now()))
    db.session.delete(client)
    _forget()
    audit.record(AuditEvent(type="oidc.client.remove", actor=actor, sp=client_id, details={"name": name}))


def _audit_view(values: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in values.items() if k not in ("jwks", "claim_map")}
    view["claims"] = [rule_text(r) for r in values["claim_map"]]
    view["jwks_keys"] = len((values.get("jwks") or {}).get("keys", []))
    return view


def _audit_changes(changed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = dict(changed)
    if "claim_map" in out:
        out["claim_map"] = {side: [rule_text(r) for r in out["claim_map"][side]] for side in ("from", "to")}
    if "jwks" in out:  # public keys, but bulky: their ids say enough
        out["jwks"] = {side: [k.get("kid") for k in (out["jwks"][side] or {}).get("keys", [])]
                       for side in ("from", "to")}
    return out


def describe(client: OidcClient) -> dict[str, Any]:
    """Everything an admin wants to see about one client (never the secret, which we do not have), JSON-ready."""
    return {
        "client_id": client.client_id, "name": client.name, "public": client.public,
        "auth_method": client.auth_method, "redirect_uris": client.redirect_uris,
        "post_logout_redirect_uris": client.post_logout_redirect_uris, "grant_types": client.grant_types,
        "scopes": client.scopes, "id_token_alg": client.id_token_alg, "first_party": client.first_party,
        "claim_map": client.claim_map, "jwks_keys": [k.get("kid") for k in (client.jwks or {}).get("keys", [])],
        "open_to_all": client.open_to_all, "login_url": client.login_url,
        "access_token_format": client.access_token_format, "require_pkce": client.require_pkce,
        "created_at": client.created_at.isoformat() if client.created_at else None,
    }
