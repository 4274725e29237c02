"""Single Sign-On: AuthnRequest intake and Response issuance.

Intake (:func:`receive`) checks an AuthnRequest in a fixed order, and until the assertion consumer service
(ACS) is known to be one of the SP's metadata endpoints, every failure is an error page: nothing is ever
sent to an address we have not verified. After that, failures the spec names (NoPassive,
InvalidNameIDPolicy, NoAuthnContext) are SAML Responses posted to that trusted ACS (:class:`SamlStatusError`,
:func:`error_response`). Issuance (:func:`issue`) first asks :func:`idp.access.decide.authorize` whether the
user may open the SP (or, for an AWS console launch, the account role), then builds the Response with
lxml (:mod:`idp.saml.build`), signs and encrypts it in-process with :mod:`idp.saml.signing`, records the SP as
a session participant (for Single Logout) and audits it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from lxml import etree
from saml2 import samlp

from idp import audit, clock
from idp.access import aws
from idp.access.claims import ReleasedAttribute, release
from idp.access.decide import AccessDenied, AccountTarget, AppTarget, Grant, authorize
from idp.audit import AuditEvent
from idp.authn.session import principal_for
from idp.errors import BadRequest, IdpError, NotFound
from idp.extensions import db
from idp.runtime import keystore, settings
from idp.saml import authn_context, build, nameid, providers, signing, xmlsafe
from idp.saml.bindings import POST, REDIRECT, Inbound
from idp.saml.metadata import Endpoint, SpMetadata
from idp.saml.providers import RegisteredSp
from idp.state import once
from idp.state import pending as pending_state
from idp.state import sessions as session_state
from idp.state.sessions import Participant, SsoSession

PENDING_KIND = "saml-authn"
PENDING_LIFETIME = timedelta(minutes=10)
DEFAULT_ATTRIBUTE_NAME_FORMAT = "urn:oasis:names:tc:SAML:2.0:attrname-format:unspecified"
_ASSERTION = f"{{{build.SAML}}}Assertion"
_AUTHN_REQUEST = f"{{{build.SAMLP}}}AuthnRequest"
_ISSUER = f"{{{build.SAML}}}Issuer"
_NAMEID_POLICY = f"{{{build.SAMLP}}}NameIDPolicy"
_SUBJECT = f"{{{build.SAML}}}Subject"
_NAME_ID = f"{{{build.SAML}}}NameID"


@dataclass(frozen=True)
class SsoRequest:
    """A validated sign-in request whose ACS is trusted. IdP-initiated requests have no ``request_id``."""

    sp_entity_id: str
    request_id: str | None
    acs_url: str
    relay_state: str | None
    force_authn: bool
    is_passive: bool
    # The NameIDPolicy Format the SP asked for, if any; resolved against the SP's setting at issuance.
    requested_nameid_format: str | None
    received_at: datetime
    # The AuthnContextClassRef the assertion states: what the RequestedAuthnContext was met as.
    authn_class: str = authn_context.OURS
    # The request's <Subject> NameID (value, Format or None): only that user may be answered (SAML Core 3.4.1).
    requested_subject: tuple[str, str | None] | None = None
    # An AWS console launch (:func:`aws_launch`): the account, and the permission set whose role to offer.
    aws_account: str | None = None
    permission_set: str | None = None

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["received_at"] = self.received_at.isoformat()
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> SsoRequest:
        subject = data.get("requested_subject")  # a list once stored as JSON
        return cls(**{**data, "received_at": datetime.fromisoformat(data["received_at"]),
                      "requested_subject": tuple(subject) if subject is not None else None})


@dataclass(frozen=True)
class Outbound:
    """A SAML Response ready for the POST binding."""

    acs_url: str
    xml: bytes
    relay_state: str | None


class SamlStatusError(Exception):
    """A failure after the ACS is trusted: answered with a SAML Response carrying these status codes."""

    def __init__(self, request: SsoRequest, second_level: str, reason: str,
                 top_level: str = samlp.STATUS_RESPONDER, *, told: str | None = None) -> None:
        super().__init__(reason)
        self.request = request
        self.top_level = top_level
        self.second_level = second_level
        self.reason = reason  # audited
        # The StatusMessage the SP reads, when the reason says more than the SP may learn (who is signed in).
        self.told = reason if told is None else told


# --- intake ---------------------------------------------------------------------------------------------

def audit_refusal(reason: str, *, sp: str | None, client_ip: str | None) -> None:
    audit.record(AuditEvent(type="saml.refused", outcome="failure", sp=sp, client_ip=client_ip, reason=reason))


def receive(inbound: Inbound, client_ip: str | None) -> SsoRequest:
    """Check an AuthnRequest. Raises an :class:`IdpError` (an error page) before the ACS is trusted, and
    :class:`SamlStatusError` after. Every refusal is audited as ``saml.refused``."""
    seen: dict[str, str | None] = {"sp": None}
    try:
        req = _validate(inbound, seen)
    except IdpError as exc:
        audit_refusal(exc.reason, sp=seen["sp"], client_ip=client_ip)
        raise
    sp = providers.get(req.sp_entity_id)
    assert sp is not None
    try:
        nameid.choose_format(sp.nameid_format, req.requested_nameid_format)
    except nameid.NameIdPolicyError as exc:
        raise SamlStatusError(req, samlp.STATUS_INVALID_NAMEID_POLICY, exc.reason,
                              top_level=samlp.STATUS_REQUESTER) from exc
    return req


def _validate(inbound: Inbound, seen: dict[str, str | None]) -> SsoRequest:
    cfg = settings()
    root = xmlsafe.parse(inbound.xml)
    request = _authn_request(root)
    if request.version != "2.0":
        raise BadRequest("Only SAML 2.0 requests are supported.", f"version {request.version!r}")
    issuer = request.issuer
    if not issuer:
        raise BadRequest("The sign-in request does not say which application sent it.", "no issuer")
    seen["sp"] = issuer
    sp = providers.get(issuer)
    if sp is None:
        raise BadRequest("Unknown service provider", "unknown service provider")
    md = providers.metadata_of(sp)

    signed = _check_signature(inbound, root, sp, md)

    expected_destination = cfg.base + "/saml/sso"
    if request.destination is not None and request.destination != expected_destination:
        raise BadRequest("The sign-in request was meant for another identity provider.",
                         f"destination {request.destination!r}")
    if signed and request.destination is None:  # SAML Bindings 3.4.5.2, 3.5.5.2: it MUST be there
        raise BadRequest("The sign-in request is signed but does not say which identity provider it is for.",
                         "signed request without Destination")

    now = clock.now()
    issued = _parse_instant(request.issue_instant)
    if abs((now - issued).total_seconds()) > cfg.saml_clock_skew_seconds:
        raise BadRequest("The sign-in request has expired; go back to the application and try again.",
                         "stale IssueInstant")

    acs_url = _trusted_acs(request, md)

    request_id = request.id or ""
    if not request_id or len(request_id) > 256:
        raise BadRequest("The sign-in request has no valid ID.", "bad request ID")

    try:
        requested_context = authn_context.read(root)
    except authn_context.Malformed as exc:
        raise BadRequest("The sign-in request is not a valid SAML AuthnRequest.", f"malformed request: {exc}") from exc
    requested_format = request.name_id_format or None
    req = SsoRequest(
        sp_entity_id=sp.entity_id,
        request_id=request_id,
        acs_url=acs_url,
        relay_state=inbound.relay_state,
        force_authn=_true(request.force_authn),
        is_passive=_true(request.is_passive),
        requested_nameid_format=requested_format,
        received_at=now,
        requested_subject=request.subject,
    )
    if request.subject is not None and not request.subject[0]:
        raise SamlStatusError(req, samlp.STATUS_REQUEST_UNSUPPORTED, "a Subject without a NameID",
                              top_level=samlp.STATUS_REQUESTER)
    if request.sp_name_qualifier not in (None, sp.entity_id):
        # SAML Core 3.4.1.1: an identifier in another SP's (or an affiliation's) namespace. We keep one per SP,
        # and answering with the requester's would not be what was asked.
        raise SamlStatusError(req, samlp.STATUS_INVALID_NAMEID_POLICY,
                              f"NameIDPolicy SPNameQualifier of another namespace: {request.sp_name_qualifier[:200]}",
                              top_level=samlp.STATUS_REQUESTER)
    stated = authn_context.choose(requested_context)
    if stated is None:
        assert requested_context is not None
        raise SamlStatusError(req, samlp.STATUS_NO_AUTHN_CONTEXT,
                              f"cannot meet RequestedAuthnContext ({requested_context.comparison} "
                              f"{' '.join(requested_context.class_refs) or 'a declaration'})")
    return replace(req, authn_class=stated)


@dataclass(frozen=True)
class _AuthnRequest:
    """What we read of an AuthnRequest: its attributes, its Issuer's text and its NameIDPolicy's Format."""

    id: str | None
    version: str | None
    issue_instant: str | None
    destination: str | None
    assertion_consumer_service_url: str | None
    assertion_consumer_service_index: str | None
    protocol_binding: str | None
    force_authn: str | None
    is_passive: str | None
    issuer: str
    name_id_format: str | None
    sp_name_qualifier: str | None
    # The <Subject>'s NameID (value, Format); ("", None) for a Subject naming its user otherwise (BaseID,
    # EncryptedID), which we cannot read.
    subject: tuple[str, str | None] | None


def _authn_request(root: etree._Element) -> _AuthnRequest:
    """Read from the safely parsed tree itself (a second parse into pysaml2's classes cost 2% of an SSO answer).
    Only the root's own children count, and at most one of each that we read."""
    if root.tag != _AUTHN_REQUEST:
        raise BadRequest("The message is not a SAML AuthnRequest.", "not an AuthnRequest")
    issuers = root.findall(_ISSUER)
    policies = root.findall(_NAMEID_POLICY)
    subjects = root.findall(_SUBJECT)
    if len(issuers) > 1 or len(policies) > 1 or len(subjects) > 1:
        raise BadRequest("The sign-in request is not a valid SAML AuthnRequest.", "malformed request")
    subject: tuple[str, str | None] | None = None
    if subjects and len(subjects[0]) and subjects[0][0].tag != f"{{{build.SAML}}}SubjectConfirmation":
        name_id = subjects[0][0]
        subject = ((name_id.text or "").strip(), name_id.get("Format")) if name_id.tag == _NAME_ID else ("", None)
    return _AuthnRequest(
        id=root.get("ID"), version=root.get("Version"), issue_instant=root.get("IssueInstant"),
        destination=root.get("Destination"),
        assertion_consumer_service_url=root.get("AssertionConsumerServiceURL"),
        assertion_consumer_service_index=root.get("AssertionConsumerServiceIndex"),
        protocol_binding=root.get("ProtocolBinding"), force_authn=root.get("ForceAuthn"),
        is_passive=root.get("IsPassive"), issuer=(issuers[0].text or "").strip() if issuers else "",
        name_id_format=policies[0].get("Format") if policies else None,
        # Blank is not sent: no namespace named.
        sp_name_qualifier=(policies[0].get("SPNameQualifier") or "").strip() or None if policies else None,
        subject=subject,
    )


def _is_requested(name_id: nameid.NameId, value: str, fmt: str | None) -> bool:
    if fmt not in (None, nameid.UNSPECIFIED, name_id.format):
        return False
    if name_id.format == nameid.EMAIL:
        return name_id.value.casefold() == value.casefold()
    return name_id.value == value


def _true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("true", "1")


def _parse_instant(value: str | None) -> datetime:
    try:
        parsed = datetime.fromisoformat(value or "")
    except ValueError as exc:
        raise BadRequest("The sign-in request has an invalid IssueInstant.", "bad IssueInstant") from exc
    if parsed.tzinfo is None:  # SAML times are UTC; a missing "Z" is a sloppy SP, not another zone
        parsed = parsed.replace(tzinfo=clock.now().tzinfo)
    return parsed


def _check_signature(inbound: Inbound, root: Any, sp: RegisteredSp, md: SpMetadata) -> bool:
    """Whether the request is signed (by a key of the SP's metadata); refused when it must be and is not."""
    certs = list(md.signing_certs)
    required = sp.require_signed_requests or md.authn_requests_signed
    if inbound.binding == REDIRECT:
        assert inbound.query_string is not None
        signed = signing.verify_redirect(inbound.query_string, certs, sp.allow_sha1)
    else:
        signed = signing.verify_posted(root, certs, sp.allow_sha1)
    if required and not signed:
        raise BadRequest("This application must sign its sign-in requests, and this one is not signed.",
                         "unsigned request")
    return signed


def post_acs_endpoints(md: SpMetadata) -> list[Endpoint]:
    return [e for e in md.acs if e.binding == POST]


def listed_acs(md: SpMetadata, url: str) -> bool:
    """Is ``url`` one of the SP's HTTP-POST ACS endpoints, exactly?"""
    return any(e.location == url for e in post_acs_endpoints(md))


def default_acs(md: SpMetadata) -> str:
    """The SP's default HTTP-POST ACS (SAML Metadata 2.2.3), in the metadata's order: the first marked
    isDefault="true", else the first not marked "false", else the first."""
    endpoints = post_acs_endpoints(md)
    if not endpoints:
        raise BadRequest("This application has no HTTP-POST assertion consumer service.", "no POST ACS")
    chosen = (next((e for e in endpoints if e.is_default), None)
              or next((e for e in endpoints if not e.not_default), endpoints[0]))
    return chosen.location


def _trusted_acs(request: _AuthnRequest, md: SpMetadata) -> str:
    endpoints = post_acs_endpoints(md)
    url = request.assertion_consumer_service_url
    index = request.assertion_consumer_service_index
    if request.protocol_binding is not None and request.protocol_binding != POST:
        raise BadRequest("Only the HTTP-POST binding is supported for responses.",
                         f"unsupported response binding {request.protocol_binding!r}")
    if url is not None:
        if not listed_acs(md, url):
            raise BadRequest("The address this request asks us to answer to is not registered for the "
                             "application.", f"ACS URL not in metadata: {url[:200]}")
        return str(url)
    if index is not None:
        wanted = str(index).strip()
        # An xs:unsignedShort: "01" is index 1. Read only once known to be one: int() refuses (ValueError) a
        # string of more than 4,300 digits, which anyone may send.
        number = int(wanted) if wanted.isascii() and wanted.isdigit() and len(wanted.lstrip("0")) <= 5 else None
        for e in endpoints:
            if e.index is not None and e.index == number:
                return e.location
        raise BadRequest("The request names an assertion consumer service the application has not "
                         "registered.", f"unknown ACS index {str(index)[:20]}")
    return default_acs(md)


def _namespace(entity_id: str) -> str:
    # A claim's namespace is 64 characters; entity IDs can be far longer, so key by a digest of the ID.
    return "saml-authn:" + hashlib.sha256(entity_id.encode()).hexdigest()[:48]


def claim(req: SsoRequest, client_ip: str | None) -> None:
    """Use up the request's ID (an SP's request has one; the IdP's own do not), refusing a replay. Called once
    the browser's session is known, right before the request is answered or parked: looking at the session may
    commit (a revalidation) or roll back (a concurrent shadow row), and the claim must commit with the answer or
    the parked request, in the database or Redis: an error before that leaves the ID unused, for the browser's
    retry."""
    if req.request_id is None:
        return
    cfg = settings()
    # Kept for as long as a request with this ID could still pass the IssueInstant check.
    keep = timedelta(seconds=2 * cfg.saml_clock_skew_seconds + cfg.saml_assertion_lifetime_seconds)
    if not once.claim(_namespace(req.sp_entity_id), req.request_id, req.received_at + keep):
        audit_refusal("replayed request", sp=req.sp_entity_id, client_ip=client_ip)
        raise BadRequest("This sign-in request has already been used; go back to the application and "
                         "try again.", "replayed request")


def _registered(entity_id: str, client_ip: str | None) -> RegisteredSp:
    sp = providers.get(entity_id)
    if sp is None:
        audit_refusal("unknown service provider (IdP-initiated)", sp=entity_id[:1024], client_ip=client_ip)
        raise NotFound("Unknown service provider", "unknown service provider")
    return sp


def idp_initiated(entity_id: str, relay_state: str | None, client_ip: str | None) -> SsoRequest:
    """A sign-in the IdP starts (``/saml/init``): to the SP's default ACS, answering no request."""
    sp = _registered(entity_id, client_ip)
    try:
        acs = default_acs(providers.metadata_of(sp))
    except IdpError as exc:
        audit_refusal(exc.reason, sp=entity_id, client_ip=client_ip)
        raise
    return SsoRequest(
        sp_entity_id=sp.entity_id, request_id=None, acs_url=acs, relay_state=relay_state,
        force_authn=False, is_passive=False, requested_nameid_format=None, received_at=clock.now(),
    )


def aws_launch(entity_id: str, acs_url: str, account_id: str, permission_set: str, relay_state: str | None,
               client_ip: str | None) -> SsoRequest:
    """An IdP-initiated sign-in to AWS (the portal's console link) for one account and permission set, posted
    to ``acs_url`` (the account's sign-in endpoint, which must be one of the SP's POST ACS endpoints).
    Whether the user holds that role is decided at issuance, like every other sign-in."""
    sp = _registered(entity_id, client_ip)
    if not listed_acs(providers.metadata_of(sp), acs_url):
        audit_refusal(f"AWS sign-in endpoint not in metadata: {acs_url[:200]}", sp=entity_id, client_ip=client_ip)
        raise BadRequest("This AWS sign-in endpoint is not registered for the application.",
                         f"ACS URL not in metadata: {acs_url[:200]}")
    return SsoRequest(
        sp_entity_id=sp.entity_id, request_id=None, acs_url=acs_url, relay_state=relay_state,
        force_authn=False, is_passive=False, requested_nameid_format=None, received_at=clock.now(),
        aws_account=account_id, permission_set=permission_set,
    )


# --- waiting for a sign-in --------------------------------------------------------------------------------

def park(req: SsoRequest) -> str:
    """Keep a validated request while the user signs in; returns its id for ``/saml/continue/<id>``."""
    pending_id = pending_state.put(PENDING_KIND, req.to_data(), clock.now() + PENDING_LIFETIME)
    # The request ID's claim, in the database: committed with the parked request when that is stored there too.
    db.session.commit()
    return pending_id


_EXPIRED = "This sign-in request has expired; go back to the application and try again."


def pending(pending_id: str, client_ip: str | None) -> SsoRequest:
    data = pending_state.get(PENDING_KIND, pending_id)
    if data is None:
        audit_refusal("pending request missing or expired", sp=None, client_ip=client_ip)
        raise BadRequest(_EXPIRED, "pending request missing or expired")
    return SsoRequest.from_data(data)


def consume(pending_id: str, client_ip: str | None) -> None:
    """Delete the parked request; only one of two concurrent continuations gets past this."""
    if not pending_state.take(pending_id):
        audit_refusal("pending request already used", sp=None, client_ip=client_ip)
        raise BadRequest(_EXPIRED, "pending request already used")


# --- issuance ----------------------------------------------------------------------------------------------

def issue(req: SsoRequest, session: SsoSession, client_ip: str | None) -> Outbound:
    """Build, sign (and encrypt) the Response for a signed-in session; record and audit it."""
    cfg = settings()
    sp = providers.get(req.sp_entity_id)
    if sp is None:  # removed while the user was signing in
        audit_refusal("service provider removed", sp=req.sp_entity_id, client_ip=client_ip)
        raise BadRequest("Unknown service provider", "service provider removed")
    md = providers.metadata_of(sp)
    if not listed_acs(md, req.acs_url):
        # Checked when the request came in; a request parked while the user signed in may outlive that address in
        # the SP's metadata (refreshed meanwhile, perhaps on another instance): no assertion goes where the SP no
        # longer says it listens.
        audit_refusal(f"ACS URL no longer in metadata: {req.acs_url[:200]}", sp=sp.entity_id, client_ip=client_ip)
        raise BadRequest("The application's sign-in address changed meanwhile. Start again from the application.",
                         "ACS URL no longer in metadata")
    principal = principal_for(session)
    now = clock.now()
    target = (AccountTarget(req.aws_account, req.permission_set) if req.aws_account is not None
              else AppTarget("saml", sp.entity_id))
    try:
        grant = authorize(principal, target, now, client_ip=client_ip)
    except AccessDenied as exc:
        # Audited by authorize. A user sees an error page rather than a Response at the SP (as Okta does);
        # but a passive request must not take over the screen: its SP gets RequestDenied.
        if req.is_passive:
            raise SamlStatusError(req, samlp.STATUS_REQUEST_DENIED, exc.reason) from exc
        raise
    participant = session_state.participant(session.id, sp.id)
    try:
        fmt = nameid.choose_format(sp.nameid_format, req.requested_nameid_format)
        # A persistent NameID never changes: the one this session already gave the SP saves looking it up.
        name_id = (nameid.NameId(participant.name_id, fmt, sp.entity_id)
                   if participant is not None and participant.name_id_format == fmt == nameid.PERSISTENT
                   else nameid.name_id_for(principal, sp, fmt))
    except nameid.NameIdPolicyError as exc:
        raise SamlStatusError(req, samlp.STATUS_INVALID_NAMEID_POLICY, exc.reason) from exc
    if req.requested_subject is not None and not _is_requested(name_id, *req.requested_subject):
        # SAML Core 3.4.1: the assertion's subject must strongly match the request's; someone else signed in.
        # The SP learns no more than that: the username is not for an SP given an opaque NameID.
        raise SamlStatusError(req, samlp.STATUS_AUTHN_FAILED,
                              f"signed in as {principal.username}, not the Subject the request names",
                              told="the user signed in is not the Subject the request names")

    skew = timedelta(seconds=min(cfg.saml_clock_skew_seconds, 60))  # NotBefore: allow a little SP clock lag
    not_on_or_after = build.instant(now + timedelta(seconds=cfg.saml_assertion_lifetime_seconds))
    session_index = participant.session_index if participant is not None else build.new_id()
    # An AWS launch carries exactly the roles the decision granted: no release rule of the AWS SP may add
    # others (such as a Role mapping made before permission sets existed).
    attributes = (aws.role_attributes(principal, grant.roles, now) if req.aws_account is not None
                  else release(principal, sp.attribute_map or []))
    # STS ends a console session at the shorter of SessionDuration and SessionNotOnOrAfter: for AWS the
    # permission set decides, not how long ago the user signed in here. Another SP's session ends with ours, or
    # with the assignment that opened it if that ends first.
    app_end = grant.apps[0].until if grant.apps else None
    session_end = (None if req.aws_account is not None
                   else build.instant(min(session.expires_at, app_end or session.expires_at)))

    issuer = cfg.base + "/saml/metadata"
    root = build.response(response_id=build.new_id(), issue_instant=build.instant(now), destination=req.acs_url,
                          in_response_to=req.request_id, issuer=issuer, status=(samlp.STATUS_SUCCESS, None, None))
    build.assertion(
        root, assertion_id=build.new_id(), issue_instant=build.instant(now), issuer=issuer,
        subject=build.Subject(
            name_id=name_id.value, name_id_format=name_id.format,
            name_qualifier=issuer if name_id.sp_name_qualifier else None,
            sp_name_qualifier=name_id.sp_name_qualifier, recipient=req.acs_url,
            not_on_or_after=not_on_or_after, in_response_to=req.request_id,
        ),
        not_before=build.instant(now - skew), audience=sp.entity_id, authn_instant=build.instant(session.authn_at),
        session_index=session_index, session_not_on_or_after=session_end, authn_context=req.authn_class,
        attributes=[build.Attribute(a.name, a.name_format or DEFAULT_ATTRIBUTE_NAME_FORMAT, a.friendly_name,
                                    tuple(a.values)) for a in attributes],
    )
    key = keystore().ring().active
    if sp.sign_assertion:
        signing.sign(root.find(_ASSERTION), key)
    encrypted = bool(sp.encrypt_assertion and md.encryption_certs)
    if encrypted:
        signing.encrypt_assertion(root, md.encryption_certs[0], md.encryption_methods)
    if sp.sign_response:
        signing.sign(root, key)

    _record_participant(req, session, sp, name_id, session_index, participant, now)
    audit.record(AuditEvent(
        type="saml.response", username=principal.username, sp=sp.entity_id, client_ip=client_ip,
        details={
            "name_id": name_id.value, "name_id_format": name_id.format,
            "attributes": [a.name for a in attributes], "signed_assertion": sp.sign_assertion,
            "signed_response": sp.sign_response, "encrypted": encrypted,
            "in_response_to": req.request_id, **_aws_details(req, grant, attributes),
        },
    ))  # commits any new persistent NameID with it, and the participant when sessions live in the database
    return Outbound(req.acs_url, etree.tostring(root), req.relay_state)


def _aws_details(req: SsoRequest, grant: Grant, released: list[ReleasedAttribute]) -> dict[str, Any]:
    """What the audit log says about a role assumption: the account, the roles offered, and the session
    length AWS was told."""
    if req.aws_account is None:
        return {}
    duration = next((a.values[0] for a in released if a.name == aws.SESSION_DURATION), None)
    return {"aws": {"account": req.aws_account, "permission_set": req.permission_set,
                    "roles": [r.role_arn for r in grant.roles],
                    "session_seconds": int(duration) if duration is not None else None}}


def _record_participant(req: SsoRequest, session: SsoSession, sp: RegisteredSp, name_id: nameid.NameId,
                        session_index: str, previous: Participant | None, now: datetime) -> None:
    """Single Logout needs to know every SP of this session and how it knows the user."""
    current = Participant(session_id=session.id, sp_id=sp.id, name_id=name_id.value,
                          name_id_format=name_id.format, session_index=session_index)
    try:
        session_state.save_participant(session, current, previous, now)
    except session_state.SessionGone as exc:
        raise SamlStatusError(req, samlp.STATUS_AUTHN_FAILED, "the session ended while answering") from exc


def error_response(err: SamlStatusError, client_ip: str | None) -> Outbound:
    """A Response without an assertion carrying the spec's status codes, to the already trusted ACS.

    Signed whatever the SP's switch says: an SP that wants signed messages refuses unsigned errors, and
    the signature costs nothing an SP can object to.
    """
    req = err.request
    audit_refusal(err.reason, sp=req.sp_entity_id, client_ip=client_ip)
    root = build.response(response_id=build.new_id(), issue_instant=build.instant(clock.now()), destination=req.acs_url,
                          in_response_to=req.request_id, issuer=settings().base + "/saml/metadata",
                          status=(err.top_level, err.second_level, err.told))
    signing.sign(root, keystore().ring().active)
    return Outbound(req.acs_url, etree.tostring(root), req.relay_state)
