"""Apps are open to nobody until assigned or opened: the admin's switches (``idp oidc-client add
--open-to-all --login-url``, SpOptions.open_to_all) and what a signed-in user then meets."""

from __future__ import annotations

import json
from typing import Any

import access_rows as rows
import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import login, make_user
from saml_peers import SP_ACS_URL, SP_ENTITY_ID, python3_saml_metadata, read_post_form, register_sp

from idp import audit, clock
from idp.cli import cli
from idp.extensions import db
from idp.oidc import clients
from idp.saml import providers, sso
from idp.state import pending

PASSWORD = "correct horse battery"


def oidc_client(runner: FlaskCliRunner, *args: str) -> Any:
    return runner.invoke(cli, ["oidc-client", *args])


@pytest.fixture
def alice(app: Flask) -> None:
    make_user("alice", PASSWORD, groups=["engineering"])


def test_a_client_is_closed_unless_opened_and_its_login_url_is_kept(runner: FlaskCliRunner) -> None:
    closed = json.loads(oidc_client(runner, "add", "--name", "Wiki", "--redirect-uri", "https://wiki.test/cb",
                                    "--json").output)
    shown = json.loads(oidc_client(runner, "show", closed["client_id"], "--json").output)
    assert shown["open_to_all"] is False and shown["login_url"] is None

    result = oidc_client(runner, "add", "--name", "Chat", "--redirect-uri", "https://chat.test/cb",
                         "--open-to-all", "--login-url", "https://chat.test/login", "--json")
    assert result.exit_code == 0, result.output
    opened = json.loads(oidc_client(runner, "show", json.loads(result.output)["client_id"], "--json").output)
    assert opened["open_to_all"] is True and opened["login_url"] == "https://chat.test/login"
    added = audit.events(type="oidc.client.add")[0]
    assert added.details["open_to_all"] is True and added.details["login_url"] == "https://chat.test/login"

    # A local development client may start on http at a loopback address.
    assert oidc_client(runner, "add", "--name", "Dev", "--redirect-uri", "http://127.0.0.1:8080/cb",
                       "--login-url", "http://localhost:8080/login").exit_code == 0


@pytest.mark.parametrize("url", ["http://chat.test/login", "javascript:alert(1)", "https://chat.test/login#x",
                                 "/login"])
def test_a_login_url_the_portal_must_not_send_users_to_is_refused(runner: FlaskCliRunner, url: str) -> None:
    result = oidc_client(runner, "add", "--name", "Chat", "--redirect-uri", "https://chat.test/cb",
                         "--login-url", url)
    assert result.exit_code != 0 and "login URL" in result.output and "Traceback" not in result.output
    assert clients.all_clients() == []


def test_an_sp_is_closed_until_opened_and_the_change_is_audited(client: FlaskClient, runner: FlaskCliRunner,
                                                                 alice: None) -> None:
    providers.add(python3_saml_metadata(), None, providers.SpOptions(), actor="test")
    assert "open_to_all: False" in runner.invoke(cli, ["sp", "show", SP_ENTITY_ID]).output
    login(client, "alice", PASSWORD)
    refused = client.get("/saml/init", query_string={"sp": SP_ENTITY_ID})
    assert refused.status_code == 403 and b"not been given access" in refused.data

    changed = providers.update(SP_ENTITY_ID, providers.SpOptions(open_to_all=True), actor="admin")
    assert changed == {"open_to_all": {"from": False, "to": True}}
    assert audit.events(type="sp.update")[0].details == {"changed": changed}
    assert "open_to_all: True" in runner.invoke(cli, ["sp", "show", SP_ENTITY_ID]).output
    answered = client.get("/saml/init", query_string={"sp": SP_ENTITY_ID})
    assert read_post_form(answered.get_data(as_text=True)).action == SP_ACS_URL


def test_a_request_parked_before_the_upgrade_is_still_answered(client: FlaskClient, alice: None) -> None:
    """A sign-in waiting at the login page while the bridge is upgraded has no AWS fields in its row."""
    register_sp(python3_saml_metadata())
    req = sso.SsoRequest(sp_entity_id=SP_ENTITY_ID, request_id=None, acs_url=SP_ACS_URL, relay_state="/home",
                         force_authn=False, is_passive=False, requested_nameid_format=None,
                         received_at=clock.now())
    # As an older version parked it: without the fields added since.
    old_data = {k: v for k, v in req.to_data().items() if k not in ("aws_account", "permission_set")}
    pending_id = pending.put(sso.PENDING_KIND, old_data, clock.now() + sso.PENDING_LIFETIME)

    resumed = login(client, "alice", PASSWORD, next=f"/saml/continue/{pending_id}")
    form = read_post_form(resumed.get_data(as_text=True))
    assert form.action == SP_ACS_URL and form.fields["RelayState"] == "/home"


def test_an_aws_launch_goes_only_to_a_sign_in_endpoint_aws_publishes(client: FlaskClient, alice: None) -> None:
    """An account whose sign-in URL is not one of AWS sign-in's endpoints gets no Response posted there."""
    account = rows.account("111122223333", "Production")
    rows.assign(rows.permission_set("Admin"), group="engineering", account=account)
    account.signin_url = "https://signin.example.test/saml"
    db.session.commit()
    login(client, "alice", PASSWORD)
    page = client.get("/portal/aws/111122223333/Admin")
    assert page.status_code == 400 and b"saml-post" not in page.data
    refusal = audit.events(type="saml.refused")[0]
    assert refusal.reason == "AWS sign-in endpoint not in metadata: https://signin.example.test/saml"
    assert audit.events(type="saml.response") == []
