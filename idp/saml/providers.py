"""Registered SAML service providers: look-up for the flows, and the add/update/remove/refresh services.

The flows call :func:`get` and :func:`metadata_of` (parsed metadata cached per SP version). The CLI and the
admin API and UI call :func:`add`, :func:`update`, :func:`remove` and :func:`refresh`, which validate
everything first, store nothing on a refusal, and record one audit event per change.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import requests
from cryptography import x509
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from idp import audit, clock
from idp.access.claims import ROLES, rule_text, validate_rules
from idp.errors import BadRequest, Conflict, NotFound
from idp.extensions import db
from idp.files import read_bounded
from idp.key_strength import weakness
from idp.runtime import RequestRows
from idp.saml.metadata import (
    METADATA_MAX_BYTES,
    NAMEID_FORMATS,
    NAMEID_UNSPECIFIED,
    MetadataError,
    SpMetadata,
    parse_sp_metadata,
)
from idp.saml.xmlsafe import fits_xml
from idp.store import ServiceProvider
from idp.text import check_line
from idp.urls import split_url

# The attributes we can release, as the claims layer names them.
ATTRIBUTES = ("username", "email", "given_name", "family_name", "display_name", "groups")
NAME_FORMATS = {
    "basic": "urn:oasis:names:tc:SAML:2.0:attrname-format:basic",
    "uri": "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
    "unspecified": "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified",
}
FETCH_TIMEOUT_SECONDS = 10


def default_attribute_map() -> list[dict[str, str]]:
    return [{"attribute": a, "name": a, "name_format": NAME_FORMATS["basic"]} for a in ATTRIBUTES]


@dataclass(frozen=True)
class SpOptions:
    """Per-SP settings given by an admin; ``None`` means "not given" (default on add, unchanged on update)."""

    name: str | None = None
    nameid_format: str | None = None
    sign_response: bool | None = None
    sign_assertion: bool | None = None
    encrypt_assertion: bool | None = None
    require_signed_requests: bool | None = None
    allow_sha1: bool | None = None
    # Replaces the whole release map when given: the SP gets exactly these attributes.
    attribute_map: tuple[dict[str, Any], ...] | None = None
    # Every signed-in user may use the SP; otherwise only those it is assigned to (idp.access.decide).
    open_to_all: bool | None = None


# --- look-up for the flows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredSp:
    """A registered SP as the flows read it: its row, read with one Core statement. Loading the ORM object cost
    a tenth of an SSO response's CPU; the flows only read it (changes go through :func:`get_or_404`'s ORM row)."""

    id: int
    entity_id: str
    name: str
    metadata_xml: str
    nameid_format: str
    sign_response: bool
    sign_assertion: bool
    encrypt_assertion: bool
    require_signed_requests: bool
    allow_sha1: bool
    attribute_map: list[dict[str, Any]]
    open_to_all: bool
    updated_at: datetime


_SPS = ServiceProvider.__table__
_ROWS = RequestRows("idp.service_providers",
                    select(*(_SPS.c[f.name] for f in fields(RegisteredSp))).where(_SPS.c.entity_id == bindparam("key")),
                    RegisteredSp)


def get(entity_id: str) -> RegisteredSp | None:
    """The registered SP, looked up once per request (a sign-in asks for it at every step)."""
    return _ROWS.get(entity_id)


_forget = _ROWS.forget


def get_or_404(entity_id: str) -> ServiceProvider:
    """The SP's ORM row, for the services below and the admin views that change it."""
    sp: ServiceProvider | None = db.session.scalar(
        select(ServiceProvider).where(ServiceProvider.entity_id == entity_id))
    if sp is None:
        raise NotFound(f"no service provider '{entity_id}' is registered")
    return sp


def get_by_id_or_404(sp_id: int) -> ServiceProvider:
    """The SP by its row id, as the admin API and UI name SPs (an entity ID is no good in a URL path)."""
    # Beyond what the id column holds is no SP, not an overflow in the driver (SQLite's is a 500).
    sp: ServiceProvider | None = db.session.get(ServiceProvider, sp_id) if 0 < sp_id < 2**31 else None
    if sp is None:
        raise NotFound(f"no service provider {sp_id} is registered")
    return sp


def all_providers() -> list[ServiceProvider]:
    return list(db.session.scalars(select(ServiceProvider).order_by(ServiceProvider.entity_id)))


_cache: dict[tuple[int, Any, str], SpMetadata] = {}
_cache_lock = threading.Lock()
_CACHE_MAX = 512


