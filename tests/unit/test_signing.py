"""XML signatures and encryption, checked by verifiers and decryptors that are not ours.

Our signatures must verify in python3-saml and in the ``xmlsec1`` program; what SPs sign (python3-saml makes
the signatures here) must verify with us, and tampered, wrapped or SHA-1 signatures must not.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.constants import OneLogin_Saml2_Constants as C
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from saml2.samlp import STATUS_SUCCESS
from saml2.sigver import CryptoBackendXmlSec1
from saml_peers import cert_b64, python3_saml_settings, sp_keys

from idp.keys import SigningKey, generate_key_pair
from idp.saml import build, signing, xmlsafe
from idp.saml.signing import SignatureInvalid

XMLSEC1 = "/usr/bin/xmlsec1"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
DS = "http://www.w3.org/2000/09/xmldsig#"

ISSUER = "<saml:Issuer>https://idp.example.test/saml/metadata</saml:Issuer>"
RESPONSE = (
    f'<samlp:Response xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_resp1" Version="2.0" '
    'IssueInstant="2030-01-01T00:00:00Z" Destination="https://sp.example.test/acs">'
    f"{ISSUER}"
    '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
    '<saml:Assertion ID="_assert1" Version="2.0" IssueInstant="2030-01-01T00:00:00Z">'
    f"{ISSUER}<saml:Subject><saml:NameID>alice@example.test</saml:NameID></saml:Subject>"
    "</saml:Assertion></samlp:Response>"
).encode()

AUTHN_REQUEST = (
    f'<samlp:AuthnRequest xmlns:samlp="{SAMLP}" xmlns:saml="{SAML}" ID="_req1" Version="2.0" '
    'IssueInstant="2030-01-01T00:00:00Z" AssertionConsumerServiceURL="https://sp.example.test/acs">'
    "<saml:Issuer>https://sp.example.test/metadata</saml:Issuer></samlp:AuthnRequest>"
).encode()


@pytest.fixture(scope="module")
def idp_key() -> SigningKey:
    key_pem, cert_pem = generate_key_pair("idp.example.test")
    return SigningKey("test", "active", key_pem, cert_pem)


def sp_cert() -> str:
    return cert_b64(sp_keys()[1])


def sp_signed(xml: bytes, *, sha1: bool = False, keys: tuple[bytes, bytes] | None = None) -> bytes:
    """Signed by python3-saml, as a python3-saml SP signs a POST-binding request."""
    key_pem, cert_pem = keys or sp_keys()
    out = OneLogin_Saml2_Utils.add_sign(
        xml, key_pem.decode(), cert_pem.decode(),
        sign_algorithm=C.RSA_SHA1 if sha1 else C.RSA_SHA256, digest_algorithm=C.SHA1 if sha1 else C.SHA256,
    )
    return out if isinstance(out, bytes) else out.encode()


def xmlsec1_verifies(xml: bytes, cert_pem: bytes, id_node: str, tmp_path: Path, signature: str | None = None
                     ) -> bool:
    """``signature``: an XPath to the Signature to check (default: the document's first)."""
    (tmp_path / "doc.xml").write_bytes(xml)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    result = subprocess.run(
        [XMLSEC1, "--verify", "--pubkey-cert-pem", str(tmp_path / "cert.pem"), "--id-attr:ID", id_node,
         *(["--node-xpath", signature] if signature else []), str(tmp_path / "doc.xml")],
        capture_output=True, check=False,
    )
    return result.returncode == 0


# --- our signatures ----------------------------------------------------------------------------------


def test_signature_follows_the_issuer_and_uses_sha256(idp_key: SigningKey) -> None:
    root = xmlsafe.parse(RESPONSE)
    signing.sign(root, idp_key)
    assert [etree.QName(c).localname for c in root][:3] == ["Issuer", "Signature", "Status"]
    sig = root.find(f"{{{DS}}}Signature")
    assert sig.find(f".//{{{DS}}}SignatureMethod").get("Algorithm") == signing.RSA_SHA256
    assert sig.find(f".//{{{DS}}}DigestMethod").get("Algorithm") == "http://www.w3.org/2001/04/xmlenc#sha256"
    assert sig.find(f".//{{{DS}}}Reference").get("URI") == "#_resp1"
    assert "".join(sig.findtext(f".//{{{DS}}}X509Certificate").split()) == idp_key.cert_b64


def test_python3_saml_accepts_our_response_and_assertion_signatures(idp_key: SigningKey) -> None:
    root = xmlsafe.parse(RESPONSE)
    signing.sign(root.find(f"{{{SAML}}}Assertion"), idp_key)
    signing.sign(root, idp_key)
    xml = etree.tostring(root)
    cert = idp_key.cert_pem.decode()
    assert OneLogin_Saml2_Utils.validate_sign(xml, cert)
    assert OneLogin_Saml2_Utils.validate_sign(xml, cert, xpath="/samlp:Response/saml:Assertion/ds:Signature")
    other = generate_key_pair("someone else")[1].decode()
    assert not OneLogin_Saml2_Utils.validate_sign(xml, other)


def test_the_xmlsec1_program_accepts_our_signature(idp_key: SigningKey, tmp_path: Path) -> None:
    root = xmlsafe.parse(RESPONSE)
    signing.sign(root, idp_key)
    xml = etree.tostring(root)
    assert xmlsec1_verifies(xml, idp_key.cert_pem, f"{SAMLP}:Response", tmp_path)
    tampered = xml.replace(b"alice@example.test", b"mallory@example.test")
    assert not xmlsec1_verifies(tampered, idp_key.cert_pem, f"{SAMLP}:Response", tmp_path)


def test_the_xmlsec1_program_accepts_both_signatures_of_a_response_as_we_build_it(
        idp_key: SigningKey, tmp_path: Path) -> None:
    # As SSO builds it: the assertion's prefixes declared on the response, typed attribute values declaring xs
    # themselves, the assertion signed inside the response and then the response around that signature.
    root = build.response(response_id="_r1", issue_instant="2030-01-01T00:00:00Z",
                          destination="https://sp.example.test/acs", in_response_to="_req1",
                          issuer="https://idp.example.test/saml/metadata", status=(STATUS_SUCCESS, None, None))
    build.assertion(
        root, assertion_id="_a1", issue_instant="2030-01-01T00:00:00Z", issuer="https://idp.example.test/saml/metadata",
        subject=build.Subject("alice", "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent", None,
                              "https://sp.example.test/metadata", "https://sp.example.test/acs",
                              "2030-01-01T00:05:00Z", "_req1"),
        not_before="2030-01-01T00:00:00Z", audience="https://sp.example.test/metadata",
        authn_instant="2030-01-01T00:00:00Z", session_index="_s1", session_not_on_or_after=None,
        authn_context="urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport",
        attributes=[build.Attribute("groups", "urn:oasis:names:tc:SAML:2.0:attrname-format:basic", None,
                                    ("admins", "dev & ops <east>"))],
    )
    signing.sign(root.find(f"{{{SAML}}}Assertion"), idp_key)
    signing.sign(root, idp_key)
    xml = etree.tostring(root)
    in_assertion = "//*[local-name()='Assertion']/*[local-name()='Signature']"
    assert xmlsec1_verifies(xml, idp_key.cert_pem, f"{SAMLP}:Response", tmp_path)
    assert xmlsec1_verifies(xml, idp_key.cert_pem, f"{SAML}:Assertion", tmp_path, in_assertion)
    tampered = xml.replace(b"admins", b"rooted")
    assert not xmlsec1_verifies(tampered, idp_key.cert_pem, f"{SAML}:Assertion", tmp_path, in_assertion)
    assert not xmlsec1_verifies(tampered, idp_key.cert_pem, f"{SAMLP}:Response", tmp_path)


def test_a_comment_in_the_signed_element_is_left_out_of_the_digest(idp_key: SigningKey, tmp_path: Path) -> None:
    # The Algorithm we name is exclusive canonicalisation without comments: verifiers digest the element without
    # them, so we must too, or our signature fails wherever a comment is.
    root = etree.fromstring(RESPONSE)
    root.find(f"{{{SAML}}}Assertion/{{{SAML}}}Subject/{{{SAML}}}NameID").append(etree.Comment(" kept "))
    signing.sign(root, idp_key)
    assert b"<!-- kept -->" in etree.tostring(root)
    assert xmlsec1_verifies(etree.tostring(root), idp_key.cert_pem, f"{SAMLP}:Response", tmp_path)


# --- verifying what SPs post ---------------------------------------------------------------------------


def test_a_python3_saml_signed_request_verifies() -> None:
    root = xmlsafe.parse(sp_signed(AUTHN_REQUEST))
    assert signing.verify_posted(root, [sp_cert()], allow_sha1=False) is True


def test_an_unsigned_request_is_reported_unsigned() -> None:
    assert signing.verify_posted(xmlsafe.parse(AUTHN_REQUEST), [sp_cert()], allow_sha1=False) is False


def test_any_of_several_metadata_certificates_may_verify() -> None:
    other = cert_b64(generate_key_pair("old sp key")[1])
    root = xmlsafe.parse(sp_signed(AUTHN_REQUEST))
    assert signing.verify_posted(root, [other, sp_cert()], allow_sha1=False) is True


def test_tampered_content_is_refused() -> None:
    signed = sp_signed(AUTHN_REQUEST).replace(b"https://sp.example.test/acs", b"https://evil.example/acs")
    with pytest.raises(SignatureInvalid, match="does not verify"):
        signing.verify_posted(xmlsafe.parse(signed), [sp_cert()], allow_sha1=False)


def test_the_certificate_in_keyinfo_is_never_trusted() -> None:
    # Signed by an attacker whose own certificate rides along in KeyInfo.
    signed = sp_signed(AUTHN_REQUEST, keys=generate_key_pair("attacker"))
    with pytest.raises(SignatureInvalid, match="does not verify"):
        signing.verify_posted(xmlsafe.parse(signed), [sp_cert()], allow_sha1=False)


def test_sha1_signatures_are_refused_unless_allowed() -> None:
    root = xmlsafe.parse(sp_signed(AUTHN_REQUEST, sha1=True))
    with pytest.raises(SignatureInvalid, match="SHA-1"):
        signing.verify_posted(root, [sp_cert()], allow_sha1=False)
    assert signing.verify_posted(root, [sp_cert()], allow_sha1=True) is True


def test_sha1_signatures_made_with_xmlsec_are_refused_too() -> None:
    import xmlsec

    root = xmlsafe.parse(AUTHN_REQUEST)
    sig = xmlsec.template.create(root, xmlsec.constants.TransformExclC14N, xmlsec.constants.TransformRsaSha1)
    ref = xmlsec.template.add_reference(sig, xmlsec.constants.TransformSha1, uri="#_req1")
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformEnveloped)
    xmlsec.template.add_transform(ref, xmlsec.constants.TransformExclC14N)
    root[0].addnext(sig)
    ctx = xmlsec.SignatureContext()
    ctx.key = xmlsec.Key.from_memory(sp_keys()[0], xmlsec.constants.KeyDataFormatPem)
    ctx.register_id(root, "ID")
    ctx.sign(sig)
    with pytest.raises(SignatureInvalid, match="SHA-1"):
        signing.verify_posted(root, [sp_cert()], allow_sha1=False)
    assert signing.verify_posted(root, [sp_cert()], allow_sha1=True) is True


