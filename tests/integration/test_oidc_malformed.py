"""Malformed OIDC requests are refusals with the RFC's error, audited, never a server error (on SQLite and
PostgreSQL alike: PostgreSQL refuses to store an over-long value where SQLite silently keeps it)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import Flask
from flask.testing import FlaskClient
from helpers import login, make_user
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import RSAKey
from oidc_peers import PASSWORD, REDIRECT_URI, register

from idp import audit
from idp.extensions import db

TOKEN_URL = "http://127.0.0.1:5000/oauth/token"


def authorize(client: FlaskClient, client_id: str, **params: str) -> Any:
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI,
             "scope": "openid", "state": "st", **params}
    return client.get("/oauth/authorize?" + urlencode(query))


def redirected_error(resp: Any) -> str:
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return parse_qs(urlsplit(location).query)["error"][0]


def test_a_non_ascii_max_age_is_invalid_request(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    reg = register()
    login(client, "alice", PASSWORD)
    assert redirected_error(authorize(client, reg.client_id, max_age="²")) == "invalid_request"


def test_an_overlong_nonce_is_invalid_request(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    reg = register()
    login(client, "alice", PASSWORD)
    assert redirected_error(authorize(client, reg.client_id, nonce="n" * 600)) == "invalid_request"


def test_an_id_token_hint_with_a_malformed_crit_header_is_refused_not_a_server_error(
        app: Flask, client: FlaskClient) -> None:
    """Found by review: joserfc reads crit before the signature and raised TypeError on a non-list, a 500 for
    anyone, signed in or not, at logout and at a prompt=none authorization request."""
    hint = ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode()
                    for part in (b'{"alg":"RS256","crit":true}', b"{}", b"sig"))
    logout = client.get("/oauth/logout?" + urlencode({"id_token_hint": hint}))
    assert logout.status_code == 400 and "id_token_hint" in logout.get_data(as_text=True)
    make_user("alice", PASSWORD)
    reg = register()
    login(client, "alice", PASSWORD)
    assert redirected_error(authorize(client, reg.client_id, prompt="none", id_token_hint=hint)) == "login_required"


def test_a_client_assertion_with_a_malformed_crit_header_is_invalid_client(app: Flask, client: FlaskClient) -> None:
    """The same joserfc TypeError through authlib's private_key_jwt: a 500 for anyone who knows a client id."""
    from joserfc.jwk import ECKey

    key = ECKey.generate_key("P-256", private=True)
    reg = register(grant_types=("client_credentials",), auth_method="private_key_jwt", redirect_uris=(),
                   jwks={"keys": [key.as_dict(private=False)]})
    claims = json.dumps({"iss": reg.client_id, "sub": reg.client_id}).encode()  # authlib finds the client by them
    assertion = ".".join(base64.urlsafe_b64encode(part).rstrip(b"=").decode()
                         for part in (b'{"alg":"ES256","crit":true}', claims, b"sig"))
    resp = client.post("/oauth/token", data={
        "grant_type": "client_credentials", "client_id": reg.client_id, "client_assertion": assertion,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
    assert resp.status_code in (400, 401) and resp.get_json()["error"] == "invalid_client"


def test_repeated_scopes_are_stored_once(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    reg = register()
    login(client, "alice", PASSWORD)
    resp = authorize(client, reg.client_id, scope="openid " * 300, code_challenge="x" * 43,
                     code_challenge_method="S256")
    assert resp.status_code == 302 and "code=" in resp.headers["Location"]


def test_undecodable_basic_credentials_are_invalid_client(app: Flask, client: FlaskClient) -> None:
    header = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()}
    for path in ("/oauth/token", "/oauth/introspect", "/oauth/revoke", "/oauth/device"):
        resp = client.post(path, data={"grant_type": "client_credentials", "token": "t"}, headers=header)
        assert resp.status_code == 401, (path, resp.status_code)
        assert resp.get_json()["error"] == "invalid_client"
    assert len([e for e in audit.events(limit=50) if e.outcome == "failure"]) == 4


def test_denied_introspection_revocation_and_userinfo_are_audited(app: Flask, client: FlaskClient) -> None:
    reg = register(grant_types=("client_credentials",), redirect_uris=())
    wrong = {"Authorization": "Basic " + base64.b64encode(f"{reg.client_id}:wrong".encode()).decode()}
    assert client.post("/oauth/introspect", data={"token": "t"}, headers=wrong).status_code == 401
    assert client.post("/oauth/revoke", data={"token": "t"}, headers=wrong).status_code == 401
    assert client.get("/oauth/userinfo", headers={"Authorization": "Bearer nope"}).status_code == 401
    types = {e.type for e in audit.events(limit=50) if e.outcome == "failure"}
    assert {"oidc.introspect", "oidc.revoke", "oidc.userinfo"} <= types


def test_a_client_assertion_valid_for_years_is_refused(app: Flask, client: FlaskClient) -> None:
    key = RSAKey.generate_key(2048, {"kid": "rp-1"}, private=True)
    reg = register(grant_types=("client_credentials",), redirect_uris=(), auth_method="private_key_jwt",
                   jwks={"keys": [key.as_dict(private=False)]})
    now = int(time.time())
    for exp, expected in ((10**13, 401), (now + 10**8, 401), (now + 60, 200)):
        claims = {"iss": reg.client_id, "sub": reg.client_id, "aud": TOKEN_URL, "exp": exp, "jti": f"j{exp}"}
        resp = client.post("/oauth/token", data={
            "grant_type": "client_credentials", "client_assertion": jwt.encode({"alg": "RS256"}, claims, key),
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
        assert resp.status_code in ((400, 401) if expected != 200 else (200,)), (exp, resp.get_data(as_text=True))
        if expected != 200:
            assert resp.get_json()["error"] == "invalid_client"


def test_a_client_assertion_spent_on_a_refused_request_cannot_be_used_again(app: Flask, client: FlaskClient) -> None:
    """RFC 7523: a jti once. The token request that first presents it fails after the client is authenticated
    (a refresh token that does not exist), and its transaction is rolled back: the assertion must stay spent."""
    key = RSAKey.generate_key(2048, {"kid": "rp-1"}, private=True)
    reg = register(grant_types=("client_credentials",), redirect_uris=(), auth_method="private_key_jwt",
                   jwks={"keys": [key.as_dict(private=False)]})
    claims = {"iss": reg.client_id, "sub": reg.client_id, "aud": TOKEN_URL, "exp": int(time.time()) + 60,
              "jti": "once"}
    assertion = {"client_assertion": jwt.encode({"alg": "RS256"}, claims, key),
                 "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    refused = client.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": "no-such-token",
                                                **assertion})
    assert refused.status_code == 400 and refused.get_json()["error"] in ("invalid_grant", "unauthorized_client")
    replayed = client.post("/oauth/token", data={"grant_type": "client_credentials", **assertion})
    assert replayed.status_code in (400, 401) and replayed.get_json()["error"] == "invalid_client"


TEXT = st.text(max_size=80)
PARAMS = st.fixed_dictionaries({}, optional={
    name: TEXT for name in ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce", "prompt",
                            "max_age", "login_hint", "code_challenge", "code_challenge_method", "grant_type",
                            "code", "code_verifier", "refresh_token", "token", "token_type_hint", "device_code",
                            "user_code", "client_secret", "client_assertion", "client_assertion_type",
                            "id_token_hint", "post_logout_redirect_uri")})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/oauth/authorize", "/oauth/token", "/oauth/introspect", "/oauth/revoke",
                             "/oauth/device", "/oauth/userinfo", "/oauth/logout", "/device"]),
       params=PARAMS, post=st.booleans(), auth=st.one_of(st.none(), st.binary(max_size=30)))
