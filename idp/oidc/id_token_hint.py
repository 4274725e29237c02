"""An ``id_token_hint`` (OIDC Core 3.1.2.1, RP-Initiated Logout 2): an ID token we issued, read back."""

from __future__ import annotations

from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from idp.keys import EC, RSA
from idp.oidc import access_tokens
from idp.runtime import keystore, settings


def read(hint: str) -> dict[str, Any]:
    """The claims of an ID token of ours; ValueError saying why not. Expired hints are accepted (the specs say so:
    logout often comes after the token's lifetime); the signature, issuer and token type are what count."""
    keys = KeySet([k.jwk for kind in (RSA, EC) for k in keystore(kind).ring().published])
    try:
        token = jwt.decode(hint, keys, algorithms=["RS256", "ES256"])
    except (JoseError, ValueError, TypeError) as exc:  # TypeError: joserfc on a crit header that is no list
        raise ValueError("the id_token_hint is not an ID token of ours") from exc
    # A JWT access token has the same key, issuer and audience as an ID token; taken as a hint, it would let
    # whoever holds it (a resource server) end the user's session. Media types compare case-insensitively and
    # may drop "application/" (RFC 7515 4.1.9).
    if str(token.header.get("typ", "")).lower().removeprefix("application/") == access_tokens.TYPE:
        raise ValueError("the id_token_hint is an access token, not an ID token")
    claims = dict(token.claims)
    if claims.get("iss") != settings().base or not isinstance(claims.get("aud"), str | list):
        raise ValueError("the id_token_hint is not an ID token of ours")
    return claims