def metadata_of(sp: ServiceProvider | RegisteredSp) -> SpMetadata:
    """The SP's parsed metadata, parsed once per stored version.

    The key includes the stored XML itself (cheap to hash) because updated_at has whole-second resolution and
    two changes can fall in the same second.
    """
    key = (sp.id, sp.updated_at, sp.metadata_xml)
    found = _cache.get(key)
    if found is None:
        found = parse_sp_metadata(sp.metadata_xml.encode("utf-8"))
        with _cache_lock:
            if len(_cache) >= _CACHE_MAX:
                _cache.clear()
            _cache[key] = found
    return found


# --- option parsing (shared by the CLI and the admin API and UI) ---------------------------------------


def resolve_nameid_format(value: str) -> str:
    """``email``/``persistent``/``transient``/``unspecified`` or the URN of one of them."""
    if value in NAMEID_FORMATS:
        return NAMEID_FORMATS[value]
    if value in NAMEID_FORMATS.values():
        return value
    raise BadRequest(
        f"NameID format {value!r} is not supported; use one of {', '.join(NAMEID_FORMATS)} or its URN",
        field="nameid_format",
    )


def parse_attribute_rule(spec: str) -> dict[str, str]:
    """``OURS=NAME[;FORMAT]`` (FORMAT basic|uri|unspecified, default basic) into a release-map entry."""
    ours, sep, rest = spec.partition("=")
    if not sep:
        raise BadRequest(f"attribute {spec!r} must look like OURS=NAME[;FORMAT]", field="attribute_map")
    name, _, fmt = rest.partition(";")
    return attribute_rule(ours, name, fmt)


def attribute_rule(ours: str, name: str, name_format: str | None = None,
                   roles: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """One checked release-map entry; ``name_format`` short (basic|uri|unspecified), a URN, or empty (basic).
    A ``roles`` entry carries its group-to-role map (:data:`idp.access.claims.ROLES`). Its refusals are about
    :attr:`SpOptions.attribute_map`."""
    ours, name, fmt = ours.strip(), name.strip(), (name_format or "").strip() or "basic"
    if ours == ROLES:
        problems = validate_rules([{"attribute": ours, "name": name or "-", "roles": roles}])
        if problems:
            raise BadRequest(f"attribute {name!r}: " + "; ".join(p.partition(": ")[2] for p in problems),
                             field="attribute_map")
    elif ours not in ATTRIBUTES:
        raise BadRequest(f"unknown attribute {ours!r}; ours are {', '.join([*ATTRIBUTES, ROLES])}",
                         field="attribute_map")
    if not name or len(name) > 1024:
        raise BadRequest(f"attribute {ours!r} needs a SAML name (at most 1024 characters)", field="attribute_map")
    if not fits_xml(name):
        raise BadRequest(f"attribute {ours!r}: its SAML name may not contain a control character",
                         field="attribute_map")
    if fmt in NAME_FORMATS:
        fmt = NAME_FORMATS[fmt]
    elif fmt not in NAME_FORMATS.values():
        raise BadRequest(f"attribute name format {fmt!r} is not one of {', '.join(NAME_FORMATS)}",
                         field="attribute_map")
    rule: dict[str, Any] = {"attribute": ours, "name": name, "name_format": fmt}
    if ours == ROLES:
        rule["roles"] = {g: list(rs) for g, rs in (roles or {}).items()}
    return rule


# --- reading metadata from a file or URL --------------------------------------------------------------


def fetch_metadata(source: str) -> bytes:
    """The bytes of a metadata file or http(s) URL, bounded in size; MetadataError says why not."""
    if "://" in source:
        return fetch_url(source)
    if not source.strip():
        raise MetadataError("no metadata file named")
    try:
        data = read_bounded(Path(source).expanduser(), METADATA_MAX_BYTES)
    except OSError as exc:
        raise MetadataError(f"cannot read {source}: {exc.strerror or exc}") from None
    if data is None:
        raise MetadataError(f"{source} is larger than {METADATA_MAX_BYTES} bytes")
    return data


# Never fetched from, whatever a URL's host resolves to: link-local addresses (169.254.169.254 is the metadata
# service of most clouds, handing out credentials), AWS's IPv6 metadata service, and "unspecified" ones (0.0.0.0
# and :: reach this host).
_NEVER_FETCHED = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"),
                  ipaddress.ip_network("0.0.0.0/8"), ipaddress.ip_network("::/128"),
                  ipaddress.ip_network("fd00:ec2::254/128"))


