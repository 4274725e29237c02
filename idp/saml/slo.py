"""SAML Single Logout at ``/saml/slo``: the IdP's side of the front-channel logout chain.

An SP sends a LogoutRequest (HTTP-Redirect or HTTP-POST). We check it (registered issuer, signature against
the SP's metadata certificates, Destination, IssueInstant, single-use ID), end the IdP session it names, and
then walk the browser through every other SP of that session that has an SLO endpoint, one at a time: each
gets a signed LogoutRequest, and its LogoutResponse comes back here. The chain's state lives server-side as a
parked document (:mod:`idp.state.pending`, kind ``saml-logout``), which the RelayState we send names; the
browser carries nothing else. Finally the initiating SP gets a signed LogoutResponse: Success, with
PartialLogout underneath when some SP answered with an error or could not be reached. :func:`start_idp_logout`
runs the same chain for the IdP's own logout page and ends on a "signed out" page instead, or, when its caller
(RP-initiated OIDC logout) gives a ``return_to`` address it has validated, with a redirect there.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Response, render_template, request
from lxml import etree
from saml2 import samlp
from saml2.saml import NAMEID_FORMAT_ENTITY, NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT, Issuer, NameID

from idp import audit
from idp.audit import AuditEvent
from idp.authn.session import current_session, end_session
from idp.clock import now
from idp.errors import BadRequest
from idp.extensions import db
from idp.runtime import keyed_digest, keystore, settings
from idp.saml import build, providers
from idp.saml.bindings import POST, REDIRECT, Inbound, decode_post, decode_redirect, post_form
from idp.saml.metadata import Endpoint, idp_entity_id
from idp.saml.providers import RegisteredSp
from idp.saml.signing import SignatureInvalid, sign, sign_redirect, verify_posted, verify_redirect
from idp.saml.xmlsafe import parse
from idp.state import once, pending
from idp.state import sessions as session_state
from idp.state.sessions import Participant, SsoSession
from idp.store import ServiceProvider, User

log = logging.getLogger(__name__)

PENDING_KIND = "saml-logout"
CONFIRM_KIND = "saml-logout-confirm"  # an unsigned request, waiting for the user to confirm it
# Long enough for a user to click through a no-JavaScript POST form at each SP, short enough not to pile up.
PENDING_LIFETIME = timedelta(minutes=10)
MAX_ID_LENGTH = 256

SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
STATUS_SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
STATUS_PARTIAL = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"
STATUS_REQUESTER = "urn:oasis:names:tc:SAML:2.0:status:Requester"
STATUS_REQUEST_DENIED = "urn:oasis:names:tc:SAML:2.0:status:RequestDenied"
_NSPAIR = {"samlp": SAMLP, "saml": SAML}

# Results recorded per notified SP; anything but SUCCESS makes the logout partial.
SUCCESS = "success"


class LogoutRefused(BadRequest):
    """A logout message we will not act on."""


def slo_url() -> str:
    return f"{settings().base}/saml/slo"


# -- entry point ------------------------------------------------------------------------------------------


def handle() -> Response:
    """The ``/saml/slo`` endpoint: a LogoutRequest starts a chain, a LogoutResponse continues one."""
    try:
        inbound = _inbound()
        root = parse(inbound.xml)
    except LogoutRefused:
        raise
    except BadRequest as exc:  # undecodable, oversized, DTDs and entities: refused and audited like the rest
        raise _refuse(exc.message, exc.reason) from exc
    tag = etree.QName(root)
    if tag.namespace == SAMLP and tag.localname == "LogoutRequest":
        return _logout_request(inbound, root)
    if tag.namespace == SAMLP and tag.localname == "LogoutResponse":
        return _logout_response(inbound, root)
    raise _refuse("This is not a SAML logout message.", f"unexpected message: {tag.localname}")


def _inbound() -> Inbound:
    limit = settings().saml_max_message_bytes
    values = request.args if request.method == "GET" else request.form
    req, resp = values.get("SAMLRequest"), values.get("SAMLResponse")
    if (req is None) == (resp is None):
        raise _refuse("Expected one SAMLRequest or SAMLResponse.", "no SAML logout message")
    message = req if req is not None else resp
    assert message is not None
    relay_state = values.get("RelayState")
    if request.method == "GET":
        return decode_redirect(message, relay_state, request.query_string, limit)
    return decode_post(message, relay_state, limit)


# -- inbound checks -----------------------------------------------------------------------------------------


def _refuse(message: str, reason: str, sp: str | None = None) -> LogoutRefused:
    """Record the refusal and hand back the error to raise."""
    audit.record(AuditEvent(type="saml.refused", outcome="failure", sp=sp, client_ip=request.remote_addr,
                            reason=reason, details={"endpoint": "slo"}))
    return LogoutRefused(message, reason)


def _pysaml2(from_string: Any, xml: bytes) -> Any:
    """pysaml2's object for a message already parsed safely; None when pysaml2 cannot read it."""
    try:
        return from_string(xml)
    except Exception:  # pysaml2 raises assorted errors on values it cannot convert
        log.debug("pysaml2 could not read a logout message", exc_info=True)
        return None


