"""AWS federation end to end: the portal's stable console link answers with a SAML Response that AWS would take.

moto's STS plays AWS: ``AssumeRoleWithSAML`` through boto3 returns credentials for the assertion, expiring
when the permission set's session duration says. moto checks no signature, audience, recipient or expiry, so
python3-saml, set up as AWS sign-in (entity ID urn:amazon:webservices, ACS https://signin.aws.amazon.com/saml,
our IdP from /saml/metadata), validates the same Response in strict mode first.
moto's quirks (services.md): it fails on an AttributeStatement with one attribute and on a Role attribute
with two values, so it only sees single-role responses (which always carry RoleSessionName too).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import access_rows as rows
import boto3
import pytest
from conftest import Clock
from flask import Flask
from flask.testing import FlaskClient
from helpers import committed_elsewhere, login, make_user
from moto import mock_aws
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from saml_peers import NAMEID_PERSISTENT, OneLoginSp, PostedForm, read_post_form
from werkzeug.test import TestResponse

from idp import audit, clock, create_app
from idp.access import aws
from idp.access.decide import AWS_ENTITY_ID, AccountTarget, authorize
from idp.authn.principal import principal_from_user
from idp.config import Settings
from idp.extensions import db
from idp.portal.aws import _SP_OPTIONS, GLOBAL_ACS, METADATA_NAME, ensure_sp
from idp.saml import presets, providers
from idp.saml.presets import DEFAULT_DIR

PASSWORD = "correct horse battery"
PROD = "111122223333"  # in the Production OU
SANDBOX = "444455556666"  # nobody is assigned here
EU = "777788889999"  # signs in at a regional endpoint
EU_ACS = "https://eu-west-1.signin.aws.amazon.com/saml"
CONSOLE = "https://console.aws.amazon.com/ec2/home"


def provider(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:saml-provider/bridge"


def role(account_id: str, name: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{name}"


@pytest.fixture
def model(app: Flask) -> dict[str, Any]:
    return make_model()


def make_model() -> dict[str, Any]:
    """alice (group engineers) holds Admin (2 h) through the Production OU and ReadOnly (1 h) in Production
    directly; bob holds nothing; the EU account signs in at eu-west-1."""
    alice = make_user("alice", PASSWORD, groups=["engineers"], email="alice@example.test")
    make_user("bob", PASSWORD)
    prod_ou = rows.ou("Production")
    admin = rows.permission_set("Admin", hours=2, role_name="AdministratorAccess")
    read_only = rows.permission_set("ReadOnly", hours=1, role_name="ReadOnlyAccess")
    prod = rows.account(PROD, "Production", prod_ou)
    rows.account(SANDBOX, "Sandbox")
    eu = rows.account(EU, "Production EU", prod_ou)
    admin.relay_state, eu.signin_url = CONSOLE, EU_ACS
    db.session.commit()
    rows.assign(admin, group="engineers", ou=prod_ou)
    rows.assign(read_only, user=alice, account=prod)
    return {"alice": alice, "read_only": read_only, "prod": prod, "prod_ou": prod_ou}


def signed_in(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    assert login(client, username, PASSWORD).status_code == 302
    return client


def launch(client: FlaskClient, account_id: str, permission_set: str) -> TestResponse:
    return client.get(f"/portal/aws/{account_id}/{permission_set}")


def aws_sign_in(client: FlaskClient, acs_url: str = GLOBAL_ACS) -> OneLoginSp:
    """python3-saml as AWS sign-in at ``acs_url``, trusting our /saml/metadata."""
    return OneLoginSp(client.get("/saml/metadata").data, entity_id=AWS_ENTITY_ID, acs_url=acs_url, slo_url=None,
                      nameid_format=NAMEID_PERSISTENT)


def validated(sp: OneLoginSp, form: PostedForm) -> OneLogin_Saml2_Auth:
    auth = sp.process_response(form, None)  # IdP-initiated: answers no request
    assert auth.get_errors() == [], auth.get_last_error_reason()
    return auth


def assume_role(form: PostedForm, role_value: str) -> dict[str, Any]:
    role_arn, principal_arn = role_value.split(",")
    with mock_aws():
        sts = boto3.client("sts", region_name="us-east-1")
        answer: dict[str, Any] = dict(sts.assume_role_with_saml(
            RoleArn=role_arn, PrincipalArn=principal_arn, SAMLAssertion=form.fields["SAMLResponse"]))
    return answer


def denials(username: str) -> list[audit.AuditEvent]:
    return audit.events(username=username, type="access.denied")


def test_console_link_gives_a_response_aws_sign_in_and_sts_accept(app: Flask, model: dict[str, Any]) -> None:
    client = signed_in(app, "alice")
    page = launch(client, PROD, "Admin")
    assert page.status_code == 200, page.get_data(as_text=True)[:2000]
    form = read_post_form(page.get_data(as_text=True))
    assert form.action == GLOBAL_ACS
    assert form.fields["RelayState"] == CONSOLE

    # (a) What AWS sign-in checks, by a library that is not ours: both signatures against our metadata's
    # certificate, audience urn:amazon:webservices, Recipient and Destination the ACS, NotBefore/NotOnOrAfter.
    auth = validated(aws_sign_in(client), form)
    assert auth.is_authenticated()
    assert auth.get_nameid_format() == NAMEID_PERSISTENT
    attributes = auth.get_attributes()
    # alice holds ReadOnly there too, but the link names one permission set: one role, no picker.
    assert attributes[aws.ROLE] == [f"{role(PROD, 'AdministratorAccess')},{provider(PROD)}"]
    assert attributes[aws.ROLE_SESSION_NAME] == ["alice"]
    assert attributes[aws.SESSION_DURATION] == ["7200"]
    # No SourceIdentity or tags unless configured: they need extra actions in every role's trust policy.
    assert set(attributes) == {aws.ROLE, aws.ROLE_SESSION_NAME, aws.SESSION_DURATION}
    # No SessionNotOnOrAfter: STS would end the console session with our sign-in session, not the set's.
    assert auth.get_session_expiration() is None
    now = datetime.now(UTC).timestamp()
    assert now < auth.get_last_assertion_not_on_or_after() <= now + 300 + 5  # a short-lived bearer assertion

    # A Response changed on the way (a longer session) no longer verifies.
    xml = base64.b64decode(form.fields["SAMLResponse"]).replace(b">7200<", b">43200<")
    forged = PostedForm(form.action, {**form.fields, "SAMLResponse": base64.b64encode(xml).decode()})
    auth = aws_sign_in(client).process_response(forged, None)
    assert auth.get_errors(), "a tampered response must be refused"

    # (b) STS: credentials for the role, expiring after the permission set's session duration.
    before = datetime.now(UTC)
    answer = assume_role(form, attributes[aws.ROLE][0])
    expiry = answer["Credentials"]["Expiration"]
    assert before + timedelta(hours=2) - timedelta(seconds=5) <= expiry <= datetime.now(UTC) + timedelta(hours=2)
    assert answer["Credentials"]["AccessKeyId"] and answer["Credentials"]["SessionToken"]
    assert answer["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{PROD}:assumed-role/AdministratorAccess/alice"

    # The role assumption is audited with the account, the role and the session duration.
    event = audit.events(username="alice", type="saml.response")[0]
    assert event.sp == AWS_ENTITY_ID
    assert event.details["aws"] == {"account": PROD, "permission_set": "Admin",
                                    "roles": [role(PROD, "AdministratorAccess")], "session_seconds": 7200}


def test_a_launch_carries_only_the_granted_roles(app: Flask, model: dict[str, Any]) -> None:
    """A Role mapping left on the AWS SP (as set up before permission sets existed) must not widen a launch,
    and a HEAD request (a link checker) launches nothing."""
    client = signed_in(app, "alice")
    assert client.head(f"/portal/aws/{PROD}/Admin").status_code == 200
    assert providers.get(AWS_ENTITY_ID) is None and audit.events(type="saml.response") == []
    ensure_sp("test")
    stale = {"attribute": "roles", "name": aws.ROLE, "roles": {"engineers": [f"{role(SANDBOX, 'Root')},x"]}}
    providers.update(AWS_ENTITY_ID, providers.SpOptions(attribute_map=(stale,)), actor="test")
    form = read_post_form(launch(client, PROD, "Admin").get_data(as_text=True))
    attributes = validated(aws_sign_in(client), form).get_attributes()
    assert attributes[aws.ROLE] == [f"{role(PROD, 'AdministratorAccess')},{provider(PROD)}"]


def test_aws_sign_in_is_registered_once_on_first_use(app: Flask, model: dict[str, Any]) -> None:
    assert providers.get(AWS_ENTITY_ID) is None
    client = signed_in(app, "alice")
    assert launch(client, PROD, "Admin").status_code == 200
    assert launch(client, PROD, "ReadOnly").status_code == 200
    sp = providers.get(AWS_ENTITY_ID)
    assert sp is not None and sp.attribute_map == [] and sp.sign_assertion and sp.sign_response
    assert len(audit.events(type="sp.add")) == 1
    ensure_sp("test")  # registered already: nothing more
    assert providers.get(AWS_ENTITY_ID) == sp and len(audit.events(type="sp.add")) == 1


def test_a_first_launch_that_loses_the_registration_race_uses_the_winners_sp(app: Flask) -> None:
    """Two first launches at once: the one whose registration collides takes the SP the other registered, though
    it had looked AWS sign-in up as missing earlier in its request."""
    with app.test_request_context("/portal/aws"):
        assert providers.get(AWS_ENTITY_ID) is None  # this request's look-up, before the other launch commits
        committed_elsewhere(app, lambda: providers.add((DEFAULT_DIR / METADATA_NAME).read_bytes(), "", _SP_OPTIONS,
                                                       "the other launch"))
        ensure_sp("this launch")
        sp = providers.get(AWS_ENTITY_ID)
        assert sp is not None and sp.entity_id == AWS_ENTITY_ID
    assert [e.actor for e in audit.events(type="sp.add")] == ["the other launch"]


@pytest.mark.parametrize("layout", ["installed", "checkout"])
def test_aws_sign_in_is_registered_from_the_configured_presets_folder(
        make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, layout: str) -> None:
    """AWS sign-in's metadata is read from the presets folder (IDP_PRESETS_DIR), then from the repository's. An
    installed bridge (the container image) has no repository beside its package: without the file in its presets
    folder, or with a file that is not AWS's, a launch is a clear error page and a log line for the admin. A
    checkout with presets of its own falls back to the repository's copy."""
    if layout == "installed":
        monkeypatch.setattr(presets, "DEFAULT_DIR", tmp_path / "no-repository" / "metadata" / "presets")
    folder = tmp_path / "presets"
    folder.mkdir()
    app = create_app(make_settings(presets_dir=folder))
    original = (DEFAULT_DIR / METADATA_NAME).read_bytes()
    with app.app_context():
        try:
            _launch_from(folder, layout, original, app, caplog)
        finally:
            db.session.remove()
            db.engine.dispose()