def test_no_input_makes_a_server_error(
    app: Flask, client: FlaskClient, path: str, params: dict[str, str], post: bool, auth: bytes | None
) -> None:
    headers = {"Authorization": "Basic " + base64.b64encode(auth).decode()} if auth is not None else {}
    resp = (client.post(path, data=params, headers=headers) if post
            else client.get(path + "?" + urlencode(params), headers=headers))
    assert resp.status_code < 500, (path, params, resp.status_code)
    db.session.rollback()


def test_an_openid_request_without_redirect_uri_is_refused_without_redirect(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    reg = register()  # one registered redirect URI: OAuth would let it be left out, OIDC does not
    login(client, "alice", PASSWORD)
    resp = client.get("/oauth/authorize?" + urlencode(
        {"response_type": "code", "client_id": reg.client_id, "scope": "openid", "state": "st"}))
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert "redirect_uri is required" in resp.get_data(as_text=True)


def test_the_authorization_endpoint_takes_post_too(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    reg = register()
    login(client, "alice", PASSWORD)
    params = {"response_type": "code", "client_id": reg.client_id, "redirect_uri": REDIRECT_URI,
              "scope": "openid", "state": "st", "code_challenge": "x" * 43, "code_challenge_method": "S256"}
    posted = client.post("/oauth/authorize", data=params)  # an RP's cross-site form: no CSRF token
    assert posted.status_code == 303
    resp = client.get(posted.headers["Location"])
    assert resp.status_code == 302 and resp.headers["Location"].startswith(REDIRECT_URI + "?code=")
