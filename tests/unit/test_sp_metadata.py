"""SP metadata: what real SP libraries write is read correctly, and every bad file is refused with a
message that says what is wrong (never another exception)."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from interop.pysaml2_sp import Pysaml2Sp
from saml_peers import SP_ACS_URL, SP_ENTITY_ID, SP_SLO_URL, cert_b64, python3_saml_metadata, sp_keys

from idp.saml.metadata import (
    BINDING_POST,
    BINDING_REDIRECT,
    METADATA_MAX_BYTES,
    MetadataError,
    parse_sp_metadata,
)
from idp.saml.signing import block_cipher
from idp.saml.sso import default_acs

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


def p3_metadata(**kwargs: object) -> str:
    return python3_saml_metadata(**kwargs).decode()


def refusal(xml: str | bytes) -> str:
    with pytest.raises(MetadataError) as info:
        parse_sp_metadata(xml.encode() if isinstance(xml, str) else xml)
    assert info.value.status == 400
    return info.value.message


def test_python3_saml_metadata_is_read() -> None:
    meta = parse_sp_metadata(python3_saml_metadata(
        nameid_format=PERSISTENT, security={"authnRequestsSigned": True, "wantAssertionsEncrypted": True}))
    assert meta.entity_id == SP_ENTITY_ID
    assert [(e.binding, e.location, e.index) for e in meta.acs] == [(BINDING_POST, SP_ACS_URL, 1)]
    assert [(e.binding, e.location) for e in meta.slo] == [(BINDING_REDIRECT, SP_SLO_URL)]
    assert meta.signing_certs == meta.encryption_certs == (cert_b64(sp_keys()[1]),)
    assert meta.authn_requests_signed is True
    assert meta.nameid_formats == (PERSISTENT,)


def test_without_encryption_the_sp_has_no_encryption_certificate() -> None:
    meta = parse_sp_metadata(python3_saml_metadata())
    assert meta.signing_certs and not meta.encryption_certs
    assert meta.authn_requests_signed is False


def test_pysaml2_metadata_is_read(tmp_path: Path) -> None:
    sp = Pysaml2Sp(tmp_path)
    meta = parse_sp_metadata(sp.metadata_xml())
    assert meta.entity_id == sp.entity_id
    assert [e.location for e in meta.acs] == [sp.acs_url]
    assert {e.binding for e in meta.slo} == {BINDING_REDIRECT, BINDING_POST}
    assert len(meta.signing_certs) == 1 and len(meta.encryption_certs) == 1
    assert meta.signing_certs != meta.encryption_certs
    assert meta.authn_requests_signed is True


def test_a_keydescriptor_without_use_counts_for_signing_and_encryption() -> None:
    xml = p3_metadata().replace('<md:KeyDescriptor use="signing">', "<md:KeyDescriptor>")
    meta = parse_sp_metadata(xml.encode())
    assert meta.signing_certs == meta.encryption_certs == (cert_b64(sp_keys()[1]),)


def test_an_ec_certificate_is_for_signing_only() -> None:
    """Assertions are encrypted by wrapping their key with RSA-OAEP: an EC certificate cannot take it (it failed
    every sign-in of such an SP with a 500), so it counts for signatures only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec sp")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(datetime(2026, 1, 1)).not_valid_after(datetime(2036, 1, 1))
            .sign(key, hashes.SHA256()))
    ec_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    xml = p3_metadata().replace('<md:KeyDescriptor use="signing">', "<md:KeyDescriptor>")
    meta = parse_sp_metadata(xml.replace(cert_b64(sp_keys()[1]), ec_b64).encode())
    assert meta.signing_certs == (ec_b64,) and meta.encryption_certs == ()


