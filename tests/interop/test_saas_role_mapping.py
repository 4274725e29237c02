"""A Datadog-style app receives the role values the group mapping promises.

The app is registered the way an admin would, from its preset (`idp sp add --preset ... --role GROUP=ROLE`),
and users in different groups open it from the IdP (IdP-initiated, ``/saml/init``). python3-saml, configured
with the vendor's entity ID and ACS only, validates each Response against our published metadata; the test
then reads what the vendor would: the role attribute under the preset's name, and the preset's attributes.
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from helpers import login, make_user
from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from saml_peers import NAMEID_EMAIL, OneLoginSp, read_post_form

from idp.cli import cli
from idp.extensions import db
from idp.saml import providers

PASSWORD = "correct horse battery"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
UNSPECIFIED = "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified"

# A fake Datadog site: the ACS only has to be the one python3-saml is told it serves.
DATADOG_ENTITY = "https://dd.example.test/account/saml/metadata.xml"
DATADOG_ACS = "https://dd.example.test/account/saml/assertion/id/0ab1c2"
SALESFORCE_ENTITY = "https://acme.sf.example.test"
SALESFORCE_ACS = "https://acme.sf.example.test?so=00D000000000001"


@pytest.fixture
def people(app: Flask) -> None:
    make_user("ann", PASSWORD, groups=["engineers"], email="ann@example.test", given_name="Ann",
              family_name="Archer")
    make_user("bob", PASSWORD, groups=["engineers", "sre"], email="bob@example.test", given_name="Bob",
              family_name="Baker")
    make_user("cy", PASSWORD, groups=["marketing"], email="cy@example.test", given_name="Cy", family_name="Cole")
    make_user("sam", PASSWORD, groups=["sales"], email="sam@example.test", given_name="Sam", family_name="Stone")


def register(runner: FlaskCliRunner, *args: str) -> None:
    result = runner.invoke(cli, ["sp", "add", *args])
    assert result.exit_code == 0, (result.output, result.stderr)


def open_to_all(entity_id: str) -> None:
    providers.get_or_404(entity_id).open_to_all = True
    db.session.commit()


def launch(app: Flask, username: str, entity_id: str, acs_url: str) -> OneLogin_Saml2_Auth:
    """``username`` signs in (a browser of its own) and opens the app from the IdP; the vendor's side, a
    python3-saml SP that knows only the vendor's entity ID and ACS, validates what arrives there."""
    browser = app.test_client()
    assert login(browser, username, PASSWORD).status_code == 302
    page = browser.get("/saml/init", query_string={"sp": entity_id})
    assert page.status_code == 200, page.get_data(as_text=True)[:2000]
    vendor = OneLoginSp(browser.get("/saml/metadata").data, entity_id=entity_id, acs_url=acs_url, slo_url=None,
                        nameid_format=NAMEID_EMAIL)
    auth = vendor.process_response(read_post_form(page.get_data(as_text=True)), None)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    return auth


def name_formats(auth: OneLogin_Saml2_Auth) -> dict[str, str]:
    root = etree.fromstring(auth.get_last_response_xml().encode())
    return {a.get("Name"): a.get("NameFormat") for a in root.iter(f"{{{SAML}}}Attribute")}


@pytest.mark.usefixtures("people")
def test_a_datadog_style_app_receives_the_role_values_the_group_mapping_promises(
    app: Flask, runner: FlaskCliRunner,
) -> None:
    register(runner, "--preset", "datadog", "--param", "site=dd.example.test", "--param", "idp_initiated_id=0ab1c2",
             "--role", "engineers=Datadog Standard Role", "--role", "sre=Datadog Admin Role",
             "--role", "sre=Datadog Standard Role")
    open_to_all(DATADOG_ENTITY)
    expected_roles = {
        "ann": ["Datadog Standard Role"],
        "bob": ["Datadog Standard Role", "Datadog Admin Role"],  # two mapped groups: both, each once
        "cy": None,  # no mapped group: no idp_role attribute at all, not an empty one
    }
    for username, roles in expected_roles.items():
        auth = launch(app, username, DATADOG_ENTITY, DATADOG_ACS)
        assert auth.get_nameid() == f"{username}@example.test"
        assert auth.get_nameid_format() == NAMEID_EMAIL
        attributes = auth.get_attributes()
        assert attributes.get("idp_role") == roles, username
        assert attributes["urn:oid:1.3.6.1.4.1.5923.1.1.1.6"] == [f"{username}@example.test"]
        assert set(attributes) == {"urn:oid:1.3.6.1.4.1.5923.1.1.1.6", "urn:oid:2.5.4.4", "urn:oid:2.5.4.42",
                                   *(["idp_role"] if roles else [])}
        assert name_formats(auth) == {
            "urn:oid:1.3.6.1.4.1.5923.1.1.1.6": URI, "urn:oid:2.5.4.4": URI, "urn:oid:2.5.4.42": URI,
            **({"idp_role": BASIC} if roles else {})}


@pytest.mark.usefixtures("people")
def test_a_salesforce_style_app_receives_the_profile_the_group_mapping_promises(
    app: Flask, runner: FlaskCliRunner,
) -> None:
    register(runner, "--preset", "salesforce", "--param", "domain=acme.sf.example.test",
             "--param", "org_id=00D000000000001",
             "--role", "sales=Standard User", "--role", "sre=System Administrator")
    open_to_all(SALESFORCE_ENTITY)
    expected = {
        "sam": ("Sam", "Stone", ["Standard User"]),
        "bob": ("Bob", "Baker", ["System Administrator"]),
        "ann": ("Ann", "Archer", None),  # no mapped group: no profile at all
    }
    for username, (first, last, profile) in expected.items():
        auth = launch(app, username, SALESFORCE_ENTITY, SALESFORCE_ACS)
        email = [f"{username}@example.test"]
        assert auth.get_attributes() == {
            "User.Email": email, "User.Username": email, "User.LastName": [last], "User.FirstName": [first],
            **({"User.ProfileId": profile} if profile else {})}, username
        assert set(name_formats(auth).values()) == {UNSPECIFIED}
