"""authlib's OAuth/OIDC client against the running provider over real HTTP, with PyJWT as a second,
independent ID token validator. The browser is a ``requests.Session`` signing in through the login form."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt as pyjwt
import pytest
import requests
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from helpers import make_user
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from oidc_peers import PASSWORD, browse, pyjwt_validate, register, rp, start

from idp import audit
from idp.oidc import clients


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, groups=["admins", "staff"], email="alice@example.test",
              display_name="Alice Liddell", given_name="Alice", family_name="Liddell")
    return live_server


def test_code_flow_with_pkce_refresh_userinfo_introspection_revocation(idp: Any) -> None:
    reg = register()
    session = rp(idp.url, reg)
    auth = start(session)
    http = requests.Session()
    arrival = browse(http, auth.url)
    assert arrival.login_prompts == 1
    assert arrival.params["state"] == auth.state
    # RFC 9207: the response names who sent it, as discovery says it will (a client of several providers checks).
    assert arrival.params["iss"] == session.server_metadata["issuer"] == idp.url
    assert session.server_metadata["authorization_response_iss_parameter_supported"] is True

    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    # authlib's client validates signature (JWKS), iss, aud, exp, nonce and at_hash.
    claims = session.parse_id_token(token, nonce=auth.nonce)
    assert claims["iss"] == idp.url and claims["aud"] == reg.client_id
    assert claims["email"] == "alice@example.test" and claims["groups"] == ["admins", "staff"]
    assert claims["preferred_username"] == "alice" and "auth_time" in claims
    with pytest.raises(Exception, match="nonce"):
        session.parse_id_token(token, nonce="another nonce")

    independent = pyjwt_validate(idp, token["id_token"], reg.client_id, "RS256")
    assert independent["nonce"] == auth.nonce and independent["sub"] == claims["sub"]
    header = pyjwt.get_unverified_header(token["id_token"])
    assert header["alg"] == "RS256" and header["kid"]

    info = session.userinfo()
    assert info["sub"] == claims["sub"] and info["name"] == "Alice Liddell"

    introspection = session.introspect_token(session.server_metadata["introspection_endpoint"],
                                             token=token["access_token"]).json()
    assert introspection["active"] is True and introspection["username"] == "alice"

    old_refresh = token["refresh_token"]
    refreshed = session.refresh_token(session.server_metadata["token_endpoint"], refresh_token=old_refresh)
    assert refreshed["access_token"] != token["access_token"]
    assert refreshed["refresh_token"] != old_refresh  # rotated
    assert session.userinfo()["sub"] == claims["sub"]

    session.revoke_token(session.server_metadata["revocation_endpoint"], token=refreshed["access_token"])
    introspection = session.introspect_token(session.server_metadata["introspection_endpoint"],
                                             token=refreshed["access_token"]).json()
    assert introspection == {"active": False}
    resp = requests.get(idp.url + "/oauth/userinfo", timeout=10,
                        headers={"Authorization": "Bearer " + refreshed["access_token"]})
    assert resp.status_code == 401 and "invalid_token" in resp.headers["WWW-Authenticate"]
    # No token at all, or another scheme: the challenge alone, no error code (RFC 6750 3.1).
    for headers in ({}, {"Authorization": "Basic YWxpY2U6cHc="}):
        bare = requests.get(idp.url + "/oauth/userinfo", timeout=10, headers=headers)
        assert bare.status_code == 401 and bare.headers["WWW-Authenticate"] == f'Bearer realm="{idp.url}"'

    types = [e.type for e in audit.events(limit=50)]
    for expected in ("oidc.authorize", "oidc.token", "oidc.refresh", "oidc.revoke"):
        assert expected in types


@pytest.fixture
def cli_listener() -> Iterator[tuple[int, list[str]]]:
    """What a command-line client does for its redirect (RFC 8252 section 7.3): listen on a port the system
    picks, on 127.0.0.1, and read the code from the request the browser is sent with."""
    received: list[str] = []

    class Callback(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            received.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"signed in; back to the terminal")

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Callback)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


def test_a_native_app_registered_on_loopback_gets_its_code_on_any_port(
        idp: Any, cli_listener: tuple[int, list[str]]) -> None:
    port, received = cli_listener
    reg = register(public=True, redirect_uris=("http://127.0.0.1/callback",))
    redirect = f"http://127.0.0.1:{port}/callback"
    session = rp(idp.url, reg, client_secret=None, redirect_uri=redirect, token_endpoint_auth_method="none")
    auth = start(session)
    http = requests.Session()
    arrival = browse(http, auth.url, redirect_uri=redirect)
    assert http.get(arrival.url, timeout=10).status_code == 200  # the browser lands on the CLI's listener
    token = session.fetch_token(session.server_metadata["token_endpoint"],
                                authorization_response=f"http://127.0.0.1:{port}{received[0]}",
                                code_verifier=auth.verifier, state=auth.state)
    assert session.parse_id_token(token, nonce=auth.nonce)["preferred_username"] == "alice"

    # The port is all that may differ: not the path, the scheme, the host's name, nor a port an admin wrote.
    fixed = register(public=True, redirect_uris=("http://127.0.0.1:8400/callback", "http://localhost/callback"))
    for client, uri in ((reg, f"http://127.0.0.1:{port}/callback/more"), (reg, f"https://127.0.0.1:{port}/callback"),
                        (reg, f"http://127.0.0.1:{port}/callback?x=1"), (reg, f"http://[::1]:{port}/callback"),
                        (reg, f"http://user@127.0.0.1:{port}/callback"), (reg, "http://127.0.0.1:0/callback"),
                        (fixed, f"http://127.0.0.1:{port}/callback"), (fixed, f"http://localhost:{port}/callback")):
        url, _ = rp(idp.url, client, client_secret=None, redirect_uri=uri).create_authorization_url(
            session.server_metadata["authorization_endpoint"], code_verifier="v" * 43, nonce="n")
        resp = http.get(url, allow_redirects=False, timeout=10)
        assert resp.status_code == 400 and "Location" not in resp.headers, uri
    assert received == received[:1]  # nothing reached the listener but the one code

    ipv6 = register(public=True, redirect_uris=("http://[::1]/callback",))
    auth = start(rp(idp.url, ipv6, client_secret=None, redirect_uri=f"http://[::1]:{port}/callback"))
    assert browse(http, auth.url, redirect_uri=f"http://[::1]:{port}/callback").params["code"]

    # The code is bound to the port it was sent to (RFC 6749 section 4.1.3).
    auth = start(session)
    arrival = browse(http, auth.url, redirect_uri=redirect)
    other = rp(idp.url, reg, client_secret=None, redirect_uri=f"http://127.0.0.1:{port + 1}/callback",
               token_endpoint_auth_method="none")
    with pytest.raises(Exception, match="invalid_grant"):
        other.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                          code_verifier=auth.verifier, state=auth.state)


def test_a_refresh_asking_for_less_narrows_the_access_token_only(idp: Any) -> None:
    """RFC 6749 section 6: the new refresh token's scope is the old one's; the access token gets what was asked."""
    reg = register()
    session = rp(idp.url, reg)
    auth = start(session)
    arrival = browse(requests.Session(), auth.url)
    token_url = session.server_metadata["token_endpoint"]
    session.fetch_token(token_url, authorization_response=arrival.url, code_verifier=auth.verifier,
                        state=auth.state)
    narrow = session.refresh_token(token_url, scope="openid")
    assert narrow["scope"] == "openid" and "email" not in session.userinfo()
    introspect = session.server_metadata["introspection_endpoint"]
    refresh_info = session.introspect_token(introspect, token=narrow["refresh_token"]).json()
    assert refresh_info["active"] is True and refresh_info["scope"] == "openid profile email groups"
    assert "token_type" not in refresh_info  # no Bearer token: an API must not accept it as one
    assert session.introspect_token(introspect, token=narrow["access_token"]).json()["token_type"] == "Bearer"
    wide = session.refresh_token(token_url, refresh_token=narrow["refresh_token"])
    assert wide["scope"] == "openid profile email groups"
    assert session.userinfo()["email"] == "alice@example.test"


def test_a_clients_claim_map_names_its_claims(idp: Any) -> None:
    """The per-client map (the same release() as SAML's attribute map) decides claim names and scopes."""
    reg = register(claim_map=(clients.claim_rule("groups=roles;groups"), clients.claim_rule("email=mail;email")))
    session = rp(idp.url, reg, scope="openid groups")
    auth = start(session)
    arrival = browse(requests.Session(), auth.url)
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    claims = session.parse_id_token(token, nonce=auth.nonce)
    assert claims["roles"] == ["admins", "staff"]
    assert "groups" not in claims and "mail" not in claims  # email scope not granted
    assert session.userinfo()["roles"] == ["admins", "staff"]


def test_es256_client_gets_an_id_token_signed_with_the_ec_key(idp: Any) -> None:
    reg = register(id_token_alg="ES256", auth_method="client_secret_post")
    session = rp(idp.url, reg, token_endpoint_auth_method="client_secret_post")
    auth = start(session)
    arrival = browse(requests.Session(), auth.url)
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    header = pyjwt.get_unverified_header(token["id_token"])
    assert header["alg"] == "ES256"
    jwk = next(k for k in requests.get(idp.url + "/oauth/jwks", timeout=10).json()["keys"]
               if k["kid"] == header["kid"])
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert session.parse_id_token(token, nonce=auth.nonce)["sub"]
    assert pyjwt_validate(idp, token["id_token"], reg.client_id, "ES256")["nonce"] == auth.nonce


def test_client_credentials_with_a_secret(idp: Any) -> None:
    reg = register(grant_types=("client_credentials",), redirect_uris=(), scopes=("groups",))
    session = rp(idp.url, reg, scope="groups")
    token = session.fetch_token(session.server_metadata["token_endpoint"], grant_type="client_credentials")
    assert token["scope"] == "groups" and "refresh_token" not in token and "id_token" not in token
    info = session.introspect_token(session.server_metadata["introspection_endpoint"],
                                    token=token["access_token"]).json()
    assert info["active"] is True and info["client_id"] == reg.client_id and "sub" not in info


def test_client_credentials_with_private_key_jwt(idp: Any) -> None:
    key = RSAKey.generate_key(2048, {"kid": "rp-1"}, private=True)
    reg = register(grant_types=("client_credentials",), redirect_uris=(), auth_method="private_key_jwt",
                   jwks={"keys": [key.as_dict(private=False)]})
    assert reg.client_secret is None
    token_url = idp.url + "/oauth/token"
    session = rp(idp.url, reg, scope="groups", client_secret=key.as_pem(private=True).decode(),
                 token_endpoint_auth_method=PrivateKeyJWT(token_url, alg="RS256"))
    token = session.fetch_token(token_url, grant_type="client_credentials")
    assert token["access_token"]

    # Signed with a key the client did not register (same kid): refused.
    other = RSAKey.generate_key(2048, {"kid": "rp-1"}, private=True)
    impostor = rp(idp.url, reg, scope="groups", client_secret=other.as_pem(private=True).decode(),
                  token_endpoint_auth_method=PrivateKeyJWT(token_url, alg="RS256"))
    with pytest.raises(Exception, match="invalid_client"):
        impostor.fetch_token(token_url, grant_type="client_credentials")

    # An assertion of another key type, or replayed, is a refusal too, never a server error.
    ec = ECKey.generate_key("P-256", {"kid": "rp-1"}, private=True)
    now = int(time.time())
    claims = {"iss": reg.client_id, "sub": reg.client_id, "aud": token_url, "exp": now + 60, "jti": "x1"}
    wrong_type = jwt.encode({"alg": "ES256", "kid": "rp-1"}, claims, ec)
    valid = jwt.encode({"alg": "RS256", "kid": "rp-1"}, claims, key)
    for assertion, expected in ((wrong_type, 400), (valid, 200), (valid, 400)):  # the last one is a replay
        resp = requests.post(token_url, timeout=10, data={
            "grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
        assert resp.status_code == expected, resp.text
        if expected != 200:
            assert resp.json()["error"] == "invalid_client"
    # An assertion naming a client that has a secret and no keys (client ids are no secret) is refused too.
    secret_client = register(grant_types=("client_credentials",), redirect_uris=())
    forged = jwt.encode({"alg": "RS256", "kid": "rp-1"}, {**claims, "iss": secret_client.client_id,
                                                         "sub": secret_client.client_id, "jti": "x2"}, key)
    for url in (token_url, idp.url + "/oauth/introspect", idp.url + "/oauth/revoke"):
        resp = requests.post(url, timeout=10, data={
            "grant_type": "client_credentials", "token": "t", "client_assertion": forged,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"})
        assert resp.status_code in (400, 401) and resp.json()["error"] == "invalid_client", (url, resp.text)