def fetch_url(url: str) -> bytes:
    """The bytes of an http(s) URL only (never a file: what the admin API and UI accept), bounded in size.

    An admin gives the URL, but the bridge fetches it from inside the network (server-side request forgery), so:
    no redirect is followed (a 3xx is refused, naming where it points: give that URL if it is right); a URL with
    a user name or password is refused (it would be stored and audited as the SP's metadata source); and a host
    any of whose addresses is link-local (169.254.0.0/16, fe80::/10: cloud metadata services), AWS's IPv6
    metadata address or unspecified (0.0.0.0, ::) is refused. Loopback and private addresses are allowed on
    purpose: SPs on an intranet are common, and metadata is often served next to the bridge. The host is
    resolved once for the check and again by the connection, so a DNS answer that changes in between
    (rebinding) is not caught; the refused addresses are the ones a plain URL must never reach.
    """
    parts = split_url(url)
    if parts is None:
        raise MetadataError(f"cannot fetch {url}: its host is not a valid address or its port not a number from 0 "
                            "to 65535", field="url")
    if parts.scheme.lower() not in ("http", "https"):
        raise MetadataError(f"cannot fetch {url}: only http and https URLs are supported", field="url")
    if "@" in parts.netloc:
        # Not echoed: the URL carries a secret.
        raise MetadataError("a metadata URL may not contain a user name or password", field="url")
    host = unquote(parts.hostname or "")  # an IPv6 zone is written %25: fe80::1%25eth0
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    if not host:
        raise MetadataError(f"cannot fetch {url}: it names no host", field="url")
    _check_fetchable(url, host, port)
    try:
        with requests.get(url, timeout=FETCH_TIMEOUT_SECONDS, stream=True, allow_redirects=False) as resp:
            if resp.is_redirect:
                raise MetadataError(f"fetching {url} was redirected to {resp.headers.get('Location')!r}; "
                                    "redirects are not followed: give the URL the metadata is at", field="url")
            if resp.status_code != 200:
                raise MetadataError(f"fetching {url} returned HTTP {resp.status_code}", field="url")
            data = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                data += chunk
                if len(data) > METADATA_MAX_BYTES:
                    raise MetadataError(f"{url} sent more than {METADATA_MAX_BYTES} bytes", field="url")
            return bytes(data)
    except requests.RequestException as exc:
        raise MetadataError(f"cannot fetch {url}: {type(exc).__name__}", field="url") from None


