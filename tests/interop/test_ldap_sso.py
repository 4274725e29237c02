"""End to end: a user of the real slapd signs in through a python3-saml SP and an authlib OIDC client, and
their nested directory groups arrive in the SAML assertion and the ID token."""

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


@pytest.fixture
def idp(directory_server: Callable[..., LiveServer], slapd: Slapd, tmp_path: Path) -> Iterator[LiveServer]:
    server = directory_server(directory_config(slapd, tmp_path, start_tls=True, ca_file=str(slapd.ca_file)))
    with server.app.app_context():
        yield server
        db.session.remove()


def test_an_ldap_user_reaches_a_saml_sp_and_an_oidc_client_with_nested_groups(idp: LiveServer) -> None:
    auth = sign_in_at_a_new_sp(idp.url, "zoë", "zoë-pw")
    assert auth.get_nameid() == "zoë"
    attributes = auth.get_attributes()
    assert attributes["groups"] == ["engineers", "rnd", "staff"]
    assert attributes["mail"] == ["zoe@corp.example"] and attributes["displayName"] == ["Zoë Ünal"]

    # A fresh browser signs in for the OIDC client; authlib validates the ID token.
    reg = register()
    session = rp(idp.url, reg)
    authorization = start(session)
    arrival = browse(requests.Session(), authorization.url, username="bob", password="bob-pw")
    assert arrival.login_prompts == 1
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=authorization.verifier, state=authorization.state)
    claims = session.parse_id_token(token, nonce=authorization.nonce)
    assert claims["preferred_username"] == "bob" and claims["email"] == "bob@corp.example"
    assert claims["groups"] == ["auditors", "staff"]
    # Tokens issued later (refresh, userinfo) rebuild the principal from the shadow row: the groups survive.
    session.refresh_token(session.server_metadata["token_endpoint"], refresh_token=token["refresh_token"])
    assert session.userinfo()["groups"] == ["auditors", "staff"]
