"""`idp sp ...`: registering and managing service providers from their metadata, as an admin would."""

from __future__ import annotations

import getpass
import json
import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from saml_peers import SP_ACS_URL, SP_ENTITY_ID, cert_b64, python3_saml_metadata, sp_keys
from sqlalchemy import func, select

from idp import audit
from idp.cli import cli
from idp.errors import BadRequest
from idp.extensions import db
from idp.saml import providers
from idp.store import ServiceProvider

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"


def idp(runner: FlaskCliRunner, *args: str, input: str | None = None) -> Any:
    return runner.invoke(cli, list(args), input=input)


def ok(runner: FlaskCliRunner, *args: str, input: str | None = None) -> str:
    result = idp(runner, *args, input=input)
    assert result.exit_code == 0, (result.output, result.stderr)
    return str(result.stdout)


def refused(runner: FlaskCliRunner, *args: str) -> str:
    result = idp(runner, *args)
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return str(result.stderr)


def sp_count() -> int:
    return int(db.session.scalar(select(func.count()).select_from(ServiceProvider)))


@pytest.fixture
def md_file(tmp_path: Path) -> Path:
    path = tmp_path / "sp-metadata.xml"
    path.write_bytes(python3_saml_metadata(nameid_format=PERSISTENT, security={"authnRequestsSigned": True}))
    return path


def test_add_with_defaults_from_the_metadata(runner: FlaskCliRunner, md_file: Path) -> None:
    out = ok(runner, "sp", "add", "--metadata", str(md_file))
    assert f"registered service provider '{SP_ENTITY_ID}'" in out
    sp = providers.get_or_404(SP_ENTITY_ID)  # the stored row, with where it came from
    assert sp.nameid_format == PERSISTENT  # the first format in the SP's metadata that we issue
    assert sp.require_signed_requests is True  # AuthnRequestsSigned="true"
    assert (sp.sign_response, sp.sign_assertion, sp.encrypt_assertion, sp.allow_sha1) == (True, True, False, False)
    assert sp.attribute_map == [{"attribute": a, "name": a, "name_format": BASIC} for a in
                                ("username", "email", "given_name", "family_name", "display_name", "groups")]
    assert sp.metadata_source == str(md_file.resolve())
    (event,) = audit.events(type="sp.add")
    assert event.actor == "cli:" + getpass.getuser()
    assert event.sp == SP_ENTITY_ID
    assert event.details["nameid_format"] == PERSISTENT


def test_add_with_settings(runner: FlaskCliRunner, md_file: Path) -> None:
    ok(runner, "sp", "add", "--metadata", str(md_file), "--name", "Wiki", "--nameid-format", "email",
       "--no-sign-response", "--no-require-signed-requests", "--allow-sha1",
       "--attribute", "email=mail", "--attribute", "groups=urn:oid:1.3.6.1.4.1.5923.1.5.1.1;uri")
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None
    assert (sp.name, sp.nameid_format, sp.sign_response, sp.require_signed_requests, sp.allow_sha1) == (
        "Wiki", EMAIL, False, False, True)
    assert sp.attribute_map == [
        {"attribute": "email", "name": "mail", "name_format": BASIC},
        {"attribute": "groups", "name": "urn:oid:1.3.6.1.4.1.5923.1.5.1.1", "name_format": URI},
    ]


def test_a_second_add_of_the_same_entity_is_refused(runner: FlaskCliRunner, md_file: Path) -> None:
    ok(runner, "sp", "add", "--metadata", str(md_file))
    err = refused(runner, "sp", "add", "--metadata", str(md_file), "--name", "again")
    assert f"service provider '{SP_ENTITY_ID}' is already registered" in err
    assert sp_count() == 1


