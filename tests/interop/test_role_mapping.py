"""End to end: group-to-role mapping. A user of the real slapd whose nested groups map to roles signs in through
a python3-saml SP and an authlib OIDC client; the roles arrive in the assertion and in the ID token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import LiveServer
from ldap_server import Slapd, directory_config
from oidc_peers import browse, register, rp, start
from saml_peers import sign_in_at_a_new_sp

from idp.extensions import db

# zoë is a direct member of engineers only; rnd (engineers are in it) and staff (rnd is in it) are nested.
ROLE_MAP = {"sales": ["seller"], "rnd": ["developer"], "staff": ["viewer", "developer"], "auditors": ["auditor"]}
ROLE = "https://example.com/role"


@pytest.fixture
def idp(directory_server: Callable[..., LiveServer], slapd: Slapd, tmp_path: Path) -> Iterator[LiveServer]:
    server = directory_server(directory_config(slapd, tmp_path))
    with server.app.app_context():
        yield server
        db.session.remove()


def test_nested_directory_groups_become_roles_in_the_assertion_and_the_id_token(idp: LiveServer) -> None:
    rules = ({"attribute": "groups", "name": "groups"},
             {"attribute": "roles", "name": ROLE, "name_format": "uri", "roles": ROLE_MAP},
             {"attribute": "roles", "name": "sales-role", "roles": {"sales": ["seller"]}})
    auth = sign_in_at_a_new_sp(idp.url, "zoë", "zoë-pw", rules)
    attributes = auth.get_attributes()
    assert attributes["groups"] == ["engineers", "rnd", "staff"]
    assert attributes[ROLE] == ["developer", "viewer"]  # map order, each once
    assert "sales-role" not in attributes  # no matching group: left out

    reg = register(claim_map=({"attribute": "username", "name": "preferred_username", "scope": "profile"},
                              {"attribute": "roles", "name": "roles", "scope": "groups", "roles": ROLE_MAP}))
    session = rp(idp.url, reg)
    authorization = start(session)
    arrival = browse(requests.Session(), authorization.url, username="zoë", password="zoë-pw")
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=authorization.verifier, state=authorization.state)
    claims = session.parse_id_token(token, nonce=authorization.nonce)
    assert claims["preferred_username"] == "zoë"
    assert claims["roles"] == ["developer", "viewer"]
    # Without the groups scope the roles (which reveal group membership) are not released.
    session = rp(idp.url, reg, scope="openid profile")
    authorization = start(session)
    arrival = browse(requests.Session(), authorization.url, username="zoë", password="zoë-pw")
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=authorization.verifier, state=authorization.state)
    assert "roles" not in session.parse_id_token(token, nonce=authorization.nonce)
