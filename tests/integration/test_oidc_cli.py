"""`idp oidc-client ...`: secrets shown once and stored hashed, exact redirect URIs, audit events."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from flask.testing import FlaskCliRunner

from idp import audit
from idp.cli import cli
from idp.errors import BadRequest
from idp.extensions import db
from idp.oidc import clients
from idp.store.oidc import digest


def run(runner: FlaskCliRunner, *args: str) -> str:
    result = runner.invoke(cli, ["oidc-client", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_add_prints_the_secret_once_and_stores_only_its_hash(runner: FlaskCliRunner) -> None:
    out = run(runner, "add", "--name", "Wiki", "--redirect-uri", "https://wiki.example.test/cb",
              "--redirect-uri", "https://wiki.example.test/cb2", "--scope", "openid", "--scope", "email", "--json")
    creds = json.loads(out)
    client = clients.get(creds["client_id"])
    assert client is not None and creds["client_secret"]
    assert client.secret_hash == digest(creds["client_secret"]) != creds["client_secret"]
    assert client.check_client_secret(creds["client_secret"]) and not client.check_client_secret("guess")
    assert client.check_redirect_uri("https://wiki.example.test/cb")
    assert not client.check_redirect_uri("https://wiki.example.test/cb/")
    assert not client.check_redirect_uri("https://wiki.example.test/c")
    assert client.scopes == ["openid", "email"]

    shown = run(runner, "show", creds["client_id"])
    assert creds["client_secret"] not in shown and "https://wiki.example.test/cb2" in shown
    assert creds["client_id"] in run(runner, "list")

    rotated = json.loads(run(runner, "rotate-secret", creds["client_id"], "--json"))
    assert rotated["client_secret"] != creds["client_secret"]
    client = clients.get(creds["client_id"])
    assert client is not None and not client.check_client_secret(creds["client_secret"])
    assert client.check_client_secret(rotated["client_secret"])

    run(runner, "remove", creds["client_id"], "--yes")
    assert clients.get(creds["client_id"]) is None
    types = [e.type for e in audit.events()]
    for expected in ("oidc.client.add", "oidc.client.rotate_secret", "oidc.client.remove"):
        assert expected in types
    assert all(creds["client_secret"] not in json.dumps(e.details) for e in audit.events())


def test_a_confidential_client_is_made_to_require_pkce_and_let_off_again(runner: FlaskCliRunner) -> None:
    creds = json.loads(run(runner, "add", "--name", "Wiki", "--redirect-uri", "https://wiki.example.test/cb",
                           "--require-pkce", "--json"))
    client = clients.get(creds["client_id"])
    assert client is not None and client.require_pkce
    assert "require_pkce: True" in run(runner, "show", creds["client_id"])
    assert run(runner, "update", creds["client_id"], "--no-require-pkce").strip().endswith(": require_pkce")
    client = clients.get(creds["client_id"])
    assert client is not None and not client.require_pkce
    assert [e.details["changed"] for e in audit.events(type="oidc.client.update")] == [
        {"require_pkce": {"from": True, "to": False}}]


def test_public_and_private_key_jwt_clients_have_no_secret(runner: FlaskCliRunner, tmp_path) -> None:  # type: ignore[no-untyped-def]
    public = json.loads(run(runner, "add", "--name", "SPA", "--redirect-uri", "http://127.0.0.1:8080/cb",
                            "--public", "--json"))
    assert public["client_secret"] is None
    assert "client_secret" not in run(runner, "add", "--name", "SPA2", "--redirect-uri", "http://127.0.0.1/cb",
                                      "--public")
    from joserfc.jwk import ECKey

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [ECKey.generate_key("P-256", private=True).as_dict(private=False)]}))
    machine = json.loads(run(runner, "add", "--name", "Batch", "--grant", "client_credentials",
                             "--auth-method", "private_key_jwt", "--jwks-file", str(jwks), "--json"))
    assert machine["client_secret"] is None


def test_refusals_store_nothing(runner: FlaskCliRunner, tmp_path) -> None:  # type: ignore[no-untyped-def]
    private = tmp_path / "private.json"
    from joserfc.jwk import ECKey

    private.write_text(json.dumps(ECKey.generate_key("P-256", private=True).as_dict(private=True)))
    for args in (
        ["--name", "x"],  # authorization_code without a redirect URI
        ["--name", "x", "--redirect-uri", "https://a.test/cb#frag"],
        ["--name", "x", "--redirect-uri", "javascript:alert(1)"],
        ["--name", "x", "--public", "--grant", "client_credentials"],
        ["--name", "x", "--grant", "client_credentials", "--auth-method", "private_key_jwt"],
        ["--name", "x", "--grant", "client_credentials", "--auth-method", "private_key_jwt",
         "--jwks-file", str(private)],
    ):
        result = runner.invoke(cli, ["oidc-client", "add", *args])
        assert result.exit_code != 0, args
    # Found by fuzzing: stored, and then a URI that breaks the listing, a wildcard that never matches, or a claim
    # dropped at every token (the protocol sets sub) or released twice under one name.
    cb = ["--name", "x", "--redirect-uri"]
    for args, said in (
        ([*cb, "https://c.example.test/a\nb"], "holds a space or a control character"),
        ([*cb, "https://*.example.test/cb"], "has a '*' in its host"),
        # A browser goes to good.example (a backslash is a slash to it); urlsplit reads evil.example as the host.
        ([*cb, "https://good.example\\@evil.example/cb"], "holds a backslash"),
        ([*cb, "https://c.example.test/cb", "--claim", "email=sub"], "claim 'sub' is the protocol's to set"),
        ([*cb, "https://c.example.test/cb", "--claim", "email=x", "--claim", "groups=x"],
         "the name 'x' is given twice"),
    ):
        result = runner.invoke(cli, ["oidc-client", "add", *args])
        assert result.exit_code == 1 and said in result.output, (args, result.output)
    assert clients.all_clients() == []


def test_a_client_key_too_weak_to_trust_is_refused(runner: FlaskCliRunner, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A 1024-bit RSA key can be factored by a well-funded attacker, who could then sign client assertions as the
    client (private_key_jwt): refused with the reason, as an EC key on a curve below 256 bits would be."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from joserfc.jwk import RSAKey

    def jwks_of(bits: int) -> str:
        public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
        key = RSAKey.import_key(public.public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
        path = tmp_path / f"jwks-{bits}.json"
        path.write_text(json.dumps({"keys": [{**key.as_dict(private=False), "kid": f"k{bits}"}]}))
        return str(path)

    machine = ["--name", "Batch", "--grant", "client_credentials", "--auth-method", "private_key_jwt"]
    result = runner.invoke(cli, ["oidc-client", "add", *machine, "--jwks-file", jwks_of(1024)])
    assert result.exit_code == 1, result.output
    assert "the client's key 'k1024' is an RSA key of 1024 bits (at least 2048 are needed)" in result.output
    assert "Traceback" not in result.output and clients.all_clients() == []
    added = json.loads(run(runner, "add", *machine, "--jwks-file", jwks_of(2048), "--json"))
    weak = json.loads(Path(jwks_of(1024)).read_text())
    current = clients.options_of(clients.get_or_404(added["client_id"]))
    with pytest.raises(BadRequest, match="is an RSA key of 1024 bits"):
        clients.update(added["client_id"], replace(current, jwks=weak), "test")
    db.session.rollback()
    # A client stored with such a key before this check can still be changed otherwise, and roll over to a
    # strong key published beside it; another weak key is still refused.
    clients.get_or_404(added["client_id"]).jwks = weak
    db.session.commit()
    assert run(runner, "update", added["client_id"], "--name", "Batch 2").startswith("updated")
    strong = json.loads(Path(jwks_of(2048)).read_text())
    current = clients.options_of(clients.get_or_404(added["client_id"]))
    clients.update(added["client_id"], replace(current, jwks={"keys": weak["keys"] + strong["keys"]}), "test")
    db.session.commit()
    current = clients.options_of(clients.get_or_404(added["client_id"]))
    another = json.loads(Path(jwks_of(1024)).read_text())
    with pytest.raises(BadRequest, match="is an RSA key of 1024 bits"):
        clients.update(added["client_id"], replace(current, jwks={"keys": current.jwks["keys"] + another["keys"]}),
                       "test")


def test_claim_options_replace_the_claim_map(runner: FlaskCliRunner) -> None:
    out = run(runner, "add", "--name", "Grafana", "--redirect-uri", "https://grafana.example.test/cb",
              "--claim", "groups=roles;groups", "--claim", "email=mail;email", "--claim", "username=login", "--json")
    client = clients.get(json.loads(out)["client_id"])
    assert client is not None
    assert client.claim_map == [
        {"attribute": "groups", "name": "roles", "scope": "groups"},
        {"attribute": "email", "name": "mail", "scope": "email"},
        {"attribute": "username", "name": "login", "scope": "profile"},
    ]
    for bad, message in (("shoe_size=size", "unknown attribute"), ("groups", "expected OURS=NAME"),
                         ("groups=roles;admin", "unknown scope")):
        result = runner.invoke(cli, ["oidc-client", "add", "--name", "X", "--redirect-uri",
                                     "https://x.example.test/cb", "--claim", bad])
        assert result.exit_code != 0 and message in result.output, result.output


def test_role_options_add_a_role_claim_under_the_groups_scope(runner: FlaskCliRunner) -> None:
    out = run(runner, "add", "--name", "Datadog", "--redirect-uri", "https://dd.example.test/cb",
              "--role", "roles:engineers=developer", "--role", "roles:staff=viewer",
              "--role", "roles:engineers=developer", "--json")
    client = clients.get(json.loads(out)["client_id"])
    assert client is not None
    assert client.claim_map == [*map(dict, clients.DEFAULT_CLAIM_MAP), {
        "attribute": "roles", "name": "roles", "scope": "groups",
        "roles": {"engineers": ["developer"], "staff": ["viewer"]}}]
    out = run(runner, "add", "--name", "Grafana", "--redirect-uri", "https://grafana.example.test/cb",
              "--claim", "username=login", "--role", "grafana_role:admins=Admin", "--json")
    client = clients.get(json.loads(out)["client_id"])
    assert client is not None
    assert client.claim_map == [
        {"attribute": "username", "name": "login", "scope": "profile"},
        {"attribute": "roles", "name": "grafana_role", "scope": "groups", "roles": {"admins": ["Admin"]}},
    ]
    assert "roles=grafana_role {admins=Admin} (groups)" in run(runner, "show", client.client_id)
    for bad in ("engineers=developer", "roles:engineers", "roles:engineers="):
        result = runner.invoke(cli, ["oidc-client", "add", "--name", "X", "--redirect-uri",
                                     "https://x.example.test/cb", "--role", bad])
        assert result.exit_code != 0 and "must look like NAME:GROUP=ROLE" in result.output, result.output
    assert len(clients.all_clients()) == 2


def test_a_client_stored_before_a_newer_check_can_still_be_changed(runner: FlaskCliRunner) -> None:
    # A claim map naming sub passed before sub was refused; refusing it again at every change would leave a
    # CLI-only operator no way to change the client but to register a new one.
    creds = json.loads(run(runner, "add", "--name", "Wiki", "--redirect-uri", "https://wiki.example.test/cb", "--json"))
    row = clients.get_or_404(creds["client_id"])
    row.claim_map = [*row.claim_map, {"attribute": "email", "name": "sub", "scope": "profile"}]
    db.session.commit()
    assert run(runner, "update", creds["client_id"], "--require-pkce").strip().endswith(": require_pkce")
    result = runner.invoke(cli, ["oidc-client", "add", "--name", "New", "--redirect-uri", "https://n.example.test/cb",
                                 "--claim", "email=sub"])
    assert result.exit_code == 1 and "claim 'sub' is the protocol's to set" in result.output