def _issuer(root: etree._Element) -> str:
    issuer = root.find(f"{{{SAML}}}Issuer")
    value = (issuer.text or "").strip() if issuer is not None else ""
    if not value:
        raise _refuse("The logout message names no issuer.", "no issuer")
    return value


def _registered(entity_id: str) -> RegisteredSp:
    sp = providers.get(entity_id)
    if sp is None:
        raise _refuse("This service provider is not registered here.", "unknown SP", entity_id)
    return sp


def _signed(inbound: Inbound, root: etree._Element, sp: RegisteredSp) -> bool:
    """True when the message carries a valid signature by one of the SP's metadata certificates."""
    certs = list(providers.metadata_of(sp).signing_certs)
    if not certs:
        return False
    try:
        if inbound.binding == REDIRECT:
            assert inbound.query_string is not None
            return verify_redirect(inbound.query_string, certs, sp.allow_sha1)
        return verify_posted(root, certs, sp.allow_sha1)
    except SignatureInvalid as exc:
        raise _refuse("The logout message's signature is not valid.", f"bad signature: {exc.reason}",
                      sp.entity_id) from exc


def _require_signature(sp: RegisteredSp, signed: bool) -> None:
    # An SP that publishes a signing key signs its logout messages; an unsigned one is a forgery attempt
    # (anyone can make a browser GET /saml/slo and end a user's session otherwise).
    if not signed and (providers.metadata_of(sp).signing_certs or sp.require_signed_requests):
        raise _refuse("The logout message must be signed.", "unsigned logout message", sp.entity_id)


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed


def _check_common(msg: Any, sp: RegisteredSp, signed: bool) -> None:
    """Version, ID, Destination (which a signed message must carry: SAML Bindings 3.4.5.2, 3.5.5.2) and
    IssueInstant, shared by requests and responses."""
    _check_addressed(msg, sp, signed)
    _check_fresh(msg, sp)


def _check_addressed(msg: Any, sp: RegisteredSp, signed: bool) -> None:
    if msg.version != "2.0":
        raise _refuse("Unsupported SAML version.", "bad version", sp.entity_id)
    if not msg.id or len(msg.id) > MAX_ID_LENGTH:
        raise _refuse("The logout message has no usable ID.", "bad ID", sp.entity_id)
    if msg.destination and msg.destination != slo_url():
        raise _refuse("The logout message was sent to another destination.", "wrong destination", sp.entity_id)
    if signed and not msg.destination:
        raise _refuse("The logout message is signed but does not say where it was sent.",
                      "signed message without Destination", sp.entity_id)


def _check_fresh(msg: Any, sp: RegisteredSp) -> None:
    instant = _instant(msg.issue_instant)
    skew = timedelta(seconds=settings().saml_clock_skew_seconds)
    if instant is None:
        raise _refuse("The logout message has no valid IssueInstant.", "bad IssueInstant", sp.entity_id)
    if abs(now() - instant) > skew:
        raise _refuse("The logout message has expired or comes from the future.", "IssueInstant out of skew",
                      sp.entity_id)


def _replay_namespace(entity_id: str) -> str:
    # The column holds 64 characters and entity IDs are URLs of any length: a digest keeps namespaces apart.
    return "saml-logout:" + hashlib.sha256(entity_id.encode()).hexdigest()[:48]


# -- SP-initiated logout ------------------------------------------------------------------------------------


