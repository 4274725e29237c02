"""Access tokens: opaque (the default) or JWTs after RFC 9068, chosen per client (``access_token_format``).

A JWT access token lets a resource server check it offline against our JWKS: header ``typ`` "at+jwt",
``alg`` RS256 with the active RSA key; claims ``iss`` (our base URL), ``aud``, ``sub``, ``client_id``,
``iat``, ``exp``, ``jti`` and ``scope``. The audience is the client's own id: a client here is registered
together with the API it calls (there is no resource registry or RFC 8707 ``resource`` parameter yet), so
the resource server checks ``aud`` against the client id it expects. ``sub`` is the user's subject (as in the
ID token) or, for client_credentials, the client id (RFC 9068 2.2).

Both kinds are stored the same way (idp.oidc.server.save_token keeps a SHA-256 digest of the whole token),
so revocation, introspection and userinfo work alike: a revoked JWT stays well-signed until it expires, but
introspection answers active=false and userinfo refuses it; a resource server that must see revocation within
the token's hour introspects instead of only checking the signature.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from joserfc import jwt

from idp import clock
from idp.oidc.claims import subject
from idp.runtime import settings

if TYPE_CHECKING:
    from idp.keys import SigningKey
    from idp.oidc.server import EndUser
    from idp.store.oidc import Client

TYPE = "at+jwt"
ALG = "RS256"
JWT = "jwt"  # Client.access_token_format


def opaque() -> str:
    return secrets.token_urlsafe(32)  # 256 bits: stored as SHA-256, see idp.store.oidc


def signed(key: SigningKey, client: Client, user: EndUser | None, scope: str, lifetime: int) -> str:
    """An RFC 9068 access token for ``client`` (acting for ``user``, or for itself when None)."""
    t = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": settings().base, "aud": client.client_id,
        "sub": subject(user.principal) if user is not None else client.client_id,
        "client_id": client.client_id, "iat": t, "exp": t + lifetime, "jti": secrets.token_urlsafe(18),
        "scope": scope,
    }
    if user is not None:
        claims["auth_time"] = int(user.principal.authn_at.timestamp())
    header = {"typ": TYPE, "alg": key.alg, "kid": key.jwk_kid}
    return jwt.encode(header, claims, key.jwk, algorithms=[key.alg])
