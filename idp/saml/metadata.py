"""SAML metadata: validating and reading a service provider's, and publishing our own.

``parse_sp_metadata`` is the one gate SP metadata passes before it is stored or used: size-bounded, parsed
safely, schema-valid, and checked for what the flows rely on (an entityID, an HTTP-POST ACS with an absolute
http(s) URL, parsable certificates). Every refusal says what is wrong. ``idp_metadata_xml`` renders the IdP's
metadata for the current key ring, built once per ring.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree

from idp.errors import BadRequest
from idp.runtime import keystore, settings
from idp.saml.xmlsafe import XmlRefused
from idp.saml.xmlsafe import parse as parse_xml

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
MDUI = "urn:oasis:names:tc:SAML:metadata:ui"
PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"

BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"

NAMEID_EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
NAMEID_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
NAMEID_TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
NAMEID_UNSPECIFIED = "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"
# The NameID formats we issue, by their short names (CLI) and in the order metadata lists them.
NAMEID_FORMATS = {
    "email": NAMEID_EMAIL,
    "persistent": NAMEID_PERSISTENT,
    "transient": NAMEID_TRANSIENT,
    "unspecified": NAMEID_UNSPECIFIED,
}

METADATA_MAX_BYTES = 1024 * 1024
SCHEMA_FILE = Path(__file__).parent / "schemas" / "saml-schema-metadata-2.0.xsd"


class MetadataError(BadRequest):
    """SP metadata that we refuse, with a message saying what is wrong."""


@dataclass(frozen=True)
class Endpoint:
    binding: str
    location: str
    index: int | None
    is_default: bool
    # SingleLogoutService may name a separate URL for LogoutResponses.
    response_location: str | None = None
    # isDefault="false" said: the default only when every endpoint says so (SAML Metadata 2.2.3).
    not_default: bool = False


@dataclass(frozen=True)
class SpMetadata:
    entity_id: str
    # Only endpoints with bindings we speak: ACS with HTTP-POST; SLO with HTTP-Redirect or HTTP-POST.
    acs: tuple[Endpoint, ...]
    slo: tuple[Endpoint, ...]
    # Base64 DER, whitespace removed. A KeyDescriptor without `use` counts for both.
    signing_certs: tuple[str, ...]
    encryption_certs: tuple[str, ...]
    authn_requests_signed: bool
    nameid_formats: tuple[str, ...]
    # mdui:DisplayName or OrganizationDisplayName, when the metadata has one.
    display_name: str | None = None
    # The earliest validUntil of the EntityDescriptor and its SPSSODescriptor: past it, the metadata must not be
    # used (SAML Metadata 2.3.2, 4.3).
    valid_until: datetime | None = None
    # The algorithms its encryption keys' md:EncryptionMethod elements list (SAML Metadata 2.4.1.1), in order.
    encryption_methods: tuple[str, ...] = ()

    def expired(self, now: datetime) -> bool:
        return self.valid_until is not None and self.valid_until <= now


# --- SP metadata -------------------------------------------------------------------------------------

_schema_lock = threading.Lock()


@lru_cache(maxsize=1)
def _schema() -> etree.XMLSchema:
    """Loaded once per process; its imports (xmldsig, xenc, assertion, xml.xsd) come from the same folder."""
    parser = etree.XMLParser(no_network=True, resolve_entities=False)
    return etree.XMLSchema(etree.parse(str(SCHEMA_FILE), parser))


_NETLOC = re.compile(r"[A-Za-z0-9._~%:@\[\]-]+")


def _absolute_http(url: str | None) -> bool:
    if not url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    # The host is a form's action and a redirect's target: nothing but host characters may pass.
    return (parts.scheme in ("http", "https") and _NETLOC.fullmatch(parts.netloc) is not None
            and not any(c.isspace() for c in url))


def _endpoints(descriptor: etree._Element, tag: str, bindings: tuple[str, ...], label: str) -> tuple[Endpoint, ...]:
    found: list[Endpoint] = []
    seen_index: set[int] = set()
    for el in descriptor.iterfind(f"{{{MD}}}{tag}"):
        binding = el.get("Binding", "")
        if binding not in bindings:
            continue
        location = el.get("Location", "")
        if not _absolute_http(location):
            raise MetadataError(f"{label} Location {location!r} is not an absolute http(s) URL")
        response_location = el.get("ResponseLocation")
        if response_location is not None and not _absolute_http(response_location):
            raise MetadataError(f"{label} ResponseLocation {response_location!r} is not an absolute http(s) URL")
        index: int | None = None
        raw_index = el.get("index")
        if raw_index is not None:
            index = int(raw_index)  # the schema has checked it is an unsignedShort
            if index in seen_index:
                raise MetadataError(f"{label} index {index} is used more than once")
            seen_index.add(index)
        found.append(Endpoint(
            binding=binding, location=location, index=index,
            is_default=el.get("isDefault") in ("true", "1"), response_location=response_location,
            not_default=el.get("isDefault") in ("false", "0"),
        ))
    return tuple(found)


def _encryption_methods(descriptor: etree._Element) -> tuple[str, ...]:
    found = [(em.get("Algorithm") or "").strip()
             for kd in descriptor.iterfind(f"{{{MD}}}KeyDescriptor") if kd.get("use") in (None, "encryption")
             for em in kd.iterfind(f"{{{MD}}}EncryptionMethod")]
    return tuple(dict.fromkeys(a for a in found if a))


def _certificates(descriptor: etree._Element) -> tuple[tuple[str, ...], tuple[str, ...]]:
    signing: list[str] = []
    encryption: list[str] = []
    number = 0
    for kd in descriptor.iterfind(f"{{{MD}}}KeyDescriptor"):
        use = kd.get("use")
        for cert_el in kd.iterfind(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate"):
            number += 1
            cert_b64 = "".join((cert_el.text or "").split())
            try:
                cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64, validate=True))
            except (ValueError, binascii.Error):
                raise MetadataError(
                    f"certificate {number} in KeyDescriptor is not a valid X.509 certificate"
                ) from None
            if use in (None, "signing") and cert_b64 not in signing:
                signing.append(cert_b64)
            # Assertions are encrypted to an SP by wrapping the key with RSA-OAEP: another key type cannot.
            rsa_key = isinstance(cert.public_key(), rsa.RSAPublicKey)
            if use in (None, "encryption") and rsa_key and cert_b64 not in encryption:
                encryption.append(cert_b64)
    return tuple(signing), tuple(encryption)


def _display_name(root: etree._Element, descriptor: etree._Element) -> str | None:
    candidates = descriptor.findall(f"{{{MD}}}Extensions/{{{MDUI}}}UIInfo/{{{MDUI}}}DisplayName")
    candidates += root.findall(f"{{{MD}}}Organization/{{{MD}}}OrganizationDisplayName")
    # Prefer English when several languages are given; the lang attribute is xml:lang.
    candidates.sort(key=lambda el: el.get("{http://www.w3.org/XML/1998/namespace}lang") != "en")
    for el in candidates:
        text = " ".join((el.text or "").split())
        if text:
            return text[:255]
    return None


def parse_sp_metadata(xml: bytes) -> SpMetadata:
    """Validate and read one SP's metadata (an md:EntityDescriptor), or raise :class:`MetadataError`."""
    if len(xml) > METADATA_MAX_BYTES:
        raise MetadataError(f"metadata is too large ({len(xml)} bytes; the limit is {METADATA_MAX_BYTES})")
    try:
        # Processing instructions are harmless here (nothing in metadata is checked against a signature), and
        # metadata stored before they were refused in messages must still be read.
        root = parse_xml(xml, max_bytes=METADATA_MAX_BYTES, processing_instructions=True)
    except XmlRefused as exc:
        raise MetadataError(f"metadata is not usable XML: {exc.message}") from None
    if not isinstance(root.tag, str) or root.tag != f"{{{MD}}}EntityDescriptor":
        found = etree.QName(root).localname if isinstance(root.tag, str) else "?"
        raise MetadataError(f"metadata root must be an md:EntityDescriptor, not {found}")
    # A schema's error log belongs to the schema object, so validate one at a time; and build it under the lock
    # too: libxml2 sets up its built-in schema types on the first build in a process, and two threads doing that
    # at once fail ("the given type is not a built-in type"), a 500 for a fresh worker's first SSO requests.
    with _schema_lock:
        schema = _schema()
        valid = schema.validate(root)
        error = schema.error_log[0] if not valid and schema.error_log else None
    if not valid:
        detail = f"{error.message}, line {error.line}" if error is not None else "unknown error"
        raise MetadataError(f"metadata is not valid against the SAML metadata schema: {detail}")
    entity_id = (root.get("entityID") or "").strip()
    if not entity_id:
        raise MetadataError("metadata has no entityID")
    descriptor = next(
        (d for d in root.iterfind(f"{{{MD}}}SPSSODescriptor")
         if PROTOCOL in (d.get("protocolSupportEnumeration") or "").split()),
        None,
    )
    if descriptor is None:
        raise MetadataError("metadata has no SPSSODescriptor for the SAML 2.0 protocol")
    acs = _endpoints(descriptor, "AssertionConsumerService", (BINDING_POST,), "AssertionConsumerService")
    if not acs:
        raise MetadataError("metadata has no AssertionConsumerService with the HTTP-POST binding")
    slo = _endpoints(descriptor, "SingleLogoutService", (BINDING_REDIRECT, BINDING_POST), "SingleLogoutService")
    signing, encryption = _certificates(descriptor)
    formats = tuple(" ".join((el.text or "").split()) for el in descriptor.iterfind(f"{{{MD}}}NameIDFormat"))
    ends = [e for e in (_instant(v) for v in (root.get("validUntil"), descriptor.get("validUntil"))) if e is not None]
    return SpMetadata(
        entity_id=entity_id,
        acs=acs,
        slo=slo,
        signing_certs=signing,
        encryption_certs=encryption,
        authn_requests_signed=descriptor.get("AuthnRequestsSigned") in ("true", "1"),
        nameid_formats=tuple(f for f in formats if f),
        display_name=_display_name(root, descriptor),
        valid_until=min(ends) if ends else None,
        encryption_methods=_encryption_methods(descriptor),
    )