def _logout_request(inbound: Inbound, root: etree._Element) -> Response:
    sp = _registered(_issuer(root))
    signed = _signed(inbound, root, sp)
    _require_signature(sp, signed)
    msg = _pysaml2(samlp.logout_request_from_string, inbound.xml)
    if msg is None:
        raise _refuse("The LogoutRequest is malformed.", "malformed LogoutRequest", sp.entity_id)
    _check_addressed(msg, sp, signed)
    try:
        # From here the request is the SP's, to us: a refusal is a LogoutResponse saying so to its SLO endpoint
        # (SAML Profiles 4.4.3.4), not a page that leaves the user at the IdP and the SP waiting.
        _check_fresh(msg, sp)
        if msg.not_on_or_after:
            limit = _instant(msg.not_on_or_after)
            if limit is None or now() - timedelta(seconds=settings().saml_clock_skew_seconds) >= limit:
                raise _refuse("The LogoutRequest has expired.", "LogoutRequest expired", sp.entity_id)
        if msg.name_id is None or not (msg.name_id.text or "").strip():
            raise _refuse("The LogoutRequest names no NameID.", "no NameID", sp.entity_id)
        skew = settings().saml_clock_skew_seconds
        keep = timedelta(seconds=2 * skew + settings().saml_assertion_lifetime_seconds)
        if not once.claim(_replay_namespace(sp.entity_id), msg.id, now() + keep):
            raise _refuse("This logout request was already used.", "replayed LogoutRequest", sp.entity_id)
    except LogoutRefused as refused:
        return _refused_to(sp, msg.id, inbound, refused)
    db.session.commit()

    initiator = {
        "sp": sp.entity_id,
        "request_id": msg.id,
        "relay_state": inbound.relay_state,
        "binding": inbound.binding,
    }
    indexes = [(i.text or "").strip() for i in msg.session_index or []]
    name_id = msg.name_id.text.strip()
    found = _find_sessions(sp, name_id, [i for i in indexes if i], signed)
    sso = found[0] if found else None
    if sso is None:
        # Already logged out here (or never): the user is signed out at the IdP, which is what was asked.
        # But an unsigned request that came without our cookie cannot say which session it means; if that
        # subject still has one, it stays, and the SP must hear that the logout was partial.
        results = []
        if not signed and _has_live_session(sp, name_id):
            results = [{"sp": idp_entity_id(), "result": "session not identified (unsigned, no cookie)"}]
        return _answer_only(initiator, results, session_found=False)
    if not signed:
        return _ask_first(sp, sso, initiator)
    chain = _start_chain(sso, initiator, exclude_sp_id=sp.id, reason="saml-slo", also=found[1:])
    return _advance(chain)


def _ask_first(sp: RegisteredSp, sso: SsoSession, initiator: dict[str, Any]) -> Response:
    """An unsigned request from an SP that cannot sign: nothing proves the SP sent it, and any page can send the
    user's browser here with one naming them (SAML Profiles 4.4.4.1 wants the requester authenticated). The user
    confirms first, with a CSRF-checked form, as for an OIDC logout without an ID token hint."""
    pending_id = pending.put(CONFIRM_KIND, {"initiator": initiator, "sp_id": sp.id, "session": sso.id},
                             now() + PENDING_LIFETIME)
    return Response(render_template("saml_logout_confirm.html", sp_name=sp.name or sp.entity_id,
                                    pending_id=pending_id))


def confirm(pending_id: str) -> Response:
    """The user's answer to :func:`_ask_first` (POST, its CSRF token checked by CSRFProtect)."""
    data = pending.get(CONFIRM_KIND, pending_id)
    if data is None or not pending.take(pending_id):
        raise _refuse("This sign-out request has expired or was answered already.", "unknown logout confirmation")
    initiator: dict[str, Any] = data["initiator"]
    sso = current_session()
    if sso is None:  # signed out meanwhile: what was asked
        return _answer_only(initiator, [], session_found=False)
    if request.form.get("answer") != "logout" or sso.id != data["session"]:
        # Stayed signed in (or signed in anew since the request came): the SP hears that the logout was partial.
        return _answer_only(initiator, [{"sp": idp_entity_id(), "result": "the user stayed signed in"}],
                            session_found=True)
    return _advance(_start_chain(sso, initiator, exclude_sp_id=data["sp_id"], reason="saml-slo"))


def _answer_only(initiator: dict[str, Any], results: list[dict[str, str]], *, session_found: bool) -> Response:
    """Answer the SP that asked, with no other SP to notify: no session of ours was ended here."""
    return _finish(_Chain(initiator=initiator, username=None, queue=[], results=results, session_found=session_found))