def test_the_encryption_methods_listed_choose_the_cipher() -> None:
    """md:EncryptionMethod of the keys used for encryption, in order; the cipher is the first of ours they name
    (GCM before CBC, 256 before 128 bits), AES-256-GCM when they name none of ours (3DES is not one)."""
    gcm, cbc, tdes = ("http://www.w3.org/2009/xmlenc11#aes128-gcm", "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                      "http://www.w3.org/2001/04/xmlenc#tripledes-cbc")
    methods = "".join(f'<md:EncryptionMethod Algorithm="{a}"/>' for a in (tdes, cbc, gcm))
    xml = re.sub(r"(<md:KeyDescriptor use=\"encryption\">.*?</ds:KeyInfo>)", lambda m: m.group(1) + methods,
                 p3_metadata(security={"wantAssertionsEncrypted": True}), flags=re.DOTALL)
    meta = parse_sp_metadata(xml.encode())
    assert meta.encryption_methods == (tdes, cbc, gcm)
    assert block_cipher(meta.encryption_methods) == gcm
    assert block_cipher((tdes, cbc)) == cbc
    assert block_cipher((tdes,)) == block_cipher(()) == "http://www.w3.org/2009/xmlenc11#aes256-gcm"


def test_display_name_comes_from_the_organization() -> None:
    xml = p3_metadata().replace("</md:EntityDescriptor>", (
        '<md:Organization><md:OrganizationName xml:lang="en">Acme</md:OrganizationName>'
        '<md:OrganizationDisplayName xml:lang="en">Acme Wiki</md:OrganizationDisplayName>'
        '<md:OrganizationURL xml:lang="en">https://acme.example</md:OrganizationURL></md:Organization>'
        "</md:EntityDescriptor>"))
    assert parse_sp_metadata(xml.encode()).display_name == "Acme Wiki"


def test_acs_with_other_bindings_only_is_refused() -> None:
    xml = p3_metadata().replace(
        f'Binding="{BINDING_POST}" Location="{SP_ACS_URL}"',
        f'Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact" Location="{SP_ACS_URL}"')
    assert refusal(xml) == "metadata has no AssertionConsumerService with the HTTP-POST binding"


@pytest.mark.parametrize(("marks", "default"), [
    (("", "", ""), "a"),  # none marked: the first in the metadata's order, not the lowest index
    (("", ' isDefault="false"', ' isDefault="true"'), "c"),
    ((' isDefault="false"', "", ""), "b"),  # the first not marked false
    ((' isDefault="false"', ' isDefault="false"', ' isDefault="false"'), "a"),
])
def test_the_default_acs_is_chosen_as_saml_metadata_says(marks: tuple[str, str, str], default: str) -> None:
    acs = "".join(f'<md:AssertionConsumerService Binding="{BINDING_POST}" Location="https://sp.example.test/{n}" '
                  f'index="{i}"{m}/>' for n, i, m in zip("abc", (3, 0, 1), marks, strict=True))
    xml = p3_metadata().replace(f'<md:AssertionConsumerService Binding="{BINDING_POST}" Location="{SP_ACS_URL}" '
                                'index="1"/>', acs)
    assert default_acs(parse_sp_metadata(xml.encode())) == f"https://sp.example.test/{default}"


def test_a_relative_acs_location_is_refused() -> None:
    xml = p3_metadata().replace(f'Location="{SP_ACS_URL}"', 'Location="/acs"')
    assert refusal(xml) == "AssertionConsumerService Location '/acs' is not an absolute http(s) URL"
    xml = p3_metadata().replace(f'Location="{SP_ACS_URL}"', 'Location="javascript:alert(1)"')
    assert "is not an absolute http(s) URL" in refusal(xml)
    # The ACS origin goes into the auto-post page's Content-Security-Policy: no room for extra directives.
    xml = p3_metadata().replace(f'Location="{SP_ACS_URL}"', 'Location="https://sp.example;script-src%20*/acs"')
    assert "is not an absolute http(s) URL" in refusal(xml)


def test_an_unparsable_certificate_is_named() -> None:
    junk = base64.b64encode(b"this is not a certificate").decode()
    xml = p3_metadata(security={"wantAssertionsEncrypted": True})
    good = cert_b64(sp_keys()[1])
    first = xml.index(good)
    second = xml.index(good, first + 1)
    xml = xml[:second] + junk + xml[second + len(good):]
    assert refusal(xml) == "certificate 2 in KeyDescriptor is not a valid X.509 certificate"


def test_schema_errors_are_reported_with_their_line() -> None:
    xml = p3_metadata().replace(' index="1"', "")
    message = refusal(xml)
    assert message.startswith("metadata is not valid against the SAML metadata schema: ")
    assert "index" in message and "line" in message


def test_the_root_must_be_an_entity_descriptor() -> None:
    xml = p3_metadata()
    wrapped = xml.replace("<md:EntityDescriptor", '<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"><md:EntityDescriptor', 1) + "</md:EntitiesDescriptor>"  # noqa: E501
    assert refusal(wrapped) == "metadata root must be an md:EntityDescriptor, not EntitiesDescriptor"


def test_an_idp_only_entity_is_refused() -> None:
    xml = p3_metadata().replace("SPSSODescriptor", "IDPSSODescriptor")
    xml = xml.replace("AssertionConsumerService", "SingleSignOnService").replace(' index="1"', "")
    xml = xml.replace(' AuthnRequestsSigned="false" WantAssertionsSigned="true"', "")
    assert refusal(xml) == "metadata has no SPSSODescriptor for the SAML 2.0 protocol"


def test_a_missing_entity_id_is_refused() -> None:
    xml = p3_metadata().replace(f' entityID="{SP_ENTITY_ID}"', "")
    assert "entityID" in refusal(xml)


def test_unsafe_and_broken_xml_is_refused_with_a_reason() -> None:
    doctype = '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + p3_metadata()
    assert refusal(doctype) == "metadata is not usable XML: XML with a DOCTYPE (DTD) is not accepted"
    assert refusal(p3_metadata()[:-30]).startswith("metadata is not usable XML: XML is not well-formed")
    assert refusal(b"\x00\x01binary").startswith("metadata is not usable XML")
    assert refusal(b" " * (METADATA_MAX_BYTES + 1)).startswith("metadata is too large")


# --- fuzzing: nothing but MetadataError ever escapes --------------------------------------------------

VALID = python3_saml_metadata(security={"authnRequestsSigned": True, "wantAssertionsEncrypted": True})


def parses_or_refuses(data: bytes) -> None:
    try:
        parse_sp_metadata(data)
    except MetadataError as exc:
        assert exc.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_only_ever_give_metadata_errors(data: bytes) -> None:
    parses_or_refuses(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(VALID)), st.integers(0, 40),
       st.sampled_from([b"", b"<", b">", b'"', b"&", b"x", b"0", b" ", b"=", b"/", b"-", b"\xff", b"<md:X/>",
                        b'index="-1"', b'Location="http://"', b"</md:KeyDescriptor>", b"&amp;", b"]]>"]))