@pytest.mark.parametrize("mutate, message", [
    (lambda x: x.replace(b"HTTP-POST", b"HTTP-Artifact"),
     "metadata has no AssertionConsumerService with the HTTP-POST binding"),
    (lambda x: x.replace(b' index="1"', b""), "metadata is not valid against the SAML metadata schema: "),
    (lambda x: x[:200], "metadata is not usable XML: XML is not well-formed"),
    (lambda x: b'<!DOCTYPE x [<!ENTITY a "b">]>' + x, "XML with a DOCTYPE (DTD) is not accepted"),
])
def test_bad_metadata_is_refused_with_the_reason_and_nothing_is_stored(
    runner: FlaskCliRunner, md_file: Path, mutate: Any, message: str,
) -> None:
    md_file.write_bytes(mutate(md_file.read_bytes()))
    assert message in refused(runner, "sp", "add", "--metadata", str(md_file))
    assert sp_count() == 0
    assert audit.events(type="sp.add") == []


def test_unusable_sources_and_options_are_refused(runner: FlaskCliRunner, md_file: Path, tmp_path: Path) -> None:
    assert "cannot read" in refused(runner, "sp", "add", "--metadata", str(tmp_path / "nope.xml"))
    assert "only http and https URLs" in refused(runner, "sp", "add", "--metadata", f"file://{md_file}")
    err = refused(runner, "sp", "add", "--metadata", str(md_file), "--attribute", "password=pw")
    assert "unknown attribute 'password'" in err
    assert "must look like OURS=NAME" in refused(runner, "sp", "add", "--metadata", str(md_file), "--attribute", "x")
    err = refused(runner, "sp", "add", "--metadata", str(md_file), "--attribute", "email=mail;weird")
    assert "name format 'weird'" in err
    assert "NameID format 'kerberos' is not supported" in refused(
        runner, "sp", "add", "--metadata", str(md_file), "--nameid-format", "kerberos")
    # Two attributes of one name: the SP keeps one, whichever it reads last.
    assert "the name 'a' is given twice" in refused(runner, "sp", "add", "--metadata", str(md_file),
                                                    "--attribute", "email=a", "--attribute", "groups=a")
    assert sp_count() == 0


def test_encryption_needs_an_encryption_certificate(runner: FlaskCliRunner, md_file: Path, tmp_path: Path) -> None:
    err = refused(runner, "sp", "add", "--metadata", str(md_file), "--encrypt-assertion")
    assert f"cannot encrypt assertions for '{SP_ENTITY_ID}': its metadata has no encryption certificate" in err
    with_enc = tmp_path / "enc.xml"
    with_enc.write_bytes(python3_saml_metadata(security={"wantAssertionsEncrypted": True}))
    ok(runner, "sp", "add", "--metadata", str(with_enc), "--encrypt-assertion")
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None and sp.encrypt_assertion is True


def test_set_changes_only_what_is_given_and_audits_it(runner: FlaskCliRunner, md_file: Path) -> None:
    ok(runner, "sp", "add", "--metadata", str(md_file))
    out = ok(runner, "sp", "set", SP_ENTITY_ID, "--nameid-format", "transient", "--no-sign-assertion")
    assert "sign_assertion: True -> False" in out
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None
    assert sp.nameid_format.endswith(":transient") and sp.sign_assertion is False and sp.sign_response is True
    (event,) = audit.events(type="sp.update")
    assert set(event.details["changed"]) == {"nameid_format", "sign_assertion"}
    assert "nothing changed" in ok(runner, "sp", "set", SP_ENTITY_ID, "--no-sign-assertion")
    assert "no service provider 'https://nope' is registered" in refused(runner, "sp", "set", "https://nope",
                                                                         "--allow-sha1")
    assert "metadata has no encryption certificate" in refused(runner, "sp", "set", SP_ENTITY_ID,
                                                               "--encrypt-assertion")
    # Nothing signed would be an assertion anybody could write: refused, and nothing changes.
    assert "the Response or the Assertion must be signed" in refused(runner, "sp", "set", SP_ENTITY_ID,
                                                                     "--no-sign-response")
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None and sp.sign_response is True


