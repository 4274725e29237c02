"""What the OIDC provider refuses, and how: never a redirect to an unregistered address, RFC 6749 errors
otherwise, replayed codes and refresh tokens revoking what they produced, prompt/max_age honoured."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from helpers import make_user
from oidc_peers import PASSWORD, REDIRECT_URI, browse, login_page_username, register, rp, start

from idp import audit


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, email="alice@example.test")
    return live_server


def authorize_url(idp: Any, **params: str) -> str:
    return idp.url + "/oauth/authorize?" + urlencode(params)


def token_request(idp: Any, reg: Any, **data: str) -> requests.Response:
    return requests.post(idp.url + "/oauth/token", data=data, auth=(reg.client_id, reg.client_secret), timeout=10)


def introspect(idp: Any, reg: Any, token: str) -> dict[str, Any]:
    resp = requests.post(idp.url + "/oauth/introspect", data={"token": token},
                         auth=(reg.client_id, reg.client_secret), timeout=10)
    result: dict[str, Any] = resp.json()
    return result


def code_for(idp: Any, reg: Any, http: requests.Session | None = None, **extra: str) -> tuple[str, str]:
    """(code, verifier) through the real login form."""
    verifier = generate_token(48)
    url = authorize_url(idp, response_type="code", client_id=reg.client_id, redirect_uri=REDIRECT_URI,
                        scope="openid email", state="s1", code_challenge=create_s256_code_challenge(verifier),
                        code_challenge_method="S256", **extra)
    arrival = browse(http or requests.Session(), url)
    return arrival.params["code"], verifier


def exchange(idp: Any, reg: Any, code: str, verifier: str) -> requests.Response:
    return token_request(idp, reg, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI,
                         code_verifier=verifier)


def test_an_unregistered_redirect_uri_gets_an_error_page_and_no_redirect(idp: Any) -> None:
    reg = register()
    for redirect in ("https://evil.example.test/callback", REDIRECT_URI + "/more", REDIRECT_URI + "?x=1"):
        resp = requests.get(authorize_url(idp, response_type="code", client_id=reg.client_id,
                                          redirect_uri=redirect, scope="openid", state="s"),
                            allow_redirects=False, timeout=10)
        assert resp.status_code == 400 and "Location" not in resp.headers
        assert "evil" not in resp.headers.get("Location", "")
    resp = requests.get(authorize_url(idp, response_type="code", client_id="nobody", redirect_uri=REDIRECT_URI),
                        allow_redirects=False, timeout=10)
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert any(e.type == "oidc.authorize" and e.outcome == "failure" for e in audit.events())


def test_prompt_none_without_a_session_is_login_required_at_the_client(idp: Any) -> None:
    reg = register()
    resp = requests.get(authorize_url(idp, response_type="code", client_id=reg.client_id,
                                      redirect_uri=REDIRECT_URI, scope="openid", state="xyz", prompt="none",
                                      code_challenge=create_s256_code_challenge("v" * 43),
                                      code_challenge_method="S256"),
                        allow_redirects=False, timeout=10)
    assert resp.status_code == 302
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?") and "error=login_required" in location and "state=xyz" in location
    assert parse_qs(urlsplit(location).query)["iss"] == [idp.url]  # an error response names its sender too


def test_public_clients_must_use_pkce_with_s256(idp: Any) -> None:
    reg = register(public=True)
    assert reg.client_secret is None
    base = {"response_type": "code", "client_id": reg.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid"}
    for extra in ({}, {"code_challenge": "a" * 43, "code_challenge_method": "plain"}):
        resp = requests.get(authorize_url(idp, **base, **extra), allow_redirects=False, timeout=10)
        assert resp.status_code == 302 and "error=invalid_request" in resp.headers["Location"]


def test_a_confidential_client_registered_to_require_pkce_must_use_it(idp: Any) -> None:
    """authlib's client, configured without PKCE, is sent back invalid_request; with S256 it gets its tokens."""
    reg = register(require_pkce=True)
    http = requests.Session()
    without = rp(idp.url, reg, code_challenge_method=None)
    arrival = browse(http, start(without).url)
    assert arrival.params["error"] == "invalid_request" and "must use PKCE" in arrival.params["error_description"]
    session = rp(idp.url, reg)
    auth = start(session)
    arrival = browse(http, auth.url)
    token = session.fetch_token(idp.url + "/oauth/token", authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    assert token["access_token"]
    # The default, for a confidential client: PKCE is its choice.
    plain = rp(idp.url, register(), code_challenge_method=None)
    assert "code" in browse(http, start(plain).url).params


def test_a_wrong_pkce_verifier_is_invalid_grant(idp: Any) -> None:
    reg = register()
    code, _ = code_for(idp, reg)
    resp = exchange(idp, reg, code, generate_token(48))
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


def test_a_wrong_client_secret_is_invalid_client(idp: Any) -> None:
    reg = register()
    code, verifier = code_for(idp, reg)
    resp = requests.post(idp.url + "/oauth/token", auth=(reg.client_id, "not the secret"), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"
    refusal = next(e for e in audit.events() if e.type == "oidc.token")
    assert refusal.outcome == "failure" and refusal.sp == reg.client_id and refusal.reason == "invalid_client"
    # The code was not spent by the failed attempt.
    assert exchange(idp, reg, code, verifier).status_code == 200


def test_a_reused_code_is_refused_and_revokes_the_tokens_it_gave(idp: Any) -> None:
    reg = register()
    code, verifier = code_for(idp, reg)
    first = exchange(idp, reg, code, verifier)
    assert first.status_code == 200
    tokens = first.json()
    assert introspect(idp, reg, tokens["access_token"])["active"] is True

    second = exchange(idp, reg, code, verifier)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert introspect(idp, reg, tokens["access_token"]) == {"active": False}
    refreshed = token_request(idp, reg, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    assert any(e.type == "oidc.code_reuse" for e in audit.events())


def test_a_reused_refresh_token_revokes_its_whole_family(idp: Any) -> None:
    reg = register()
    code, verifier = code_for(idp, reg)
    tokens = exchange(idp, reg, code, verifier).json()
    rotated = token_request(idp, reg, grant_type="refresh_token", refresh_token=tokens["refresh_token"]).json()
    assert introspect(idp, reg, rotated["access_token"])["active"] is True

    replay = token_request(idp, reg, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    for value in (rotated["access_token"], rotated["refresh_token"], tokens["access_token"]):
        assert introspect(idp, reg, value) == {"active": False}
    later = token_request(idp, reg, grant_type="refresh_token", refresh_token=rotated["refresh_token"])
    assert later.status_code == 400
    assert any(e.type == "oidc.refresh_reuse" for e in audit.events())


@pytest.mark.parametrize("hint", ["id_token", "urn:example:jwt"])
def test_a_token_type_hint_the_server_does_not_know_is_ignored(idp: Any, hint: str) -> None:
    """RFC 7009 2.1, RFC 7662 2.1: the hint only speeds up the look-up; the token is found and revoked anyway."""
    reg = register()
    code, verifier = code_for(idp, reg)
    tokens = exchange(idp, reg, code, verifier).json()
    looked_up = requests.post(idp.url + "/oauth/introspect", auth=(reg.client_id, reg.client_secret), timeout=10,
                              data={"token": tokens["access_token"], "token_type_hint": hint})
    assert looked_up.status_code == 200 and looked_up.json()["active"] is True
    revoked = requests.post(idp.url + "/oauth/revoke", auth=(reg.client_id, reg.client_secret), timeout=10,
                            data={"token": tokens["refresh_token"], "token_type_hint": hint})
    assert revoked.status_code == 200
    assert introspect(idp, reg, tokens["access_token"])["active"] is False  # the whole grant ended


def test_prompt_login_asks_again_even_with_a_session(idp: Any) -> None:
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)  # signs in once
    session = rp(idp.url, reg)
    assert browse(http, start(session).url).login_prompts == 0  # the SSO session answers
    assert browse(http, start(session, prompt="login").url).login_prompts == 1
    assert browse(http, start(session, max_age="0").url).login_prompts == 1


def test_login_hint_prefills_the_username(idp: Any) -> None:
    reg = register()
    session = rp(idp.url, reg)
    assert login_page_username(requests.Session(), start(session, login_hint="alice").url) == "alice"


def test_nonce_and_auth_time_are_in_the_id_token(idp: Any) -> None:
    reg = register()
    session = rp(idp.url, reg)
    auth = start(session)
    arrival = browse(requests.Session(), auth.url)
    token = session.fetch_token(idp.url + "/oauth/token", authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    claims = session.parse_id_token(token, nonce=auth.nonce)
    assert claims["nonce"] == auth.nonce and isinstance(claims["auth_time"], int)
    assert "groups" in claims or "email" in claims


def test_a_public_client_exchanges_its_code_with_the_verifier_and_no_secret(idp: Any) -> None:
    reg = register(public=True)
    code, verifier = code_for(idp, reg)
    base = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "client_id": reg.client_id}
    missing = requests.post(idp.url + "/oauth/token", data=base, timeout=10)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    resp = requests.post(idp.url + "/oauth/token", data={**base, "code_verifier": verifier}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.json()["id_token"] and resp.json()["refresh_token"]
    # A public client cannot pretend to be a confidential one, nor use client credentials.
    cc = requests.post(idp.url + "/oauth/token", data={"grant_type": "client_credentials",
                                                       "client_id": reg.client_id}, timeout=10)
    assert cc.status_code in (400, 401) and cc.json()["error"] in ("invalid_client", "unauthorized_client")


def test_prompt_none_with_a_too_old_sign_in_is_login_required(idp: Any) -> None:
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)  # signed in
    session = rp(idp.url, reg)
    assert browse(http, start(session, prompt="none").url).params.get("code")  # the session answers silently
    arrival = browse(http, start(session, prompt="none", max_age="0").url, username=None)
    assert arrival.params["error"] == "login_required" and arrival.login_prompts == 0


def test_prompt_select_account_shows_the_login_page_where_another_account_can_sign_in(idp: Any) -> None:
    make_user("bob", PASSWORD, email="bob@example.test")
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)  # alice is signed in
    session = rp(idp.url, reg)
    auth = start(session, prompt="select_account")
    arrival = browse(http, auth.url, username="bob")
    assert arrival.login_prompts == 1 and arrival.params.get("code")
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    assert session.parse_id_token(token, nonce=auth.nonce)["preferred_username"] == "bob"
    # With prompt=none nobody can be asked: an error, as OIDC Core 3.1.2.1 says.
    refused = browse(http, start(session, prompt="none select_account").url, username=None)
    assert refused.params["error"] == "invalid_request" and refused.login_prompts == 0


@pytest.mark.parametrize("mode", ["fragment", "form_post", "web_message"])
def test_a_response_mode_other_than_query_is_refused_at_the_client(idp: Any, mode: str) -> None:
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)
    arrival = browse(http, start(rp(idp.url, reg), response_mode=mode).url, username=None)
    assert arrival.params["error"] == "invalid_request" and "response_mode" in arrival.params["error_description"]
    assert "code" not in arrival.params


def test_prompt_none_with_an_id_token_hint_of_another_user_is_login_required(idp: Any) -> None:
    """OIDC Core 3.1.2.1: the client asks about the user its ID token names; with someone else signed in here
    now, the answer is login_required, not a code for them."""
    make_user("bob", PASSWORD, email="bob@example.test")
    reg = register()
    session, http = rp(idp.url, reg), requests.Session()

    def id_token(username: str) -> str:
        auth = start(session, prompt="login")
        arrival = browse(http, auth.url, username=username)
        token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                    code_verifier=auth.verifier, state=auth.state)
        return str(token["id_token"])

    alices, bobs = id_token("alice"), id_token("bob")  # bob is the one signed in now
    for hint in (alices, "not-a-jwt"):
        refused = browse(http, start(session, prompt="none", id_token_hint=hint).url, username=None)
        assert refused.params["error"] == "login_required" and refused.login_prompts == 0
    answered = browse(http, start(session, prompt="none", id_token_hint=bobs).url, username=None)
    assert answered.params.get("code") and answered.login_prompts == 0