def _instant(value: str | None) -> datetime | None:
    """An xs:dateTime (the schema has checked its form); one without a zone is taken as UTC. A form the schema
    allows and Python does not read (a year beyond 9999, 24:00:00) counts as none: stored metadata is read at
    every sign-in, and must not stop them for that."""
    if value is None:
        return None
    try:
        found = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return found if found.tzinfo is not None else found.replace(tzinfo=UTC)


# --- our own metadata --------------------------------------------------------------------------------


def idp_entity_id() -> str:
    return settings().base + "/saml/metadata"


def idp_metadata_xml() -> bytes:
    """The IdP's metadata for the current key ring: every published key, during a rotation both."""
    base = settings().base
    return _render_idp_metadata(base, tuple(k.cert_b64 for k in keystore().ring().published))


@lru_cache(maxsize=8)
def _render_idp_metadata(base: str, certs_b64: tuple[str, ...]) -> bytes:
    E = etree.Element
    sub = etree.SubElement
    root = E(f"{{{MD}}}EntityDescriptor", nsmap={"md": MD, "ds": DS}, entityID=base + "/saml/metadata")
    idp = sub(root, f"{{{MD}}}IDPSSODescriptor", WantAuthnRequestsSigned="false",
              protocolSupportEnumeration=PROTOCOL)
    for cert in certs_b64:
        kd = sub(idp, f"{{{MD}}}KeyDescriptor", use="signing")
        sub(sub(sub(kd, f"{{{DS}}}KeyInfo"), f"{{{DS}}}X509Data"), f"{{{DS}}}X509Certificate").text = cert
    # Schema order: SingleLogoutService, NameIDFormat, then SingleSignOnService.
    for binding in (BINDING_REDIRECT, BINDING_POST):
        sub(idp, f"{{{MD}}}SingleLogoutService", Binding=binding, Location=base + "/saml/slo")
    for fmt in NAMEID_FORMATS.values():
        sub(idp, f"{{{MD}}}NameIDFormat").text = fmt
    for binding in (BINDING_REDIRECT, BINDING_POST):
        sub(idp, f"{{{MD}}}SingleSignOnService", Binding=binding, Location=base + "/saml/sso")
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return out