def test_mutated_metadata_only_ever_gives_metadata_errors(pos: int, cut: int, insert: bytes) -> None:
    parses_or_refuses(VALID[:pos] + insert + VALID[pos + cut:])


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([b"AssertionConsumerService", b"KeyDescriptor", b"X509Certificate", b"entityID",
                        b"SPSSODescriptor", b"Binding", b"Location", b"index", b"use", b"NameIDFormat"]),
       st.text(max_size=30).map(str.encode))
def test_replaced_names_and_values_only_ever_give_metadata_errors(name: bytes, value: bytes) -> None:
    parses_or_refuses(VALID.replace(name, value))


# Eight threads of a fresh interpreter reading metadata at once, as the first SSO requests of a new worker do.
_FIRST_READS = """
import sys, threading
from idp.saml.metadata import parse_sp_metadata
xml = sys.stdin.buffer.read()
barrier = threading.Barrier(8)
failures = []
def read():
    barrier.wait(10)
    try:
        parse_sp_metadata(xml)
    except Exception as exc:
        failures.append(repr(exc))
threads = [threading.Thread(target=read) for _ in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join(30)
print(failures[:3])
sys.exit(1 if failures else 0)
"""


def test_a_fresh_process_reads_its_first_metadata_in_many_threads_at_once() -> None:
    """Found under load (test_load.py): a worker's first SSO requests, in parallel threads, each built the XML
    Schema at once, and libxml2 failed ("the given type is not a built-in type"): 500s. Whether the threads
    collide is chance (about two times in three here), so four fresh processes try at once."""
    xml = python3_saml_metadata()
    runs = [subprocess.Popen([sys.executable, "-c", _FIRST_READS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT) for _ in range(4)]
    outputs = [run.communicate(xml, timeout=60)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, outputs


def test_valid_until_is_the_earliest_of_the_entity_and_its_sp_descriptor() -> None:
    xml = re.sub(r' validUntil="[^"]*"', ' validUntil="2031-05-06T07:08:09Z"', p3_metadata(), count=1)
    xml = xml.replace('<md:SPSSODescriptor ', '<md:SPSSODescriptor validUntil="2030-01-02T03:04:05" ', 1)
    meta = parse_sp_metadata(xml.encode())
    assert meta.valid_until == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)  # no zone: UTC
    assert meta.expired(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert not meta.expired(datetime(2030, 1, 1, tzinfo=UTC))


def test_a_valid_until_python_cannot_read_counts_as_none() -> None:
    # The schema allows 24:00:00 and years beyond 9999; stored metadata is read at every sign-in.
    for value in ("2030-01-01T24:00:00Z", "10000-01-01T00:00:00Z"):
        xml = re.sub(r' validUntil="[^"]*"', f' validUntil="{value}"', p3_metadata(), count=1)
        assert parse_sp_metadata(xml.encode()).valid_until is None