def _check_fetchable(url: str, host: str, port: int) -> None:
    """MetadataError unless every address ``host`` resolves to may be fetched from (see :func:`fetch_url`)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # gaierror is an OSError; an over-long label an UnicodeError
        raise MetadataError(f"cannot fetch {url}: its host {host!r} does not resolve", field="url") from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in _NEVER_FETCHED):
            raise MetadataError(f"cannot fetch {url}: {host} resolves to {address}, a link-local or "
                                "unspecified address that metadata is never fetched from", field="url")


def source_of(source: str) -> str:
    """What to record for `refresh`: URLs as given, files as absolute paths."""
    return source if "://" in source else str(Path(source).expanduser().resolve())


# --- services -----------------------------------------------------------------------------------------


_SETTING_FIELDS = tuple(f.name for f in fields(SpOptions))


def _settings_of(sp: ServiceProvider) -> dict[str, Any]:
    return {name: getattr(sp, name) for name in _SETTING_FIELDS}


def _check_consistent(values: dict[str, Any], meta: SpMetadata) -> None:
    if not values["sign_response"] and not values["sign_assertion"]:
        # SAML Profiles 4.1.3.5: an assertion carried by the browser is signed, by itself or by its Response;
        # an unsigned one is a bearer token anybody could write.
        raise BadRequest("the Response or the Assertion must be signed (or both)", field="sign_assertion")
    if values["encrypt_assertion"] and not meta.encryption_certs:
        raise BadRequest(
            f"cannot encrypt assertions for '{meta.entity_id}': its metadata has no encryption certificate "
            "(an RSA one: the assertion's key is wrapped with RSA-OAEP)",
            field="encrypt_assertion",
        )
    if values["require_signed_requests"] and not meta.signing_certs:
        raise BadRequest(
            f"cannot require signed requests from '{meta.entity_id}': its metadata has no signing certificate",
            field="require_signed_requests",
        )
    name = values["name"]
    if not isinstance(name, str) or not name.strip() or len(name) > 255:
        raise BadRequest("the name must be 1 to 255 characters", field="name")
    check_line(name, "the name", "name")


def _given(options: SpOptions) -> dict[str, Any]:
    values = {k: v for k, v in ((n, getattr(options, n)) for n in _SETTING_FIELDS) if v is not None}
    if "nameid_format" in values:
        values["nameid_format"] = resolve_nameid_format(values["nameid_format"])
    if "attribute_map" in values:
        values["attribute_map"] = [attribute_rule(r.get("attribute", ""), r.get("name", ""), r.get("name_format"),
                                                  r.get("roles")) for r in values["attribute_map"]]
        names = [r["name"] for r in values["attribute_map"]]
        twice = [n for n in dict.fromkeys(names) if names.count(n) > 1]
        if twice:  # the SP keeps one of the two values, whichever it reads last
            raise BadRequest(f"the name {twice[0]!r} is given twice", field="attribute_map")
    return values


def _default_nameid(meta: SpMetadata) -> str:
    supported = set(NAMEID_FORMATS.values())
    return next((f for f in meta.nameid_formats if f in supported), NAMEID_UNSPECIFIED)


def _text_of(xml: bytes) -> str:
    """Metadata is stored as text: parsable in another declared encoding is not enough."""
    try:
        return xml.decode("utf-8")
    except UnicodeDecodeError:
        raise MetadataError("metadata must be UTF-8 encoded", field="xml") from None


def add(xml: bytes, source: str | None, options: SpOptions, actor: str) -> ServiceProvider:
    """Register an SP from its metadata. Conflict when its entityID is already registered."""
    try:
        meta = parse_sp_metadata(xml)
    except MetadataError as exc:  # the parser's refusals are about the document it is given
        raise MetadataError(exc.message, exc.reason, field="xml") from None
    # XML allows a newline or tab by reference (&#10;) and the C1 controls: they would break the listings, and
    # reach the admin's terminal in the messages below.
    check_line(meta.entity_id, "the metadata's entityID", "xml")
    _check_new_metadata(meta, field="xml")
    if get(meta.entity_id) is not None:
        raise Conflict(f"service provider '{meta.entity_id}' is already registered")
    values: dict[str, Any] = {
        "name": meta.display_name or meta.entity_id[:255],
        "nameid_format": _default_nameid(meta),
        "sign_response": True,
        "sign_assertion": True,
        "encrypt_assertion": False,
        "require_signed_requests": meta.authn_requests_signed,
        "allow_sha1": False,
        "attribute_map": default_attribute_map(),
        "open_to_all": False,  # an app is closed until it is assigned or opened
    }
    values.update(_given(options))
    _check_consistent(values, meta)
    sp = ServiceProvider(
        entity_id=meta.entity_id, metadata_xml=_text_of(xml), metadata_source=source, **values
    )
    db.session.add(sp)
    try:
        db.session.flush()
    except IntegrityError:  # registered by someone else in the meantime
        db.session.rollback()  # forgets this request's "not registered" too (RequestRows)
        raise Conflict(f"service provider '{meta.entity_id}' is already registered") from None
    _forget()
    audit.record(audit.AuditEvent(
        type="sp.add", actor=actor, sp=meta.entity_id,
        details={"source": source, **_audit_view(values)},
    ))
    return sp


def update(entity_id: str, options: SpOptions, actor: str, *, commit: bool = True) -> dict[str, dict[str, Any]]:
    """Change an SP's settings; returns what changed ({} when nothing did, and then records nothing). Without
    ``commit``, the caller commits it with the rest of its change."""
    sp = get_or_404(entity_id)
    before = _settings_of(sp)
    after = {**before, **_given(options)}
    _check_consistent(after, metadata_of(sp))
    changed = {k: {"from": before[k], "to": after[k]} for k in _SETTING_FIELDS if before[k] != after[k]}
    if not changed:
        return {}
    for key in changed:
        setattr(sp, key, after[key])
    audit.record(audit.AuditEvent(
        type="sp.update", actor=actor, sp=entity_id, details={"changed": _audit_changes(changed)},
    ), commit=commit)
    return changed


def remove(entity_id: str, actor: str) -> None:
    """Unregister an SP; its persistent NameIDs and session participations go with it (FK cascade)."""
    sp = get_or_404(entity_id)
    name = sp.name
    db.session.delete(sp)
    _forget()
    audit.record(audit.AuditEvent(type="sp.remove", actor=actor, sp=entity_id, details={"name": name}))


def _check_new_metadata(meta: SpMetadata, field: str | None = None, stored: SpMetadata | None = None) -> None:
    """Checks of metadata being stored (add, refresh), not of what is stored: an SP registered before them can
    still be changed (`sp set`), and refreshed to metadata that keeps its old keys beside a new one (a rollover)."""
    if meta.authn_requests_signed and not meta.signing_certs:
        # Sign-ins then ask for a signature (the metadata's word) that nothing here could check: none would pass.
        raise MetadataError(f"the metadata of '{meta.entity_id}' says AuthnRequestsSigned but has no signing "
                            "certificate to check its requests with", field=field)
    if meta.expired(clock.now()):
        assert meta.valid_until is not None
        raise MetadataError(f"the metadata expired on {meta.valid_until.isoformat()} (its validUntil): get a "
                            "current copy from the service provider", field=field)
    kept = set(stored.signing_certs + stored.encryption_certs) if stored is not None else set()
    for cert_b64 in dict.fromkeys(c for c in meta.signing_certs + meta.encryption_certs if c not in kept):
        cert = x509.load_der_x509_certificate(base64.b64decode(cert_b64))  # the parser has read it already
        reason = weakness(cert.public_key())
        if reason is not None:
            raise MetadataError(f"the metadata's certificate {cert.subject.rfc4514_string()!r} holds {reason}: "
                                "ask the service provider for a stronger key", field=field)


def refresh(entity_id: str, actor: str) -> bool:
    """Re-read the SP's metadata from where it came from; settings are kept. True when it changed."""
    sp = get_or_404(entity_id)
    if not sp.metadata_source:
        raise BadRequest(f"service provider '{entity_id}' has no recorded metadata source to refresh from")
    xml = fetch_metadata(sp.metadata_source)
    meta = parse_sp_metadata(xml)
    if meta.entity_id != sp.entity_id:
        raise MetadataError(
            f"the metadata at {sp.metadata_source} is for {meta.entity_id!r}, not '{sp.entity_id}'"
        )
    _check_new_metadata(meta, stored=metadata_of(sp))
    _check_consistent(_settings_of(sp), meta)
    text = _text_of(xml)
    changed = text != sp.metadata_xml
    if changed:
        sp.metadata_xml = text
    audit.record(audit.AuditEvent(
        type="sp.refresh", actor=actor, sp=entity_id,
        details={"source": sp.metadata_source, "metadata_changed": changed,
                 "acs": [e.location for e in meta.acs]},
    ))
    return changed


