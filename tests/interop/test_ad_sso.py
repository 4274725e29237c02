"""End to end: a user of the real Samba AD domain controller signs in through a python3-saml SP and an
authlib OIDC client, and their three-level nested AD groups arrive in the SAML assertion and the ID token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import LiveServer
from oidc_peers import browse, register, rp, start
from samba_ad import NESTED, SambaAd, ad_config
from saml_peers import sign_in_at_a_new_sp

from idp.extensions import db


@pytest.fixture
def idp(directory_server: Callable[..., LiveServer], samba_ad: SambaAd, tmp_path: Path) -> Iterator[LiveServer]:
    server = directory_server(ad_config(samba_ad, tmp_path))
    with server.app.app_context():
        yield server
        db.session.remove()


def test_an_ad_user_reaches_a_saml_sp_with_nested_groups(idp: LiveServer) -> None:
    auth = sign_in_at_a_new_sp(idp.url, "alice@example.test", "alice-pw")
    assert auth.get_nameid() == "alice"
    attributes = auth.get_attributes()
    assert tuple(attributes["groups"]) == NESTED
    assert attributes["mail"] == ["alice@example.test"]


def test_an_ad_user_reaches_an_oidc_client_with_nested_groups(idp: LiveServer) -> None:
    reg = register()
    session = rp(idp.url, reg)
    authorization = start(session)
    arrival = browse(requests.Session(), authorization.url, username="EXAMPLE\\alice", password="alice-pw")
    assert arrival.login_prompts == 1
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=authorization.verifier, state=authorization.state)
    claims = session.parse_id_token(token, nonce=authorization.nonce)  # authlib checks it against our JWKS
    assert claims["email"] == "alice@example.test"
    assert tuple(claims["groups"]) == NESTED
    assert tuple(session.userinfo()["groups"]) == NESTED
