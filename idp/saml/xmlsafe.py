"""Safe parsing of untrusted XML (SAML messages, SP metadata): the only place that calls lxml's parser on input.

Refused: anything larger than the configured bound, any DOCTYPE (so no DTD, no entity declarations, hence no
XXE and no entity expansion), and anything not well-formed. Comments are dropped while parsing: exclusive
canonicalisation without comments ignores them for signatures, and keeping them would let a comment split a
signed NameID's text (the 2018 "comment truncation" attacks on SAML libraries).
"""

from __future__ import annotations

import re

from flask import current_app, has_app_context
from lxml import etree

from idp.errors import BadRequest

# Used when no app is running (unit tests, tools); the app's bound is settings.saml_max_message_bytes.
DEFAULT_MAX_BYTES = 256 * 1024

# A DOCTYPE in any ASCII-compatible encoding shows up literally; caught before libxml2 sees it at all.
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)


class XmlRefused(BadRequest):
    """The XML was not parsed: too large, has a DTD, or is not well-formed."""


def _parser() -> etree.XMLParser:
    # A parser per call: lxml parsers are not safe to share between threads.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        collect_ids=True,
    )


def max_message_bytes() -> int:
    if has_app_context():
        bound: int = current_app.extensions["idp.settings"].saml_max_message_bytes
        return bound
    return DEFAULT_MAX_BYTES


def parse(data: bytes, max_bytes: int | None = None, *, processing_instructions: bool = False) -> etree._Element:
    """Parse ``data`` into its root element, or raise :class:`XmlRefused` with a short reason. A processing
    instruction inside the root is refused unless ``processing_instructions`` (SP metadata)."""
    limit = max_message_bytes() if max_bytes is None else max_bytes
    if not isinstance(data, bytes | bytearray):
        raise XmlRefused("XML must be given as bytes")
    if len(data) > limit:
        raise XmlRefused(f"XML is too large ({len(data)} bytes; the limit is {limit})")
    # UTF-16/32 would hide a DOCTYPE from the byte scan below; SAML peers send UTF-8 in practice.
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise XmlRefused("XML must be UTF-8 encoded")
    if _DOCTYPE.search(data):
        raise XmlRefused("XML with a DOCTYPE (DTD) is not accepted")
    try:
        root = etree.fromstring(bytes(data), _parser())
    except etree.XMLSyntaxError as exc:
        # lxml's message already ends with ", line N, column M".
        raise XmlRefused(f"XML is not well-formed: {exc.msg}") from None
    except (ValueError, TypeError) as exc:  # lxml raises these for some encodings and odd inputs
        raise XmlRefused(f"XML could not be read: {exc}") from None
    if root is None:
        raise XmlRefused("XML document is empty")
    docinfo = root.getroottree().docinfo
    # Second line of defence for encodings the byte scan cannot see (e.g. a declared UTF-7).
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlRefused("XML with a DOCTYPE (DTD) is not accepted")
    # A processing instruction ends an element's .text where it stands, while the signature's canonical form
    # covers what follows it: <Issuer>sp<?x?>.evil</Issuer> would read as "sp" (the comment attack of 2018).
    # SAML has no use for one; unlike a comment, removing it would change what was signed.
    if not processing_instructions and next(root.iter(etree.PI), None) is not None:
        raise XmlRefused("XML with a processing instruction is not accepted")
    return root


# What XML 1.0 cannot carry, even as a character reference: C0 controls but tab, newline and CR; U+FFFE and U+FFFF;
# lone surrogates. lxml refuses to write one, so a value holding one cannot go into a SAML message.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def fits_xml(text: str) -> bool:
    """Whether ``text`` can be written into an XML document (a SAML attribute's name or value)."""
    return _NOT_XML.search(text) is None


def xml_text(text: str) -> str:
    """``text`` without the characters XML cannot carry: for values the admin could not check first (a
    directory's attribute), which would otherwise fail every assertion that releases them."""
    return _NOT_XML.sub("", text)

