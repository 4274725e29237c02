"""OIDC claims of a principal: the client's claim map, filtered by the granted scopes, through the same
:func:`idp.access.claims.release` the SAML attribute statement uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from idp.access.claims import release
from idp.authn.principal import Principal

# Claims whose meaning the protocol fixes: a claim map must not be able to forge an issuer or audience.
RESERVED = frozenset({"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "auth_time", "nonce", "at_hash",
                      "c_hash", "acr", "amr", "azp", "sid"})
# Attributes that are lists even with one value, so clients see one shape.
MULTI_VALUED = frozenset({"groups", "roles"})


def subject(principal: Principal) -> str:
    """The ``sub`` claim: the user's numeric id, stable across renames and never reused."""
    return str(principal.user_id)


def user_claims(principal: Principal, claim_map: Iterable[Mapping[str, Any]], scope: str) -> dict[str, Any]:
    """``sub`` and every mapped claim whose scope was granted; a rule without a scope needs ``profile``."""
    granted = set(scope.split())
    rules = [r for r in claim_map if r.get("scope", "profile") in granted and r.get("name") not in RESERVED]
    claims: dict[str, Any] = {"sub": subject(principal)}
    for attr in release(principal, rules):
        claims[attr.name] = list(attr.values) if attr.attribute in MULTI_VALUED else attr.values[0]
    return claims