def test_role_options_build_one_role_rule_per_attribute(runner: FlaskCliRunner, md_file: Path) -> None:
    ok(runner, "sp", "add", "--metadata", str(md_file), "--attribute", "email=mail",
       "--role", "https://example.com/role:engineers=developer", "--role", "https://example.com/role:staff=viewer")
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None
    assert sp.attribute_map == [
        {"attribute": "email", "name": "mail", "name_format": BASIC},
        {"attribute": "roles", "name": "https://example.com/role", "name_format": BASIC,
         "roles": {"engineers": ["developer"], "staff": ["viewer"]}},
    ]
    # `set --role` extends the SP's own map; the rest of it stays.
    out = ok(runner, "sp", "set", SP_ENTITY_ID, "--role", "https://example.com/role:engineers=deployer")
    assert "roles=https://example.com/role;basic {engineers=developer,deployer staff=viewer}" in out
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None and sp.attribute_map[0] == {"attribute": "email", "name": "mail", "name_format": BASIC}
    assert sp.attribute_map[1]["roles"] == {"engineers": ["developer", "deployer"], "staff": ["viewer"]}
    (event,) = audit.events(type="sp.update")
    assert event.details["changed"]["attribute_map"]["to"] == [
        "email=mail", "roles=https://example.com/role {engineers=developer,deployer staff=viewer}"]
    for bad in ("engineers=developer", "https://example.com/role:engineers", "role:=developer"):
        assert "must look like NAME:GROUP=ROLE" in refused(runner, "sp", "set", SP_ENTITY_ID, "--role", bad)
    # A bad map cannot come in through the service either.
    bad_map = ({"attribute": "roles", "name": "role", "roles": {"staff": []}},)
    with pytest.raises(BadRequest, match="group 'staff' must map to a non-empty list"):
        providers.update(SP_ENTITY_ID, providers.SpOptions(attribute_map=bad_map), "test")


def test_list_and_show(runner: FlaskCliRunner, md_file: Path) -> None:
    assert "no service providers registered" in ok(runner, "sp", "list")
    ok(runner, "sp", "add", "--metadata", str(md_file), "--name", "Wiki")
    line = ok(runner, "sp", "list").strip()
    assert line.startswith(f"{SP_ENTITY_ID}\tWiki\tpersistent\t")
    (listed,) = json.loads(ok(runner, "sp", "list", "--json"))
    assert listed["entity_id"] == SP_ENTITY_ID and listed["name"] == "Wiki"
    shown = json.loads(ok(runner, "sp", "show", SP_ENTITY_ID, "--json"))
    assert shown["acs"] == [{"binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST", "location": SP_ACS_URL,
                             "index": 1, "is_default": False}]
    assert shown["signing_certificates"] == [providers.fingerprint(cert_b64(sp_keys()[1]))]
    assert shown["require_signed_requests"] is True
    text = ok(runner, "sp", "show", SP_ENTITY_ID)
    assert f"acs: {SP_ACS_URL} (HTTP-POST)" in text
    assert "attribute_map: username=username;basic" in text
    assert "no service provider" in refused(runner, "sp", "show", "https://nope")


def test_remove_asks_unless_yes(runner: FlaskCliRunner, md_file: Path) -> None:
    ok(runner, "sp", "add", "--metadata", str(md_file))
    result = idp(runner, "sp", "remove", SP_ENTITY_ID, input="n\n")
    assert result.exit_code != 0
    assert providers.get(SP_ENTITY_ID) is not None
    assert f"removed service provider '{SP_ENTITY_ID}'" in ok(runner, "sp", "remove", SP_ENTITY_ID, "--yes")
    assert providers.get(SP_ENTITY_ID) is None
    assert [e.sp for e in audit.events(type="sp.remove")] == [SP_ENTITY_ID]
    assert "no service provider" in refused(runner, "sp", "remove", SP_ENTITY_ID, "--yes")


