"""Untrusted XML: DTDs, entities, oversize and malformed input are refused quickly and readably."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from idp import create_app
from idp.config import Settings
from idp.errors import BadRequest
from idp.saml import xmlsafe
from idp.saml.xmlsafe import XmlRefused

XXE = (b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
       b'<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_1">&xxe;</samlp:AuthnRequest>')
EXTERNAL_DTD = b'<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd"><r/>'
PARAMETER_ENTITY = b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x"> %p;]><r/>'


def billion_laughs() -> bytes:
    entities = [b'<!ENTITY lol0 "lol">']
    entities += [b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1)) * 10) for i in range(1, 10)]
    return b'<?xml version="1.0"?><!DOCTYPE lolz [' + b"".join(entities) + b"]><lolz>&lol9;</lolz>"


def refused(data: bytes, **kwargs: int) -> XmlRefused:
    started = time.perf_counter()
    with pytest.raises(XmlRefused) as info:
        xmlsafe.parse(data, **kwargs)
    assert time.perf_counter() - started < 1.0
    return info.value


def test_a_saml_message_parses() -> None:
    root = xmlsafe.parse(b'<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_a"/>')
    assert root.tag == "{urn:oasis:names:tc:SAML:2.0:protocol}LogoutRequest"
    assert root.get("ID") == "_a"


@pytest.mark.parametrize("payload", [XXE, billion_laughs(), EXTERNAL_DTD, PARAMETER_ENTITY],
                         ids=["xxe", "billion-laughs", "external-dtd", "parameter-entity"])
def test_doctypes_are_refused_quickly_without_expansion(payload: bytes) -> None:
    exc = refused(payload)
    assert exc.message == "XML with a DOCTYPE (DTD) is not accepted"
    assert exc.status == 400
    assert isinstance(exc, BadRequest)
    assert "root:" not in exc.message  # nothing of /etc/passwd leaks


def test_a_doctype_hidden_by_a_declared_utf7_encoding_is_still_refused() -> None:
    # The byte scan cannot see "+ADw-!DOCTYPE"; the parsed document's DTD is caught afterwards.
    payload = (b'<?xml version="1.0" encoding="UTF-7"?>+ADw-!DOCTYPE a +AFs-+ADw-!ENTITY x SYSTEM '
               b'+ACI-file:///etc/passwd+ACI-+AD4-+AF0-+AD4-+ADw-a+AD4-+ACY-x+ADs-+ADw-/a+AD4-')
    exc = refused(payload)
    assert "DOCTYPE" in exc.message or "not well-formed" in exc.message


def test_utf16_is_refused() -> None:
    assert "UTF-8" in refused("<r/>".encode("utf-16")).message


def test_malformed_xml_gets_a_short_readable_message() -> None:
    exc = refused(b"<AuthnRequest>\n<unclosed></AuthnRequest>")
    assert exc.message.startswith("XML is not well-formed: ")
    assert "line 2" in exc.message
    assert len(exc.message) < 200
    assert refused(b"").message.startswith("XML is not well-formed")
    assert refused(b"not xml at all").message.startswith("XML is not well-formed")


def test_oversize_input_is_refused_before_parsing() -> None:
    exc = refused(b"<r>" + b"a" * 5000 + b"</r>", max_bytes=4096)
    assert exc.message == "XML is too large (5007 bytes; the limit is 4096)"


def test_the_bound_comes_from_the_settings(make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(saml_max_message_bytes=2048))
    with app.app_context():
        assert xmlsafe.parse(b"<r>" + b"a" * 1000 + b"</r>") is not None
        assert "limit is 2048" in refused(b"<r>" + b"a" * 3000 + b"</r>").message


def test_comments_cannot_truncate_a_signed_value() -> None:
    # A comment inside a NameID must not make the text read as the part before it.
    root = xmlsafe.parse(b"<a><NameID>admin@corp.example<!-- -->.evil.example</NameID></a>")
    assert root[0].text == "admin@corp.example.evil.example"


def test_a_processing_instruction_cannot_truncate_a_value_either() -> None:
    # .text stops at a processing instruction, and the canonical form a signature covers does not.
    with pytest.raises(xmlsafe.XmlRefused, match="processing instruction"):
        xmlsafe.parse(b"<a><Issuer>https://sp.example.test/metadata<?x?>.evil.example</Issuer></a>")
    assert xmlsafe.parse(b'<?xml version="1.0"?><a>b</a>').text == "b"  # the XML declaration is none