def test_a_wrapped_signature_with_a_duplicated_id_is_refused() -> None:
    # XSW: an evil root reuses the signed ID and carries the genuine signed original inside it.
    original = xmlsafe.parse(sp_signed(AUTHN_REQUEST))
    evil = xmlsafe.parse(AUTHN_REQUEST.replace(b"https://sp.example.test/acs", b"https://evil.example/acs"))
    evil.append(original.find(f"{{{DS}}}Signature"))
    extensions = etree.SubElement(evil, f"{{{SAMLP}}}Extensions")
    extensions.append(xmlsafe.parse(sp_signed(AUTHN_REQUEST)))
    with pytest.raises(SignatureInvalid, match="more than once"):
        signing.verify_posted(xmlsafe.parse(etree.tostring(evil)), [sp_cert()], allow_sha1=False)


def test_an_xml_id_duplicating_the_signed_id_is_refused_not_a_crash() -> None:
    # libxml2 treats xml:id as an ID too: a duplicate must be a refusal (400), never an xmlsec error (500).
    root = xmlsafe.parse(sp_signed(AUTHN_REQUEST))
    extensions = etree.SubElement(root, f"{{{SAMLP}}}Extensions")
    etree.SubElement(extensions, "{urn:example}foo").set("{http://www.w3.org/XML/1998/namespace}id", "_req1")
    with pytest.raises(SignatureInvalid, match="more than once"):
        signing.verify_posted(xmlsafe.parse(etree.tostring(root)), [sp_cert()], allow_sha1=False)