def test_refresh_rereads_the_file_and_keeps_settings(runner: FlaskCliRunner, md_file: Path, app: Flask) -> None:
    ok(runner, "sp", "add", "--metadata", str(md_file), "--name", "Wiki", "--no-sign-response")
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None
    assert [e.location for e in providers.metadata_of(sp).acs] == [SP_ACS_URL]
    md_file.write_bytes(python3_saml_metadata(nameid_format=PERSISTENT, acs_url="https://sp.example.test/new-acs",
                                              security={"authnRequestsSigned": True}))
    assert "updated" in ok(runner, "sp", "refresh", SP_ENTITY_ID)
    db.session.expire_all()
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None
    assert [e.location for e in providers.metadata_of(sp).acs] == ["https://sp.example.test/new-acs"]
    assert (sp.name, sp.sign_response) == ("Wiki", False)
    assert "unchanged" in ok(runner, "sp", "refresh", SP_ENTITY_ID)
    assert len(audit.events(type="sp.refresh")) == 2
    # The file now describes another entity: refused, and the stored metadata stays.
    md_file.write_bytes(python3_saml_metadata(entity_id="https://other.example.test/md"))
    err = refused(runner, "sp", "refresh", SP_ENTITY_ID)
    assert f"is for 'https://other.example.test/md', not '{SP_ENTITY_ID}'" in err
    db.session.expire_all()
    sp = providers.get(SP_ENTITY_ID)
    assert sp is not None
    assert [e.location for e in providers.metadata_of(sp).acs] == ["https://sp.example.test/new-acs"]


def test_add_and_refresh_from_a_url(runner: FlaskCliRunner, http_dir: tuple[str, Path]) -> None:
    base, folder = http_dir
    (folder / "md.xml").write_bytes(python3_saml_metadata())
    ok(runner, "sp", "add", "--metadata", f"{base}/md.xml")
    assert providers.get_or_404(SP_ENTITY_ID).metadata_source == f"{base}/md.xml"
    (folder / "md.xml").write_bytes(python3_saml_metadata(acs_url="https://sp.example.test/acs2"))
    assert "updated" in ok(runner, "sp", "refresh", SP_ENTITY_ID)
    assert "returned HTTP 404" in refused(runner, "sp", "add", "--metadata", f"{base}/missing.xml")
    (folder / "huge.xml").write_bytes(b" " * (2 * 1024 * 1024))
    assert "sent more than" in refused(runner, "sp", "add", "--metadata", f"{base}/huge.xml")


def test_metadata_past_its_valid_until_is_refused_at_add_and_refresh(runner: FlaskCliRunner, md_file: Path,
                                                                      frozen_clock: Any) -> None:
    """SAML Metadata 4.3: expired metadata must not be used. python3-saml's is valid for two days; an SP's file
    kept that long is refused, with what to do. (Sign-ins are not refused: see the README.)"""
    ok(runner, "sp", "add", "--metadata", str(md_file))
    frozen_clock.advance(days=2, seconds=1)
    err = refused(runner, "sp", "refresh", SP_ENTITY_ID)
    assert "the metadata expired on " in err and "get a current copy from the service provider" in err
    ok(runner, "sp", "remove", SP_ENTITY_ID, "--yes")
    assert "the metadata expired on " in refused(runner, "sp", "add", "--metadata", str(md_file))
    assert sp_count() == 0
    md_file.write_bytes(python3_saml_metadata(nameid_format=PERSISTENT))  # a fresh copy, as of now
    ok(runner, "sp", "add", "--metadata", str(md_file))


def test_metadata_asking_for_signed_requests_without_a_key_to_check_them_is_refused(
        runner: FlaskCliRunner, md_file: Path) -> None:
    # Every sign-in would then be refused ("unsigned request"), whatever --no-require-signed-requests says.
    xml = re.sub(rb"<md:KeyDescriptor.*?</md:KeyDescriptor>", b"", md_file.read_bytes(), flags=re.DOTALL)
    assert b'AuthnRequestsSigned="true"' in xml and b"KeyDescriptor" not in xml
    md_file.write_bytes(xml)
    err = refused(runner, "sp", "add", "--metadata", str(md_file), "--no-require-signed-requests")
    assert "says AuthnRequestsSigned but has no signing certificate to check its requests with" in err
    assert sp_count() == 0