def _find_sessions(sp: RegisteredSp, name_id: str, indexes: list[str], signed: bool) -> list[SsoSession]:
    """The IdP sessions the request names: the browser's own, else (signed requests only) by NameID and
    SessionIndex; without a SessionIndex, every session of that subject at that SP (SAML Core 3.7.3.2), not
    whichever one a store lists first."""
    sso = current_session()
    if sso is not None and _participant(sso, sp, name_id, indexes) is not None:
        return [sso]
    # An SP posting across sites does not get our SameSite=Lax cookie sent along; a signed request naming
    # the subject we gave that SP (and the session index, if it names one) identifies the session as well.
    return session_state.find_by_name_id(sp.id, name_id, indexes) if signed else []


def _has_live_session(sp: RegisteredSp, name_id: str) -> bool:
    t = now()
    return any(s.expires_at > t for s in session_state.find_by_name_id(sp.id, name_id, []))


def _participant(sso: SsoSession, sp: RegisteredSp, name_id: str, indexes: list[str]) -> Participant | None:
    p = session_state.participant(sso.id, sp.id)
    if p is not None and p.name_id == name_id and (not indexes or p.session_index in indexes):
        return p
    return None


# -- the chain ----------------------------------------------------------------------------------------------


@dataclass
class _Chain:
    """What the logout chain needs to go on, parked as JSON between two browser hops."""

    initiator: dict[str, Any] | None
    username: str | None
    queue: list[dict[str, Any]]
    results: list[dict[str, str]]
    session_found: bool = True
    current: dict[str, str] | None = None
    pending_id: str | None = None
    # IdP-initiated chains only: where the browser goes at the end (validated by whoever started the chain).
    return_to: str | None = None
    # The parked document as this request read it: it is replaced only if nobody has moved the chain on since.
    read: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"initiator": self.initiator, "username": self.username, "queue": self.queue,
                "results": self.results, "session_found": self.session_found, "current": self.current,
                "return_to": self.return_to}

    @classmethod
    def from_pending(cls, pending_id: str, d: dict[str, Any]) -> _Chain:
        return cls(initiator=d.get("initiator"), username=d.get("username"), queue=list(d.get("queue") or []),
                   results=list(d.get("results") or []), session_found=bool(d.get("session_found", True)),
                   current=d.get("current"), pending_id=pending_id, return_to=d.get("return_to"), read=d)


def _start_chain(sso: SsoSession, initiator: dict[str, Any] | None, exclude_sp_id: int | None,
                 reason: str, also: list[SsoSession] | None = None) -> _Chain:
    """End the session (and ``also`` these of the same subject), and queue whom to notify: every SP they had
    reached when they ended."""
    user = db.session.get(User, sso.user_id)
    username = user.username if user is not None else None
    ended = [p for s in [sso, *(also or [])] for p in end_session(s, reason)]
    # One request per SP and subject, in registration order (by SP id), so that every run (and every backend)
    # walks the SPs the same way. An SP in several of the sessions hears once, without a SessionIndex: every
    # session of that subject there (SAML Core 3.7.3.2).
    queue: dict[tuple[int, str], dict[str, Any]] = {}
    for p in sorted(ended, key=lambda p: p.sp_id):
        if p.sp_id == exclude_sp_id:
            continue
        if (p.sp_id, p.name_id) in queue:
            queue[p.sp_id, p.name_id]["session_index"] = None
            continue
        queue[p.sp_id, p.name_id] = {"sp_id": p.sp_id, "name_id": p.name_id, "format": p.name_id_format,
                                     "session_index": p.session_index}
    return _Chain(initiator=initiator, username=username, queue=list(queue.values()), results=[])


def _advance(chain: _Chain) -> Response:
    """Send the browser to the next SP that can be notified, or finish."""
    while chain.queue:
        item = chain.queue.pop(0)
        sp = db.session.get(ServiceProvider, item["sp_id"])
        if sp is None:
            continue  # removed meanwhile: nothing left to log out of
        endpoint = _pick(providers.metadata_of(sp).slo, preferred=REDIRECT)
        if endpoint is None:
            chain.results.append({"sp": sp.entity_id, "result": "no SLO endpoint"})
            continue
        request_id = (build.new_id() if chain.pending_id is None
                      else _hop_id(chain.pending_id, f"{sp.entity_id} {item['name_id']}"))
        xml = _logout_request_xml(request_id, endpoint.location, {**item, "sp": sp.entity_id})
        chain.current = {"sp": sp.entity_id, "request_id": request_id}
        expires_at = now() + PENDING_LIFETIME
        if chain.pending_id is None:
            chain.pending_id = pending.put(PENDING_KIND, chain.to_json(), expires_at)
        elif not pending.replace(PENDING_KIND, chain.pending_id, chain.to_json(), expires_at, read=chain.read or {}):
            # Another copy of the same LogoutResponse got there first. If it sent the browser on to this same
            # request (same SP, same ID), this copy may as well; one that comes late, after the chain moved on
            # further or finished, must not take it back.
            now_at = pending.get(PENDING_KIND, chain.pending_id)
            if now_at is None or (now_at.get("current") or {}).get("request_id") != request_id:
                raise _refuse("This logout has moved on or finished without this answer.",
                              "logout state changed meanwhile", chain.results[-1]["sp"])
        return _send(endpoint.binding, endpoint.location, "SAMLRequest", xml, chain.pending_id)
    return _finish(chain)