def test_a_signature_referencing_another_element_is_refused() -> None:
    # XSW: the signature still points at the genuine (moved) element, not at the root it is attached to.
    original = xmlsafe.parse(sp_signed(AUTHN_REQUEST))
    evil = xmlsafe.parse(AUTHN_REQUEST.replace(b'ID="_req1"', b'ID="_evil"'))
    evil.append(copy.deepcopy(original.find(f"{{{DS}}}Signature")))
    extensions = etree.SubElement(evil, f"{{{SAMLP}}}Extensions")
    extensions.append(original)
    with pytest.raises(SignatureInvalid, match="does not cover"):
        signing.verify_posted(xmlsafe.parse(etree.tostring(evil)), [sp_cert()], allow_sha1=False)


def test_a_signature_only_on_a_nested_copy_does_not_count_as_signed() -> None:
    evil = xmlsafe.parse(AUTHN_REQUEST.replace(b'ID="_req1"', b'ID="_evil"'))
    etree.SubElement(evil, f"{{{SAMLP}}}Extensions").append(xmlsafe.parse(sp_signed(AUTHN_REQUEST)))
    assert signing.verify_posted(evil, [sp_cert()], allow_sha1=False) is False


def test_two_signatures_on_the_root_are_refused() -> None:
    root = xmlsafe.parse(sp_signed(AUTHN_REQUEST))
    root.append(copy.deepcopy(root.find(f"{{{DS}}}Signature")))
    with pytest.raises(SignatureInvalid, match="more than one"):
        signing.verify_posted(root, [sp_cert()], allow_sha1=False)


