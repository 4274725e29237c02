"""Single sign-on across protocols: a sign-in made for a python3-saml SP serves an authlib OIDC client."""

from __future__ import annotations

from typing import Any

import requests
from helpers import make_user
from oidc_peers import PASSWORD, browse, register, rp, start
from saml_peers import ATTRIBUTE_MAP, OneLoginSp, idp_metadata, is_login_page, read_post_form, register_sp, submit_login


def test_a_saml_sign_in_gives_an_oidc_code_without_a_second_password_prompt(live_server: Any) -> None:
    make_user("alice", PASSWORD, groups=["staff"], email="alice@example.test")
    sp = OneLoginSp(idp_metadata(live_server.url))
    register_sp(sp.metadata(), attribute_map=tuple(ATTRIBUTE_MAP))
    http = requests.Session()

    url, request_id = sp.redirect_login("https://sp.example.test/after")
    page = http.get(url, timeout=10)
    assert is_login_page(page)
    page = submit_login(http, page, "alice", PASSWORD)
    auth = sp.process_response(read_post_form(page.text), request_id)
    assert auth.get_errors() == [] and auth.get_nameid() == "alice"

    reg = register()
    session = rp(live_server.url, reg)
    authorization = start(session)
    arrival = browse(http, authorization.url, username=None)  # None: a login page would fail the test
    assert arrival.login_prompts == 0
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=authorization.verifier, state=authorization.state)
    claims = session.parse_id_token(token, nonce=authorization.nonce)
    assert claims["preferred_username"] == "alice" and claims["groups"] == ["staff"]

    # Another browser, with no session, is asked for the password.
    assert browse(requests.Session(), start(session).url).login_prompts == 1
