"""The XML of the Responses we issue, built with lxml directly.

Building pysaml2's objects, serialising them and parsing the text back for signing cost more than the two RSA
signatures; the elements here are the same (names, attributes, order, the ``saml``/``samlp`` prefixes, typed
attribute values), made in one pass.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from lxml import etree
from saml2 import saml, samlp

SAML = saml.NAMESPACE
SAMLP = samlp.NAMESPACE
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
_XS = "http://www.w3.org/2001/XMLSchema"
_NSMAP = {"saml": SAML, "samlp": SAMLP, "xsi": _XSI}

@dataclass(frozen=True)
class Attribute:
    name: str
    name_format: str
    friendly_name: str | None
    values: tuple[str, ...]


@dataclass(frozen=True)
class Subject:
    """The NameID and its bearer confirmation."""

    name_id: str
    name_id_format: str
    name_qualifier: str | None
    sp_name_qualifier: str | None
    recipient: str
    not_on_or_after: str
    in_response_to: str | None


def new_id() -> str:
    """A fresh ID for a message or an assertion: an NCName (IDs must not start with a digit)."""
    return "_" + secrets.token_hex(20)


def instant(value: datetime) -> str:
    """A UTC time as SAML writes it (xs:dateTime, "Z"); isoformat is several times cheaper than strftime."""
    return value.isoformat(timespec="seconds")[:19] + "Z"


def _sub(parent: etree._Element, tag: str, attrs: dict[str, str | None] | None = None, text: str | None = None
         ) -> etree._Element:
    el = etree.SubElement(parent, tag, {k: v for k, v in (attrs or {}).items() if v is not None})
    if text is not None:
        el.text = text
    return el


def _issuer(parent: etree._Element, issuer: str) -> None:
    _sub(parent, f"{{{SAML}}}Issuer", {"Format": saml.NAMEID_FORMAT_ENTITY}, issuer)


def response(*, response_id: str, issue_instant: str, destination: str, in_response_to: str | None, issuer: str,
             status: tuple[str, str | None, str | None]) -> etree._Element:
    """A samlp:Response with its Issuer and Status (top-level code, second-level code, message)."""
    root = etree.Element(f"{{{SAMLP}}}Response", nsmap=_NSMAP)
    for k, v in (("ID", response_id), ("InResponseTo", in_response_to), ("Version", "2.0"),
                 ("IssueInstant", issue_instant), ("Destination", destination)):
        if v is not None:
            root.set(k, v)
    _issuer(root, issuer)
    top, second, message = status
    status_el = _sub(root, f"{{{SAMLP}}}Status")
    code = _sub(status_el, f"{{{SAMLP}}}StatusCode", {"Value": top})
    if second:
        _sub(code, f"{{{SAMLP}}}StatusCode", {"Value": second})
    if message:
        _sub(status_el, f"{{{SAMLP}}}StatusMessage", text=message)
    return root


def assertion(parent: etree._Element, *, assertion_id: str, issue_instant: str, issuer: str, subject: Subject,
              not_before: str, audience: str, authn_instant: str, session_index: str,
              session_not_on_or_after: str | None, authn_context: str, attributes: Iterable[Attribute]
              ) -> etree._Element:
    """A saml:Assertion appended to ``parent`` (the Response)."""
    a = _sub(parent, f"{{{SAML}}}Assertion", {"Version": "2.0", "ID": assertion_id, "IssueInstant": issue_instant})
    _issuer(a, issuer)
    subj = _sub(a, f"{{{SAML}}}Subject")
    _sub(subj, f"{{{SAML}}}NameID", {"NameQualifier": subject.name_qualifier,
                                     "SPNameQualifier": subject.sp_name_qualifier,
                                     "Format": subject.name_id_format}, subject.name_id)
    confirmation = _sub(subj, f"{{{SAML}}}SubjectConfirmation", {"Method": saml.SCM_BEARER})
    _sub(confirmation, f"{{{SAML}}}SubjectConfirmationData", {
        "NotOnOrAfter": subject.not_on_or_after, "Recipient": subject.recipient,
        "InResponseTo": subject.in_response_to})
    conditions = _sub(a, f"{{{SAML}}}Conditions", {"NotBefore": not_before,
                                                   "NotOnOrAfter": subject.not_on_or_after})
    _sub(_sub(conditions, f"{{{SAML}}}AudienceRestriction"), f"{{{SAML}}}Audience", text=audience)
    statement = _sub(a, f"{{{SAML}}}AuthnStatement", {"AuthnInstant": authn_instant, "SessionIndex": session_index,
                                                     "SessionNotOnOrAfter": session_not_on_or_after})
    _sub(_sub(statement, f"{{{SAML}}}AuthnContext"), f"{{{SAML}}}AuthnContextClassRef", text=authn_context)
    released = list(attributes)
    if released:
        attr_statement = _sub(a, f"{{{SAML}}}AttributeStatement")
        for attr in released:
            el = _sub(attr_statement, f"{{{SAML}}}Attribute", {"Name": attr.name, "NameFormat": attr.name_format,
                                                              "FriendlyName": attr.friendly_name})
            for value in attr.values:
                # Typed as xs:string, each value declaring the xs prefix its type names (as pysaml2 wrote it).
                v = etree.SubElement(el, f"{{{SAML}}}AttributeValue", {f"{{{_XSI}}}type": "xs:string"},
                                     nsmap={"xs": _XS})
                v.text = value
    return a