def _weak_keys() -> tuple[bytes, bytes]:
    """An SP's 1024-bit RSA key and its self-signed certificate."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the weak key under test)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak sp")])
    start = datetime.now(UTC) - timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + timedelta(days=365)).sign(key, hashes.SHA256()))
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), cert.public_bytes(serialization.Encoding.PEM))


def test_a_certificate_too_weak_to_trust_is_refused_at_add_and_refresh(
        runner: FlaskCliRunner, http_dir: tuple[str, Path]) -> None:
    """A 1024-bit RSA key can be factored by a well-funded attacker, who could then sign AuthnRequests and logout
    messages as the SP. Metadata holding one is refused with the reason; an SP stored with one before this check
    can still be changed and refreshed to a stronger key."""
    base, folder = http_dir
    (folder / "md.xml").write_bytes(python3_saml_metadata(keys=_weak_keys()))
    err = refused(runner, "sp", "add", "--metadata", f"{base}/md.xml")
    assert "the metadata's certificate 'CN=weak sp' holds an RSA key of 1024 bits (at least 2048 are needed)" in err
    assert sp_count() == 0
    (folder / "md.xml").write_bytes(python3_saml_metadata())
    ok(runner, "sp", "add", "--metadata", f"{base}/md.xml")
    strong = providers.get_or_404(SP_ENTITY_ID).metadata_xml
    (folder / "md.xml").write_bytes(python3_saml_metadata(keys=_weak_keys()))
    assert "holds an RSA key of 1024 bits" in refused(runner, "sp", "refresh", SP_ENTITY_ID)
    assert providers.get_or_404(SP_ENTITY_ID).metadata_xml == strong
    # Stored before the check: still changeable, refreshed to metadata that keeps the weak key beside a new
    # strong one (a rollover), and then to the strong key alone.
    weak = python3_saml_metadata(keys=_weak_keys())
    providers.get_or_404(SP_ENTITY_ID).metadata_xml = weak.decode()
    db.session.commit()
    ok(runner, "sp", "set", SP_ENTITY_ID, "--nameid-format", "transient")
    descriptor = re.search(rb"<md:KeyDescriptor.*?</md:KeyDescriptor>", python3_saml_metadata(), re.DOTALL)
    assert descriptor is not None
    (folder / "md.xml").write_bytes(weak.replace(b"<md:KeyDescriptor", descriptor.group(0) + b"<md:KeyDescriptor", 1))
    assert "updated" in ok(runner, "sp", "refresh", SP_ENTITY_ID)
    assert len(providers.metadata_of(providers.get_or_404(SP_ENTITY_ID)).signing_certs) == 2
    (folder / "md.xml").write_bytes(python3_saml_metadata())
    assert "updated" in ok(runner, "sp", "refresh", SP_ENTITY_ID)


def test_an_entity_id_with_a_control_character_is_refused(runner: FlaskCliRunner, md_file: Path) -> None:
    # XML carries a newline by reference and C1 controls as they are (U+009B is a terminal's CSI).
    # Checked first: the refusals of the metadata's other faults name the entityID (here AuthnRequestsSigned
    # without a certificate).
    unsigned = re.sub(rb"<md:KeyDescriptor.*?</md:KeyDescriptor>", b"", md_file.read_bytes(), flags=re.DOTALL)
    for char, xml in (("&#10;", md_file.read_bytes()), ("\u009b", md_file.read_bytes()), ("\u009b", unsigned)):
        xml = xml.replace(SP_ENTITY_ID.encode(), f"https://sp.example.test/a{char}b".encode(), 1)
        err = refused(runner, "sp", "add", "--metadata", str(_write(md_file, xml)))
        assert "the metadata's entityID may not contain a control character" in err, (char, err)
    assert sp_count() == 0


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