def _launch_from(folder: Path, layout: str, original: bytes, app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    make_model()
    client = signed_in(app, "alice")
    if layout == "checkout":
        assert launch(client, PROD, "Admin").status_code == 200 and providers.get(AWS_ENTITY_ID) is not None
        return
    for content, logged in [(None, f"{METADATA_NAME} is in none of {folder}"),
                            (original.replace(b"urn:amazon:webservices", b"urn:example:not-aws"),
                             f"{folder / METADATA_NAME} is the metadata of 'urn:example:not-aws'")]:
        if content is not None:
            (folder / METADATA_NAME).write_bytes(content)
        refused = launch(client, PROD, "Admin")
        page = refused.get_data(as_text=True)
        assert refused.status_code == 500 and "AWS sign-in is not set up on this server" in page
        assert "Traceback" not in page and str(folder) not in page
        assert f"AWS sign-in cannot be registered: {logged}" in caplog.text.replace("\n", " ")
        assert audit.events(type="sp.add") == []
    (folder / METADATA_NAME).write_bytes(
        original.replace(b"<EntityDescriptor", b"<!-- the operator's copy --><EntityDescriptor", 1))
    assert launch(client, PROD, "Admin").status_code == 200
    sp = providers.get(AWS_ENTITY_ID)
    assert sp is not None and "the operator's copy" in sp.metadata_xml


def test_a_regional_account_is_posted_to_its_own_endpoint(app: Flask, model: dict[str, Any]) -> None:
    client = signed_in(app, "alice")
    form = read_post_form(launch(client, EU, "Admin").get_data(as_text=True))
    assert form.action == EU_ACS
    auth = validated(aws_sign_in(client, EU_ACS), form)  # Recipient and Destination are the regional ACS
    assert auth.get_attributes()[aws.ROLE] == [f"{role(EU, 'AdministratorAccess')},{provider(EU)}"]
    answer = assume_role(form, auth.get_attributes()[aws.ROLE][0])
    assert answer["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::{EU}:assumed-role/AdministratorAccess/alice"


def test_an_account_added_to_the_ou_later_can_be_opened(app: Flask, model: dict[str, Any]) -> None:
    later = rows.account("121212121212", "Added later", model["prod_ou"])
    form = read_post_form(launch(signed_in(app, "alice"), later.account_id, "Admin").get_data(as_text=True))
    auth = validated(aws_sign_in(app.test_client()), form)
    assert auth.get_attributes()[aws.ROLE] == [f"{role(later.account_id, 'AdministratorAccess')},"
                                               f"{provider(later.account_id)}"]


def test_every_role_held_in_an_account_is_offered_with_the_shortest_session(app: Flask,
                                                                            model: dict[str, Any]) -> None:
    """Without a permission set the decision grants every role alice holds in the account: AWS's role picker."""
    principal = principal_from_user(model["alice"], clock.now())
    grant = authorize(principal, AccountTarget(PROD), clock.now())
    released = {a.name: a.values for a in aws.role_attributes(principal, grant.roles, clock.now())}
    assert released[aws.ROLE] == (f"{role(PROD, 'AdministratorAccess')},{provider(PROD)}",
                                  f"{role(PROD, 'ReadOnlyAccess')},{provider(PROD)}")
    assert released[aws.SESSION_DURATION] == ("3600",)


def test_anonymous_user_signs_in_first_and_comes_back_to_the_link(app: Flask, model: dict[str, Any]) -> None:
    client = app.test_client()
    page = launch(client, PROD, "Admin")
    assert page.status_code == 302 and "/login" in page.location
    back = login(client, "alice", PASSWORD, next=f"/portal/aws/{PROD}/Admin")
    assert back.location.endswith(f"/portal/aws/{PROD}/Admin")
    form = read_post_form(client.get(back.location).get_data(as_text=True))
    assert validated(aws_sign_in(client), form).get_attributes()[aws.SESSION_DURATION] == ["7200"]


def test_user_without_an_assignment_is_refused_and_audited(app: Flask, model: dict[str, Any]) -> None:
    page = launch(signed_in(app, "bob"), PROD, "Admin")
    assert page.status_code == 403
    assert "SAMLResponse" not in page.get_data(as_text=True)
    [event] = denials("bob")
    assert event.reason == "no assignment for this account and permission set"
    assert event.details == {"account": PROD, "permission_set": "Admin"}
    assert audit.events(type="saml.response") == []


def test_forged_links_are_refused_and_audited(app: Flask, model: dict[str, Any]) -> None:
    client = signed_in(app, "alice")
    assert launch(client, SANDBOX, "Admin").status_code == 403  # a real account she was never given
    assert launch(client, "999999999999", "Admin").status_code == 403  # no such account
    assert launch(client, PROD, "Billing").status_code == 403  # no such permission set
    assert [(e.details["account"], e.reason) for e in reversed(denials("alice"))] == [
        (SANDBOX, "no assignment for this account and permission set"),
        ("999999999999", "unknown account"),
        (PROD, "unknown permission set"),
    ]
    assert audit.events(type="saml.response") == []


def test_an_expired_assignment_stops_working_at_its_expiry(app: Flask, model: dict[str, Any],
                                                           frozen_clock: Clock) -> None:
    carol = make_user("carol", PASSWORD)
    rows.assign(model["read_only"], user=carol, account=model["prod"], until=clock.now() + timedelta(minutes=20))
    client = signed_in(app, "carol")
    form = read_post_form(launch(client, PROD, "ReadOnly").get_data(as_text=True))
    # The console session ends with the assignment, not an hour later (the clock is still real time here).
    assert validated(aws_sign_in(client), form).get_attributes()[aws.SESSION_DURATION] == ["1200"]

    frozen_clock.advance(minutes=20)
    page = launch(client, PROD, "ReadOnly")
    assert page.status_code == 403
    [event] = denials("carol")
    assert event.details == {"account": PROD, "permission_set": "ReadOnly"}
