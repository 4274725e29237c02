"""`idp sp add --preset` and `idp sp presets`: a SaaS app registered from its preset and its account-specific
values alone, and every way an admin can get that wrong refused in one line, with nothing stored."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from lxml import etree
from sqlalchemy import func, select

from idp import audit, create_app
from idp.cli import cli
from idp.config import ConfigError, Settings
from idp.extensions import db
from idp.saml import providers
from idp.saml.metadata import MD, parse_sp_metadata
from idp.store import ServiceProvider

EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
UNSPECIFIED = "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified"


def run(runner: FlaskCliRunner, *args: str) -> Any:
    return runner.invoke(cli, list(args))


def ok(runner: FlaskCliRunner, *args: str) -> str:
    result = run(runner, *args)
    assert result.exit_code == 0, (result.output, result.stderr)
    return str(result.stdout)


def sp_count() -> int:
    return int(db.session.scalar(select(func.count()).select_from(ServiceProvider)))


def refused(runner: FlaskCliRunner, *args: str) -> str:
    """The one-line error the CLI prints for a refusal, which registers nothing."""
    before = sp_count()
    result = run(runner, *args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert sp_count() == before
    return lines[0]


# (preset, parameters, entity ID, every ACS with the default first, NameID format, released attribute names)
PRESETS = [
    ("aws", [], "urn:amazon:webservices", "https://signin.aws.amazon.com/saml", PERSISTENT, []),
    ("datadog", ["site=app.datadoghq.eu"], "https://app.datadoghq.eu/account/saml/metadata.xml",
     "https://app.datadoghq.eu/account/saml/assertion", EMAIL,
     [("urn:oid:1.3.6.1.4.1.5923.1.1.1.6", URI), ("urn:oid:2.5.4.4", URI), ("urn:oid:2.5.4.42", URI)]),
    ("salesforce", ["domain=acme.my.salesforce.com"], "https://acme.my.salesforce.com",
     "https://acme.my.salesforce.com", EMAIL,
     [("User.Email", UNSPECIFIED), ("User.Username", UNSPECIFIED), ("User.LastName", UNSPECIFIED),
      ("User.FirstName", UNSPECIFIED)]),
    ("tableau", ["alias=4b728bd1-df88-4c1e-9d2a-0123456789ab"],
     "https://sso.online.tableau.com/public/sp/metadata?alias=4b728bd1-df88-4c1e-9d2a-0123456789ab",
     "https://sso.online.tableau.com/public/sp/SSO/4b728bd1-df88-4c1e-9d2a-0123456789ab", EMAIL,
     [("email", BASIC), ("firstname", BASIC), ("lastname", BASIC)]),
    ("pagerduty", ["subdomain=acme"], "https://acme.pagerduty.com", "https://acme.pagerduty.com/sso/saml/consume",
     EMAIL, [("name", BASIC)]),
]


@pytest.mark.parametrize("preset, params, entity_id, acs, nameid_format, attributes", PRESETS,
                         ids=[p[0] for p in PRESETS])
def test_each_preset_registers_the_vendor_sp_from_its_account_values(
    runner: FlaskCliRunner, preset: str, params: list[str], entity_id: str, acs: str, nameid_format: str,
    attributes: list[tuple[str, str]],
) -> None:
    out = ok(runner, "sp", "add", "--preset", preset, *(a for p in params for a in ("--param", p)))
    assert f"registered service provider '{entity_id}'" in out
    sp = providers.get(entity_id)
    assert sp is not None
    meta = providers.metadata_of(sp)  # what providers.add stored passed its XSD and ACS checks
    assert [e.location for e in meta.acs if e.is_default] == [acs]
    assert meta.signing_certs == () and meta.encryption_certs == ()  # no KeyDescriptor
    assert sp.nameid_format == nameid_format
    assert [(r["name"], r["name_format"]) for r in sp.attribute_map] == attributes
    (event,) = audit.events(type="sp.add")
    assert event.sp == entity_id


def test_defaults_and_optional_parameters_choose_the_endpoints(runner: FlaskCliRunner) -> None:
    ok(runner, "sp", "add", "--preset", "datadog")  # the site's default: US1
    sp = providers.get("https://app.datadoghq.com/account/saml/metadata.xml")
    assert sp is not None and sp.name == "Datadog"
    assert [e.location for e in providers.metadata_of(sp).acs] == ["https://app.datadoghq.com/account/saml/assertion"]
    # With the organization's IdP-initiated ID, unsolicited responses go to its own endpoint; the generic one
    # stays for SP-initiated sign-ins.
    ok(runner, "sp", "add", "--preset", "datadog", "--param", "site=us5.datadoghq.com",
       "--param", "idp_initiated_id=a1b2c3")
    sp = providers.get("https://us5.datadoghq.com/account/saml/metadata.xml")
    assert sp is not None
    assert [(e.location, e.is_default) for e in providers.metadata_of(sp).acs] == [
        ("https://us5.datadoghq.com/account/saml/assertion/id/a1b2c3", True),
        ("https://us5.datadoghq.com/account/saml/assertion", False)]
    ok(runner, "sp", "add", "--preset", "salesforce", "--param", "domain=acme.my.salesforce.com",
       "--param", "org_id=00D5g000001abcd", "--name", "Salesforce (prod)")
    sp = providers.get("https://acme.my.salesforce.com")
    assert sp is not None and sp.name == "Salesforce (prod)"
    assert [(e.location, e.is_default) for e in providers.metadata_of(sp).acs] == [
        ("https://acme.my.salesforce.com?so=00D5g000001abcd", True), ("https://acme.my.salesforce.com", False)]


def test_rendered_metadata_is_an_sp_descriptor_without_keys(app: Flask) -> None:
    from idp.saml import presets

    xml = presets.render(presets.load("pagerduty"), {"subdomain": "acme"})
    meta = parse_sp_metadata(xml)
    assert meta.entity_id == "https://acme.pagerduty.com" and meta.nameid_formats == (EMAIL,)
    assert meta.display_name == "PagerDuty"
    root = etree.fromstring(xml)
    assert [etree.QName(child).localname for child in root.find(f"{{{MD}}}SPSSODescriptor")] == [
        "Extensions", "NameIDFormat", "AssertionConsumerService"]


def test_role_shorthand_goes_to_the_presets_role_attribute(runner: FlaskCliRunner) -> None:
    ok(runner, "sp", "add", "--preset", "datadog", "--param", "site=app.datadoghq.eu",
       "--role", "engineers=Datadog Standard Role", "--role", "idp_role:sre=Datadog Admin Role",
       "--role", "https://example.com/team:sre=oncall")
    sp = providers.get("https://app.datadoghq.eu/account/saml/metadata.xml")
    assert sp is not None
    # The preset's attributes stay; the roles join them, in the preset's role attribute unless one is named.
    assert [r["name"] for r in sp.attribute_map][:3] == [
        "urn:oid:1.3.6.1.4.1.5923.1.1.1.6", "urn:oid:2.5.4.4", "urn:oid:2.5.4.42"]
    assert sp.attribute_map[3:] == [
        {"attribute": "roles", "name": "idp_role", "name_format": BASIC,
         "roles": {"engineers": ["Datadog Standard Role"], "sre": ["Datadog Admin Role"]}},
        {"attribute": "roles", "name": "https://example.com/team", "name_format": BASIC,
         "roles": {"sre": ["oncall"]}},
    ]
    ok(runner, "sp", "add", "--preset", "salesforce", "--param", "domain=acme.my.salesforce.com",
       "--role", "sales=Standard User")
    sp = providers.get("https://acme.my.salesforce.com")
    assert sp is not None and sp.attribute_map[-1] == {
        "attribute": "roles", "name": "User.ProfileId", "name_format": UNSPECIFIED,
        "roles": {"sales": ["Standard User"]}}


def test_admin_options_override_the_preset(runner: FlaskCliRunner) -> None:
    ok(runner, "sp", "add", "--preset", "pagerduty", "--param", "subdomain=acme", "--nameid-format", "persistent",
       "--attribute", "email=mail", "--no-sign-response")
    sp = providers.get("https://acme.pagerduty.com")
    assert sp is not None
    assert (sp.nameid_format, sp.sign_response) == (PERSISTENT, False)
    assert sp.attribute_map == [{"attribute": "email", "name": "mail", "name_format": BASIC}]


def test_presets_lists_every_preset_with_its_parameters_and_defaults(runner: FlaskCliRunner) -> None:
    out = ok(runner, "sp", "presets")
    listed = [line.split("\t")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert listed == ["aws", "datadog", "pagerduty", "salesforce", "tableau"]
    assert "  --param site=...\tdefault app.datadoghq.com\t" in out
    assert "  --param idp_initiated_id=...\toptional\t" in out
    assert "  --param domain=...\trequired\t" in out
    assert "roles in User.ProfileId" in out and "metadata aws-signin-metadata.xml" in out
    records = {r["name"]: r for r in json.loads(ok(runner, "sp", "presets", "--json"))}
    assert records["tableau"]["role_attribute"] is None
    assert records["datadog"]["role_attribute"] == {"name": "idp_role", "name_format": BASIC}
    assert records["datadog"]["parameters"][0] == {
        "name": "site", "kind": "host", "help": "the Datadog site's web host, e.g. app.datadoghq.eu",
        "default": "app.datadoghq.com", "required": False}


@pytest.mark.parametrize("args, message", [
    (["--preset", "okta"], "no preset 'okta' in "),
    (["--preset", "../metadata/presets/datadog"], "no preset '../metadata/presets/datadog'"),
    (["--preset", "salesforce"], "preset 'salesforce' needs --param domain=... (the org's My Domain host"),
    (["--preset", "datadog", "--param", "region=eu"], "preset 'datadog' has no parameter 'region' (its parameters: "
                                                     "site, idp_initiated_id)"),
    (["--preset", "datadog", "--param", "site=evil.example/x?"], "parameter 'site': 'evil.example/x?' is not a host"),
    (["--preset", "datadog", "--param", "site=a@evil.example"], "parameter 'site': 'a@evil.example' is not a host"),
    (["--preset", "datadog", "--param", "site=app.datadoghq.com:8443"], "is not a host name"),
    (["--preset", "datadog", "--param", "site="], "parameter 'site': '' is not a host name"),
    (["--preset", "pagerduty", "--param", "subdomain=evil.example#"], "parameter 'subdomain'"),
    (["--preset", "tableau", "--param", "alias=a/../b"], "parameter 'alias': 'a/../b' is not 1 to 128 letters"),
    (["--preset", "datadog", "--param", "site"], "parameter 'site' must look like NAME=VALUE"),
    (["--preset", "datadog", "--param", "site=a.example", "--param", "site=b.example"], "'site' is given twice"),
    (["--preset", "tableau", "--param", "alias=x", "--role", "explorers=Explorer"],
     "role 'explorers=Explorer' must look like NAME:GROUP=ROLE"),
    ([], "give either --metadata FILE_OR_URL or --preset NAME"),
    (["--preset", "aws", "--metadata", "x.xml"], "give either --metadata FILE_OR_URL or --preset NAME"),
    (["--metadata", "x.xml", "--param", "a=b"], "--param goes with --preset"),
])
def test_bad_preset_use_is_refused_in_one_line(runner: FlaskCliRunner, args: list[str], message: str) -> None:
    assert message in refused(runner, "sp", "add", *args)


@pytest.fixture
def presets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "presets"
    folder.mkdir()
    return folder


@pytest.fixture
def own_presets(make_settings: Callable[..., Settings], presets_dir: Path) -> Iterator[FlaskCliRunner]:
    """The CLI of an app whose IDP_PRESETS_DIR is a folder the test writes."""
    app = create_app(make_settings(presets_dir=presets_dir))
    with app.app_context():
        yield app.test_cli_runner()
        db.session.remove()
        db.engine.dispose()


GOOD = """\
name: Wiki
parameters:
  host: {kind: host, help: the wiki's host}
entity_id: "https://{host}/saml"
acs: "https://{host}/saml/acs"
nameid_format: persistent
attributes:
  - {attribute: email, name: mail}
role_attribute: {name: wikiRole}
"""


@pytest.mark.parametrize("text, message", [
    ("name: [unclosed", "not valid YAML (line 1"),
    ("- a list", "must be a mapping"),
    (GOOD.replace("nameid_format", "name_id_format"), "unknown key 'name_id_format'"),
    (GOOD.replace("nameid_format: persistent\n", ""), "'nameid_format' must be a non-empty string"),
    (GOOD.replace("persistent", "kerberos"), "NameID format 'kerberos' is not supported"),
    (GOOD.replace('"https://{host}/saml/acs"', '"https://{hots}/saml/acs"'), "undeclared parameter 'hots'"),
    (GOOD.replace('"https://{host}/saml/acs"', '"https://{host.__class__}/acs"'), "must be a plain {parameter}"),
    (GOOD.replace('"https://{host}/saml/acs"', '"https://{host!r}/acs"'), "must be a plain {parameter}"),
    (GOOD.replace('"https://{host}/saml/acs"', '"http://{host}/acs"'), "'acs' must be an https:// URL template"),
    (GOOD.replace("kind: host", "kind: url"), "parameter 'host': kind must be one of host, token"),
    (GOOD.replace("kind: host,", "kind: host, default: 'a b',"), "parameter 'host': 'a b' is not a host name"),
    (GOOD.replace("kind: host,", "kind: host, required: false,"),
     "the entity_id template may use only required parameters"),
    (GOOD.replace("attribute: email", "attribute: password"), "unknown attribute 'password'"),
    (GOOD.replace("{name: wikiRole}", "{name: wikiRole, name_format: fancy}"), "name format 'fancy'"),
    (GOOD.replace("name: Wiki\n", "name: Wiki\nmetadata_file: ../../etc/passwd\n"),
     "a preset with a metadata_file has no entity_id, acs or parameters"),
])
def test_a_malformed_preset_file_is_refused_in_one_line(
    own_presets: FlaskCliRunner, presets_dir: Path, text: str, message: str,
) -> None:
    (presets_dir / "wiki.yaml").write_text(text)
    for args in (["add", "--preset", "wiki", "--param", "host=wiki.example.test"], ["presets"]):
        line = refused(own_presets, "sp", *args)
        assert f"preset {presets_dir / 'wiki.yaml'}: " in line and message in line


def test_an_own_preset_works_like_the_shipped_ones(own_presets: FlaskCliRunner, presets_dir: Path) -> None:
    (presets_dir / "wiki.yaml").write_text(GOOD)
    assert ok(own_presets, "sp", "presets").startswith("wiki\tWiki\thttps://{host}/saml; roles in wikiRole\n")
    ok(own_presets, "sp", "add", "--preset", "wiki", "--param", "host=wiki.example.test", "--role", "staff=editor")
    sp = providers.get("https://wiki.example.test/saml")
    assert sp is not None and sp.nameid_format == PERSISTENT
    assert sp.attribute_map[-1]["roles"] == {"staff": ["editor"]}
    (presets_dir / "sub.yaml").write_text("name: Sub\nmetadata_file: ../secret.xml\nnameid_format: email\n")
    assert "must be a file name beside the preset" in refused(own_presets, "sp", "add", "--preset", "sub")


def test_presets_dir_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"IDP_PRESETS_DIR: .* is not a directory"):
        Settings.from_env({"IDP_PRESETS_DIR": str(tmp_path / "missing")})