@pytest.mark.parametrize("repeated", ["nonce", "prompt", "max_age", "code_challenge"])
def test_a_parameter_sent_twice_is_refused_at_the_client(idp: Any, repeated: str) -> None:
    """RFC 6749 3.1: parameters must not repeat; whichever copy were read, another reader could take the other."""
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)
    auth = start(rp(idp.url, reg), prompt="none", max_age="3600")  # nonce and code_challenge are always sent
    second = {"nonce": "n2", "prompt": "login", "max_age": "60", "code_challenge": "x" * 43}[repeated]
    arrival = browse(http, f"{auth.url}&{repeated}={second}", username=None)
    assert arrival.params["error"] == "invalid_request" and repeated in arrival.params["error_description"]
    assert "code" not in arrival.params
    # A blank value is a parameter not sent (RFC 6749 3.1): no repeat, nor a response_mode.
    answered = browse(http, f"{start(rp(idp.url, reg)).url}&{repeated}=&response_mode=", username=None)
    assert answered.params.get("code"), answered.params


@pytest.mark.parametrize("sent", ["prompt=&prompt=login", "max_age=&max_age=0"])
def test_a_blank_copy_before_a_parameter_does_not_hide_it(idp: Any, sent: str) -> None:
    """The blank copy is a parameter not sent; the other is the request's, and asks for the password again."""
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)
    assert browse(http, f"{start(rp(idp.url, reg)).url}&{sent}").login_prompts == 1


@pytest.mark.parametrize(("name", "error"), [("request", "request_not_supported"),
                                              ("request_uri", "request_uri_not_supported"),
                                              ("registration", "registration_not_supported")])
def test_a_request_object_is_refused_at_the_client_not_ignored(idp: Any, name: str, error: str) -> None:
    """OIDC Core 6: the parameters a request object carries would go unread; the client hears so."""
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)
    arrival = browse(http, f"{start(rp(idp.url, reg)).url}&{name}=eyJhbGciOiJub25lIn0.e30.", username=None)
    assert arrival.params["error"] == error and "code" not in arrival.params