def test_unexpected_transforms_are_refused() -> None:
    root = xmlsafe.parse(sp_signed(AUTHN_REQUEST))
    transforms = root.find(f"{{{DS}}}Signature/{{{DS}}}SignedInfo/{{{DS}}}Reference/{{{DS}}}Transforms")
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116")
    with pytest.raises(SignatureInvalid, match="transform"):
        signing.verify_posted(root, [sp_cert()], allow_sha1=False)


# --- HTTP-Redirect binding ----------------------------------------------------------------------------


def python3_saml_login_url(*, sha1: bool = False, relay_state: str = "https://sp.example.test/app?x=1 2") -> str:
    """The signed redirect a python3-saml SP sends the browser to."""
    security = {"authnRequestsSigned": True}
    if sha1:
        security |= {"signatureAlgorithm": C.RSA_SHA1, "digestAlgorithm": C.SHA1, "rejectDeprecatedAlgorithm": False}
    settings = python3_saml_settings(security=security)
    settings["idp"] = {
        "entityId": "https://idp.example.test/saml/metadata",
        "singleSignOnService": {"url": "https://idp.example.test/saml/sso",
                                "binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"},
        "x509cert": generate_key_pair("idp")[1].decode(),
    }
    request = {"https": "on", "http_host": "sp.example.test", "script_name": "/login", "get_data": {},
               "post_data": {}}
    url: str = OneLogin_Saml2_Auth(request, settings).login(return_to=relay_state)
    return url


def test_a_python3_saml_redirect_signature_verifies() -> None:
    query = urlsplit(python3_saml_login_url()).query.encode()
    assert b"RelayState=" in query
    assert signing.verify_redirect(query, [sp_cert()], allow_sha1=False) is True


def test_a_tampered_redirect_is_refused() -> None:
    query = urlsplit(python3_saml_login_url()).query
    tampered = query.replace("RelayState=", "RelayState=https%3A%2F%2Fevil.example%2F")
    with pytest.raises(SignatureInvalid):
        signing.verify_redirect(tampered.encode(), [sp_cert()], allow_sha1=False)
    dropped = "&".join(p for p in query.split("&") if not p.startswith("RelayState="))
    with pytest.raises(SignatureInvalid):
        signing.verify_redirect(dropped.encode(), [sp_cert()], allow_sha1=False)


