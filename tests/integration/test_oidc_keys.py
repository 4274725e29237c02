"""Discovery and the JWKS: issuer, both key types, and rotation keeping the old key published."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from idp import create_app
from idp.cli import cli
from idp.config import Settings
from idp.keys import EC, RSA
from idp.oidc.server import signing_key


@pytest.fixture
def generated_app(make_settings: Callable[..., Settings]) -> Flask:
    app = create_app(make_settings(signing_key_file=None, signing_cert_file=None))
    app.config["TESTING"] = True
    return app


def jwks(app: Flask) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = app.test_client().get("/oauth/jwks").get_json()["keys"]
    return keys


def test_discovery_names_our_issuer_and_endpoints(app: Flask) -> None:
    doc = app.test_client().get("/.well-known/openid-configuration").get_json()
    assert doc["issuer"] == "http://127.0.0.1:5000"
    assert doc["jwks_uri"] == "http://127.0.0.1:5000/oauth/jwks"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert set(doc["id_token_signing_alg_values_supported"]) == {"RS256", "ES256"}
    assert app.test_client().get("/.well-known/jwks.json").get_json()["keys"] == jwks(app)


def test_jwks_publishes_public_rsa_and_ec_keys_only(app: Flask) -> None:
    keys = jwks(app)
    assert {(k["kty"], k["alg"]) for k in keys} == {("RSA", "RS256"), ("EC", "ES256")}
    for k in keys:
        assert k["use"] == "sig" and k["kid"]
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k), "a private parameter is published"


@pytest.mark.parametrize("kind", [RSA, EC])
def test_rotation_publishes_then_signs_and_keeps_the_old_key(generated_app: Flask, kind: str) -> None:
    app = generated_app
    alg = {RSA: "RS256", EC: "ES256"}[kind]
    with app.app_context():
        original = signing_key(alg).jwk_kid
    runner = app.test_cli_runner()

    result = runner.invoke(cli, ["keys", "rotate", "--type", kind])
    assert result.exit_code == 0 and "not signing yet" in result.output, result.output
    kids = [k["kid"] for k in jwks(app) if k["alg"] == alg]
    assert len(kids) == 2 and original in kids
    new = next(k for k in kids if k != original)
    with app.app_context():
        assert signing_key(alg).jwk_kid == original  # published before it signs

    result = runner.invoke(cli, ["keys", "rotate", "--type", kind])
    assert result.exit_code == 0 and "now signing" in result.output, result.output
    with app.app_context():
        assert signing_key(alg).jwk_kid == new
    assert {original, new} <= {k["kid"] for k in jwks(app)}  # tokens signed by the old key still verify
