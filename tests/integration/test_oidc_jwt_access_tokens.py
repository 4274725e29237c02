"""JWT access tokens (RFC 9068), a per-client option: issued by client credentials and the code flow, checked
by PyJWT (knowing nothing of ours) against the published JWKS; revocable like opaque tokens (introspection
inactive, userinfo 401 after revocation); set from the CLI, the admin API and the admin UI, and a malformed
value refused with a message naming the choices."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

import jwt as pyjwt
import lxml.html
import pytest
import requests
from admin_ui import field_errors, sign_in_admin
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import Flask, g
from flask.testing import FlaskCliRunner
from helpers import make_user
from oidc_peers import PASSWORD, REDIRECT_URI, browse, register
from test_api_apps import Api
from werkzeug.datastructures import MultiDict

from idp.cli import cli
from idp.extensions import db
from idp.oidc import clients
from idp.store import OidcClient

GRANTS = ("authorization_code", "refresh_token", "client_credentials")


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, email="alice@example.test")
    return live_server


def validate(idp: Any, token: str, audience: str) -> dict[str, Any]:
    """PyJWT: key by kid from our JWKS, RS256 signature, typ at+jwt, iss, aud, exp and the RFC 9068 claims."""
    assert pyjwt.get_unverified_header(token)["typ"] == "at+jwt"
    key = pyjwt.PyJWKClient(idp.url + "/oauth/jwks").get_signing_key_from_jwt(token)
    claims: dict[str, Any] = pyjwt.decode(
        token, key.key, algorithms=["RS256"], audience=audience, issuer=idp.url,
        options={"require": ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"]})
    return claims


def post(idp: Any, path: str, reg: clients.Registered, **data: str) -> requests.Response:
    return requests.post(idp.url + path, data=data, auth=(reg.client_id, reg.client_secret or ""), timeout=10)


def code_flow_tokens(idp: Any, reg: clients.Registered) -> dict[str, Any]:
    verifier = generate_token(48)
    url = idp.url + "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": reg.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "openid email", "state": "s1", "code_challenge": create_s256_code_challenge(verifier),
        "code_challenge_method": "S256"})
    code = browse(requests.Session(), url).params["code"]
    resp = post(idp, "/oauth/token", reg, grant_type="authorization_code", code=code, redirect_uri=REDIRECT_URI,
                code_verifier=verifier)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_client_credentials_gives_a_jwt_that_pyjwt_accepts_and_revocation_ends(idp: Any) -> None:
    reg = register(grant_types=GRANTS, access_token_format="jwt")
    resp = post(idp, "/oauth/token", reg, grant_type="client_credentials", scope="profile")
    assert resp.status_code == 200, resp.text
    token = resp.json()["access_token"]
    claims = validate(idp, token, reg.client_id)
    assert claims["sub"] == claims["client_id"] == reg.client_id and claims["scope"] == "profile"
    assert claims["exp"] - claims["iat"] == resp.json()["expires_in"]
    # Another client's audience, or a tampered token, is refused by the library.
    with pytest.raises(pyjwt.InvalidAudienceError):
        validate(idp, token, "someone-else")
    head, _, sig = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps({**claims, "scope": "admin"}).encode()).rstrip(b"=").decode()
    with pytest.raises(pyjwt.InvalidSignatureError):
        validate(idp, f"{head}.{forged}.{sig}", reg.client_id)

    assert post(idp, "/oauth/introspect", reg, token=token).json()["active"] is True
    assert post(idp, "/oauth/revoke", reg, token=token).status_code == 200
    assert post(idp, "/oauth/introspect", reg, token=token).json() == {"active": False}


def test_code_flow_gives_a_jwt_for_the_user_that_userinfo_accepts_until_revoked(idp: Any) -> None:
    reg = register(grant_types=GRANTS, access_token_format="jwt")
    tokens = code_flow_tokens(idp, reg)
    claims = validate(idp, tokens["access_token"], reg.client_id)
    id_token = pyjwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["sub"] == id_token["sub"] and claims["client_id"] == reg.client_id
    assert claims["scope"] == "openid email" and "auth_time" in claims

    bearer = {"Authorization": "Bearer " + tokens["access_token"]}
    info = requests.get(idp.url + "/oauth/userinfo", headers=bearer, timeout=10)
    assert info.status_code == 200 and info.json()["email"] == "alice@example.test"
    introspected = post(idp, "/oauth/introspect", reg, token=tokens["access_token"]).json()
    assert introspected["active"] is True and introspected["sub"] == claims["sub"]

    # A refresh keeps the format; revoking the access token ends the whole grant.
    refreshed = post(idp, "/oauth/token", reg, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert validate(idp, refreshed.json()["access_token"], reg.client_id)["sub"] == claims["sub"]
    assert post(idp, "/oauth/revoke", reg, token=tokens["access_token"]).status_code == 200
    assert post(idp, "/oauth/introspect", reg, token=tokens["access_token"]).json() == {"active": False}
    assert requests.get(idp.url + "/oauth/userinfo", headers=bearer, timeout=10).status_code == 401
    again = {"Authorization": "Bearer " + refreshed.json()["access_token"]}
    assert requests.get(idp.url + "/oauth/userinfo", headers=again, timeout=10).status_code == 401


def test_opaque_stays_the_default(idp: Any) -> None:
    reg = register(grant_types=GRANTS)
    token = post(idp, "/oauth/token", reg, grant_type="client_credentials").json()["access_token"]
    assert token.count(".") == 0 and len(token) == 43


def _format(client_id: str) -> str:
    db.session.expire_all()
    row = clients.get_or_404(client_id)
    return row.access_token_format


def test_the_cli_sets_the_format_and_refuses_a_malformed_one(runner: FlaskCliRunner) -> None:
    reg = register(grant_types=GRANTS)
    db.session.commit()
    assert _format(reg.client_id) == "opaque"
    result = runner.invoke(cli, ["oidc-client", "update", reg.client_id, "--access-token-format", "jwt"])
    assert result.exit_code == 0, result.output
    assert "access_token_format" in result.output and _format(reg.client_id) == "jwt"
    shown = runner.invoke(cli, ["oidc-client", "show", reg.client_id])
    assert "jwt" in shown.output
    bad = runner.invoke(cli, ["oidc-client", "update", reg.client_id, "--access-token-format", "paseto"])
    assert bad.exit_code == 2 and "'paseto' is not one of 'opaque', 'jwt'" in bad.output
    added = runner.invoke(cli, ["oidc-client", "add", "--name", "Api", "--grant", "client_credentials",
                                "--access-token-format", "jwt", "--json"])
    assert added.exit_code == 0, added.output
    assert db.session.query(OidcClient).filter_by(name="Api").one().access_token_format == "jwt"
    # The service refuses what the CLI's choice list would have, for callers that skip it.
    with pytest.raises(clients.BadRequest, match="access token format 'paseto' is not one of opaque, jwt"):
        clients.update(reg.client_id, clients.ClientOptions(
            name="x", grant_types=GRANTS, redirect_uris=(REDIRECT_URI,), access_token_format="paseto"), "test")


def test_the_api_sets_the_format_and_refuses_a_malformed_one(app: Flask) -> None:
    api = Api(app.test_client(), "write", "ticketing")
    made = api.post("/oidc-clients", {"name": "Api", "grant_types": ["client_credentials"],
                                      "access_token_format": "jwt"})
    assert made["access_token_format"] == "jwt" and _format(made["client_id"]) == "jwt"
    path = f"/oidc-clients/{made['client_id']}"
    assert api.patch(path, {"access_token_format": "opaque"})["access_token_format"] == "opaque"
    assert api.get(path)["access_token_format"] == "opaque"
    refused = api.patch(path, {"access_token_format": "JWT"}, expect=422)
    assert "access_token_format" in str(refused) and "opaque, jwt" in str(refused)
    assert _format(made["client_id"]) == "opaque"


def test_the_admin_ui_sets_the_format_and_refuses_a_malformed_one(app: Flask) -> None:
    browser = sign_in_admin(app.test_client())
    reg = register(name="Reports", grant_types=GRANTS)
    db.session.commit()
    page = f"/admin/clients/{reg.client_id}"

    def submit(value: str) -> Any:
        g.pop("csrf_token", None)
        shown = browser.get(page)
        assert shown.status_code == 200 and 'name="access_token_format"' in shown.get_data(as_text=True)
        form = next(f for f in lxml.html.fromstring(shown.get_data(as_text=True)).forms if f.get("action") == page)
        data = MultiDict(form.form_values())
        data["access_token_format"] = value
        return browser.post(page, data=data, headers={"Referer": shown.request.url})

    assert submit("jwt").status_code == 303 and _format(reg.client_id) == "jwt"
    refused = submit("paseto")
    assert refused.status_code == 422 and "Not a valid choice" in field_errors(refused, "access_token_format")
    assert _format(reg.client_id) == "jwt"
    g.pop("csrf_token", None)
    new_page = browser.get("/admin/clients/new").get_data(as_text=True)
    assert 'name="access_token_format"' in new_page