def test_a_sha1_redirect_signature_needs_allow_sha1() -> None:
    query = urlsplit(python3_saml_login_url(sha1=True)).query.encode()
    with pytest.raises(SignatureInvalid, match="SHA-1"):
        signing.verify_redirect(query, [sp_cert()], allow_sha1=False)
    assert signing.verify_redirect(query, [sp_cert()], allow_sha1=True) is True


def test_an_unsigned_redirect_is_reported_unsigned() -> None:
    assert signing.verify_redirect(b"SAMLRequest=abc&RelayState=x", [sp_cert()], allow_sha1=False) is False


def test_python3_saml_accepts_our_redirect_signature(idp_key: SigningKey) -> None:
    query = f"SAMLResponse={quote('fZJNb8IwDIb/SpU7NIaOgw=', safe='')}&RelayState={quote('/back here', safe='')}"
    signed = signing.sign_redirect(query, idp_key)
    params = parse_qs(signed)
    assert params["SigAlg"] == [signing.RSA_SHA256]
    signed_part = signed.rsplit("&Signature=", 1)[0]
    import base64

    assert OneLogin_Saml2_Utils.validate_binary_sign(
        signed_part, base64.b64decode(params["Signature"][0]), idp_key.cert_pem.decode(), C.RSA_SHA256)
    # And our own verifier agrees, through the same code path SPs' redirects take.
    assert signing.verify_redirect(signed.encode(), [idp_key.cert_b64], allow_sha1=False) is True


# --- encryption --------------------------------------------------------------------------------------


def encrypted_response(idp_key: SigningKey) -> bytes:
    root = xmlsafe.parse(RESPONSE)
    signing.sign(root.find(f"{{{SAML}}}Assertion"), idp_key)
    signing.encrypt_assertion(root, sp_cert())
    signing.sign(root, idp_key)
    return etree.tostring(root)


def test_the_encrypted_assertion_hides_the_subject_and_uses_aes_gcm(idp_key: SigningKey) -> None:
    xml = encrypted_response(idp_key)
    assert b"alice@example.test" not in xml
    root = etree.fromstring(xml)
    assert root.find(f"{{{SAML}}}Assertion") is None
    enc = root.find(f"{{{SAML}}}EncryptedAssertion/{{http://www.w3.org/2001/04/xmlenc#}}EncryptedData")
    methods = [m.get("Algorithm") for m in enc.iter("{http://www.w3.org/2001/04/xmlenc#}EncryptionMethod")]
    assert methods == ["http://www.w3.org/2009/xmlenc11#aes256-gcm",
                       "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p"]


def test_python3_saml_decrypts_our_assertion(idp_key: SigningKey) -> None:
    root = etree.fromstring(encrypted_response(idp_key))
    enc = root.find(f"{{{SAML}}}EncryptedAssertion/{{http://www.w3.org/2001/04/xmlenc#}}EncryptedData")
    assertion = OneLogin_Saml2_Utils.decrypt_element(enc, sp_keys()[0].decode())
    assert assertion.findtext(f"{{{SAML}}}Subject/{{{SAML}}}NameID") == "alice@example.test"
    # The decrypted assertion still carries our verifiable signature.
    assert OneLogin_Saml2_Utils.validate_sign(etree.tostring(assertion), idp_key.cert_pem.decode(),
                                              xpath="/saml:Assertion/ds:Signature")


def test_pysaml2_decrypts_our_assertion_with_the_xmlsec1_program(idp_key: SigningKey, tmp_path: Path) -> None:
    key_file = tmp_path / "sp.key"
    key_file.write_bytes(sp_keys()[0])
    # The call pysaml2's SP makes for an EncryptedAssertion (it runs `xmlsec1 --decrypt`).
    decrypted = CryptoBackendXmlSec1(XMLSEC1).decrypt(encrypted_response(idp_key).decode(), str(key_file))
    root = etree.fromstring(decrypted.encode() if isinstance(decrypted, str) else decrypted)
    nameid = root.findtext(f".//{{{SAML}}}Assertion/{{{SAML}}}Subject/{{{SAML}}}NameID")
    assert nameid == "alice@example.test"
