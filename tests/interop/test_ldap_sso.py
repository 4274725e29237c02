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
from saml_peers import ATTRIBUTE_MAP, OneLoginSp, idp_metadata, is_login_page, read_post_form, submit_login

from idp.extensions import db
from idp.saml import providers
from idp.saml.providers import SpOptions


@pytest.fixture
def idp(directory_server: Callable[..., LiveServer], slapd: Slapd, tmp_path: Path) -> Iterator[LiveServer]:
    server = directory_server(directory_config(slapd, tmp_path, start_tls=True, ca_file=str(slapd.ca_file)))
    with server.app.app_context():
        yield server
        db.session.remove()


def test_an_ldap_user_reaches_a_saml_sp_and_an_oidc_client_with_nested_groups(idp: LiveServer) -> None:
    sp = OneLoginSp(idp_metadata(idp.url))
    providers.add(sp.metadata(), None, SpOptions(attribute_map=tuple(ATTRIBUTE_MAP)), actor="test")
    http = requests.Session()
    url, request_id = sp.redirect_login("https://sp.example.test/after")
    page = http.get(url, timeout=10)
    assert is_login_page(page)
    page = submit_login(http, page, "zoë", "zoë-pw")
    auth = sp.process_response(read_post_form(page.text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
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
