"""OIDC claims come from the same release() as SAML attributes, filtered by the granted scopes."""

from __future__ import annotations

from datetime import UTC, datetime

from idp.authn.principal import Principal
from idp.oidc.claims import user_claims
from idp.oidc.clients import DEFAULT_CLAIM_MAP

ALICE = Principal(user_id=7, username="alice", email="alice@example.test", given_name="Alice",
                  family_name=None, display_name="Alice Liddell", groups=("staff",), source="local",
                  authn_at=datetime(2026, 1, 1, tzinfo=UTC))


def test_scopes_choose_the_claims() -> None:
    assert user_claims(ALICE, DEFAULT_CLAIM_MAP, "openid") == {"sub": "7"}
    assert user_claims(ALICE, DEFAULT_CLAIM_MAP, "openid email groups") == {
        "sub": "7", "email": "alice@example.test", "groups": ["staff"]}
    profile = user_claims(ALICE, DEFAULT_CLAIM_MAP, "openid profile")
    assert profile == {"sub": "7", "preferred_username": "alice", "name": "Alice Liddell", "given_name": "Alice"}


def test_a_claim_map_cannot_overwrite_protocol_claims() -> None:
    rules = [{"attribute": "username", "name": "sub", "scope": "profile"},
             {"attribute": "email", "name": "iss", "scope": "profile"},
             {"attribute": "email", "name": "mail", "scope": "profile"}]
    assert user_claims(ALICE, rules, "openid profile") == {"sub": "7", "mail": "alice@example.test"}