def _hop_id(pending_id: str, hop: str) -> str:
    """The ID of a chain's LogoutRequest to an SP after the first: the same in every copy of the answer that moves
    the chain on (a double submit, a retry that reached another instance), so that whichever copy's redirect the
    browser follows, the chain expects that SP's answer to it. Keyed with our secret: nobody can tell it before
    it is sent (the chain's id travels to SPs as RelayState)."""
    return "_" + keyed_digest(f"saml-slo-hop {pending_id} {hop}")[:40]


def _finish(chain: _Chain) -> Response:
    partial = any(r["result"] != SUCCESS for r in chain.results)
    # Audited once: a second copy of the last answer finishes too (its browser may be the one that shows it).
    finished = pending.take(chain.pending_id) if chain.pending_id else True
    initiator = chain.initiator
    if finished:
        audit.record(AuditEvent(
            type="saml.logout", outcome="partial" if partial else "success", username=chain.username,
            sp=initiator["sp"] if initiator else None, client_ip=request.remote_addr,
            details={"initiated_by": "sp" if initiator else "idp", "session_found": chain.session_found,
                     "notified": chain.results},
        ))
    if initiator is None and chain.return_to:
        return Response(status=302, headers={"Location": chain.return_to})
    if initiator is None:
        return Response(render_template("saml_logged_out.html", results=chain.results, partial=partial))
    sp = providers.get(initiator["sp"])
    second = samlp.StatusCode(value=STATUS_PARTIAL) if partial else None
    answered = _answer_sp(sp, initiator["binding"], initiator["request_id"], initiator.get("relay_state"),
                          samlp.Status(status_code=samlp.StatusCode(value=STATUS_SUCCESS, status_code=second)))
    # Nowhere registered to answer to: the page instead.
    return answered or Response(render_template("saml_logged_out.html", results=chain.results, partial=partial))


# -- LogoutResponses coming back from the other SPs ---------------------------------------------------------


def _logout_response(inbound: Inbound, root: etree._Element) -> Response:
    issuer = _issuer(root)
    data = pending.get(PENDING_KIND, inbound.relay_state) if inbound.relay_state else None
    if data is None:
        raise _refuse("This logout response belongs to no logout in progress.", "unknown logout state", issuer)
    chain = _Chain.from_pending(inbound.relay_state or "", data)
    current = chain.current
    msg = _pysaml2(samlp.logout_response_from_string, inbound.xml)
    if msg is None:
        raise _refuse("The LogoutResponse is malformed.", "malformed LogoutResponse", issuer)
    if current is None or current["sp"] != issuer or msg.in_response_to != current["request_id"]:
        raise _refuse("This logout response does not answer our request.", "unexpected LogoutResponse", issuer)
    sp = _registered(issuer)
    chain.current = None
    chain.results.append({"sp": issuer, "result": _response_result(inbound, root, msg, sp)})
    return _advance(chain)


def _response_result(inbound: Inbound, root: etree._Element, msg: Any, sp: RegisteredSp) -> str:
    """What the SP said, as one word for the audit log. A response we cannot trust counts as a failure,
    but does not stop the chain: the user asked to be logged out of the remaining SPs too."""
    try:
        signed = _signed(inbound, root, sp)
        _require_signature(sp, signed)
        _check_common(msg, sp, signed)
    except LogoutRefused as exc:
        return f"refused: {exc.reason}"
    code = msg.status.status_code if msg.status is not None else None
    value = code.value if code is not None else None
    if value == STATUS_SUCCESS:
        return SUCCESS
    return (value or "no status").rsplit(":", 1)[-1]


# -- outgoing messages --------------------------------------------------------------------------------------