# --- presentation -------------------------------------------------------------------------------------


def _audit_view(values: dict[str, Any]) -> dict[str, Any]:
    view = {k: v for k, v in values.items() if k != "attribute_map"}
    view["attributes"] = [rule_text(r) for r in values["attribute_map"]]
    return view


def _audit_changes(changed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = dict(changed)
    if "attribute_map" in out:
        out["attribute_map"] = {
            side: [rule_text(r) for r in out["attribute_map"][side]] for side in ("from", "to")
        }
    return out


def fingerprint(cert_b64: str) -> str:
    """SHA-256 fingerprint of a certificate, as `openssl x509 -fingerprint -sha256` shows it."""
    digest = hashlib.sha256(base64.b64decode(cert_b64)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def describe(sp: ServiceProvider) -> dict[str, Any]:
    """Everything an admin wants to see about one SP, JSON-ready."""
    try:
        meta: SpMetadata | None = metadata_of(sp)
    except MetadataError:
        meta = None
    out: dict[str, Any] = {
        "entity_id": sp.entity_id,
        **_settings_of(sp),
        "metadata_source": sp.metadata_source,
        "created_at": sp.created_at.isoformat() if sp.created_at else None,
        "updated_at": sp.updated_at.isoformat() if sp.updated_at else None,
    }
    if meta is not None:
        out["acs"] = [{"binding": e.binding, "location": e.location, "index": e.index, "is_default": e.is_default}
                      for e in meta.acs]
        out["slo"] = [{"binding": e.binding, "location": e.location} for e in meta.slo]
        out["signing_certificates"] = [fingerprint(c) for c in meta.signing_certs]
        out["encryption_certificates"] = [fingerprint(c) for c in meta.encryption_certs]
        out["authn_requests_signed"] = meta.authn_requests_signed
    return out
