"""Discovery and the JWKS: issuer, both key types, and rotation keeping the old key published."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from idp import create_app
from idp.cli import cli
from idp.config import Settings
from idp.keys import EC, RSA, KeyError_, generate_key_pair
from idp.oidc.server import signing_key


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


@pytest.fixture
def ec_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ec.pem"
    path.write_bytes(generate_key_pair("idp", EC)[0])
    path.chmod(0o600)
    return path


def test_instances_given_one_ec_key_file_publish_and_sign_with_the_same_key(
        make_settings: Callable[..., Settings], tmp_path: Path, ec_key_file: Path) -> None:
    """Two instances (data dirs of their own, as behind a load balancer): an ES256 ID token one signs verifies
    against the JWKS a relying party fetched from the other. Without the file each would generate its own."""
    first, second = (create_app(make_settings(data_dir=tmp_path / name, ec_signing_key_file=ec_key_file))
                     for name in ("a", "b"))
    with first.app_context():
        key = signing_key("ES256")
        token = jose_jwt.encode({"alg": "ES256", "kid": key.jwk_kid}, {"sub": "alice"}, key.jwk)
    published = [k for k in jwks(second) if k["alg"] == "ES256"]
    assert [k["kid"] for k in published] == [key.jwk_kid]
    assert jose_jwt.decode(token, KeySet.import_key_set({"keys": published})).claims["sub"] == "alice"
    alone = create_app(make_settings(data_dir=tmp_path / "c"))
    assert [k["kid"] for k in jwks(alone) if k["alg"] == "ES256"] != [key.jwk_kid]


def test_an_ec_key_file_is_not_rotated_here(make_settings: Callable[..., Settings], ec_key_file: Path) -> None:
    app = create_app(make_settings(ec_signing_key_file=ec_key_file))
    result = app.test_cli_runner().invoke(cli, ["keys", "rotate", "--type", "ec"])
    assert result.exit_code != 0
    assert "keys come from IDP_EC_SIGNING_KEY_FILE; rotate them where they are managed" in result.output


@pytest.mark.parametrize("content, message", [
    (b"not a key\n", "IDP_EC_SIGNING_KEY_FILE: {path} is not an unencrypted PEM private key"),
    (generate_key_pair("idp", RSA)[0], "IDP_EC_SIGNING_KEY_FILE: {path} must be an EC P-256 key"),
])
def test_a_wrong_ec_key_file_is_named_at_start_up(make_settings: Callable[..., Settings], tmp_path: Path,
                                                  content: bytes, message: str) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(content)
    with pytest.raises(KeyError_) as info:
        create_app(make_settings(ec_signing_key_file=path))
    assert str(info.value).startswith(message.format(path=path))


def _public_pem(private_pem: bytes, path: Path) -> Path:
    public = serialization.load_pem_private_key(private_pem, None).public_key()
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def test_an_ec_key_file_swap_rolls_through_instances_with_both_keys_published(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """IDP_EC_SIGNING_PUBLISHED_KEY_FILES: while a new ES256 key rolls through the instances, those still on the
    old key publish the new one, and those on the new key the old one; an ID token either signs verifies against
    the JWKS a relying party cached from the other. The published keys never sign."""
    old_pem, new_pem = generate_key_pair("old", EC)[0], generate_key_pair("new", EC)[0]
    files = {}
    for name, pem in (("old", old_pem), ("new", new_pem)):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(pem)
        files[name].chmod(0o600)
    publics = {name: _public_pem(pem, tmp_path / f"{name}.pub") for name, pem in (("old", old_pem), ("new", new_pem))}
    apps = {
        "old": create_app(make_settings(data_dir=tmp_path / "a", ec_signing_key_file=files["old"],
                                        ec_signing_published_key_files=f"{publics['new']},{publics['old']}")),
        "new": create_app(make_settings(data_dir=tmp_path / "b", ec_signing_key_file=files["new"],
                                        ec_signing_published_key_files=str(publics["old"]))),
    }
    tokens, kids = {}, {}
    for name, app in apps.items():
        with app.app_context():
            key = signing_key("ES256")
            kids[name] = key.jwk_kid
            tokens[name] = jose_jwt.encode({"alg": "ES256", "kid": key.jwk_kid}, {"sub": name}, key.jwk)
    for name, other in (("old", "new"), ("new", "old")):
        published = [k for k in jwks(apps[other]) if k["alg"] == "ES256"]
        assert [k["kid"] for k in published] == [kids[other], kids[name]]  # the signing key first, each once
        assert jose_jwt.decode(tokens[name], KeySet.import_key_set({"keys": published})).claims["sub"] == name


@pytest.mark.parametrize("content, message", [
    (b"not a key\n", "IDP_EC_SIGNING_PUBLISHED_KEY_FILES: {path} is not a PEM public key"),
    ("rsa", "IDP_EC_SIGNING_PUBLISHED_KEY_FILES: {path} does not hold an EC P-256 key"),
])
def test_a_wrong_published_ec_key_file_is_named_at_start_up(make_settings: Callable[..., Settings], tmp_path: Path,
                                                            ec_key_file: Path, content: bytes | str,
                                                            message: str) -> None:
    path = tmp_path / "published.pub"
    if content == "rsa":
        _public_pem(generate_key_pair("idp", RSA)[0], path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else b"")
    with pytest.raises(KeyError_) as info:
        create_app(make_settings(ec_signing_key_file=ec_key_file, ec_signing_published_key_files=str(path)))
    assert str(info.value) == message.format(path=path)