def _pick(endpoints: tuple[Endpoint, ...], preferred: str) -> Endpoint | None:
    usable = [e for e in endpoints if e.binding in (REDIRECT, POST)]
    for e in usable:
        if e.binding == preferred:
            return e
    return usable[0] if usable else None


def _logout_request_xml(request_id: str, destination: str, item: dict[str, Any]) -> bytes:
    req = samlp.LogoutRequest(
        id=request_id, version="2.0", issue_instant=build.instant(now()), destination=destination,
        issuer=Issuer(text=idp_entity_id(), format=NAMEID_FORMAT_ENTITY),
        name_id=_name_id(item),
        session_index=[samlp.SessionIndex(text=item["session_index"])] if item.get("session_index") else [],
        not_on_or_after=build.instant(now() + timedelta(seconds=settings().saml_assertion_lifetime_seconds)),
    )
    return bytes(req.to_string(nspair=_NSPAIR))


def _name_id(item: dict[str, Any]) -> NameID:
    """The NameID exactly as the SP got it in its assertion (SPs compare all of it, qualifiers included)."""
    fmt = item["format"] or None
    qualified = fmt in (NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT)
    return NameID(
        text=item["name_id"], format=fmt,
        name_qualifier=idp_entity_id() if qualified else None,
        sp_name_qualifier=item["sp"] if qualified else None,
    )


def _answer_sp(sp: RegisteredSp | None, binding: str, request_id: str, relay_state: str | None,
               status: samlp.Status) -> Response | None:
    """A signed LogoutResponse with ``status`` to the SP's SLO endpoint (its binding as the request's, if it has
    one); None when its metadata lists none: a SAML message goes to no address metadata does not list."""
    endpoint = _pick(providers.metadata_of(sp).slo, preferred=binding) if sp is not None else None
    if endpoint is None:
        return None
    location = endpoint.response_location or endpoint.location
    resp = samlp.LogoutResponse(
        id=build.new_id(), version="2.0", issue_instant=build.instant(now()), destination=location,
        in_response_to=request_id, issuer=Issuer(text=idp_entity_id(), format=NAMEID_FORMAT_ENTITY),
        status=status,
    )
    return _send(endpoint.binding, location, "SAMLResponse", bytes(resp.to_string(nspair=_NSPAIR)), relay_state)


def _refused_to(sp: RegisteredSp, request_id: str, inbound: Inbound, refused: LogoutRefused) -> Response:
    """A LogoutRequest refused (audited already) after it was found to be the SP's own, to us: the refusal goes to
    the SP's SLO endpoint as a LogoutResponse, Requester / RequestDenied; the error page only when its metadata
    lists none."""
    status = samlp.Status(status_code=samlp.StatusCode(
        value=STATUS_REQUESTER, status_code=samlp.StatusCode(value=STATUS_REQUEST_DENIED)),
        status_message=samlp.StatusMessage(text=refused.message))
    answered = _answer_sp(sp, inbound.binding, request_id, inbound.relay_state, status)
    if answered is None:
        raise refused
    return answered


def _send(binding: str, location: str, field: str, xml: bytes, relay_state: str | None) -> Response:
    """Put a signed message on the wire to an endpoint taken from the peer's metadata."""
    key = keystore().ring().active
    if binding == REDIRECT:
        params = [(field, base64.b64encode(_deflate(xml)).decode("ascii"))]
        if relay_state:
            params.append(("RelayState", relay_state))
        query = sign_redirect(urlencode(params), key)
        sep = "&" if "?" in location else "?"
        resp = Response(status=302)
        resp.headers["Location"] = location + sep + query
        return resp
    root = parse(xml)
    sign(root, key)
    return post_form(location, field, etree.tostring(root), relay_state)


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


# -- IdP-initiated (the IdP's own logout page) ---------------------------------------------------------------


def start_idp_logout(sso: SsoSession, reason: str = "user signed out", return_to: str | None = None
                     ) -> Response | None:
    """End ``sso`` and log the user out of its SPs that have SLO endpoints, ending on a "signed out" page,
    or redirecting to ``return_to``: an address the caller has validated, since it is not checked here.

    Returns the first hop of the chain, or None when no SP needs telling (the session is ended either way),
    in which case the caller shows its own signed-out page or goes to ``return_to`` itself.
    """
    chain = _start_chain(sso, initiator=None, exclude_sp_id=None, reason=reason)
    chain.return_to = return_to
    if not chain.queue:
        return None
    return _advance(chain)
