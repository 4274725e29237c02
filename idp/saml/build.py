"""The XML of the Responses we issue, built with lxml directly.

Building pysaml2's objects, serialising them and parsing the text back for signing cost more than the two RSA
signatures; the elements here are the same (names, attributes, order, the ``saml``/``samlp`` prefixes, typed
attribute values), copied from templates parsed once and filled in.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from lxml import etree
from saml2 import saml, samlp

from idp.saml.xmlsafe import xml_text

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


_PREFIXES = " ".join(f'xmlns:{k}="{v}"' for k, v in _NSMAP.items())
# Parsed once, deep-copied and filled in for each answer: one C call instead of an element and a namespace look-up
# per node. Attributes are written in the order they are output (None leaves one out, see _fill).
_RESPONSE = etree.fromstring(
    f'<samlp:Response {_PREFIXES} ID="" InResponseTo="" Version="2.0" IssueInstant="" Destination="">'
    f'<saml:Issuer Format="{saml.NAMEID_FORMAT_ENTITY}"/><samlp:Status><samlp:StatusCode Value=""/></samlp:Status>'
    "</samlp:Response>"
)


def _template(xml: str) -> etree._Element:
    """An element to append to a Response, parsed inside one that declares the same prefixes: a copy appended
    there declares none of them again (lxml drops the declarations its new parent already makes)."""
    return etree.fromstring(f"<holder {_PREFIXES}>{xml}</holder>")[0]


_ASSERTION = _template(
    '<saml:Assertion Version="2.0" ID="" IssueInstant="">'
    f'<saml:Issuer Format="{saml.NAMEID_FORMAT_ENTITY}"/>'
    '<saml:Subject><saml:NameID NameQualifier="" SPNameQualifier="" Format=""/>'
    f'<saml:SubjectConfirmation Method="{saml.SCM_BEARER}">'
    '<saml:SubjectConfirmationData NotOnOrAfter="" Recipient="" InResponseTo=""/></saml:SubjectConfirmation>'
    "</saml:Subject>"
    '<saml:Conditions NotBefore="" NotOnOrAfter=""><saml:AudienceRestriction><saml:Audience/>'
    "</saml:AudienceRestriction></saml:Conditions>"
    '<saml:AuthnStatement AuthnInstant="" SessionIndex="" SessionNotOnOrAfter="">'
    "<saml:AuthnContext><saml:AuthnContextClassRef/></saml:AuthnContext></saml:AuthnStatement>"
    "</saml:Assertion>"
)


def _fill(el: etree._Element, **attrs: str | None) -> None:
    """Set a template's attributes; those given None are left out."""
    for name, value in attrs.items():
        if value is None:
            del el.attrib[name]
        else:
            el.set(name, value)


def response(*, response_id: str, issue_instant: str, destination: str, in_response_to: str | None, issuer: str,
             status: tuple[str, str | None, str | None]) -> etree._Element:
    """A samlp:Response with its Issuer and Status (top-level code, second-level code, message)."""
    root = copy.deepcopy(_RESPONSE)
    _fill(root, ID=response_id, InResponseTo=in_response_to, IssueInstant=issue_instant, Destination=destination)
    issuer_el, status_el = root
    issuer_el.text = issuer
    top, second, message = status
    code = status_el[0]
    code.set("Value", top)
    if second:
        etree.SubElement(code, f"{{{SAMLP}}}StatusCode", {"Value": second})
    if message:
        etree.SubElement(status_el, f"{{{SAMLP}}}StatusMessage").text = message
    return root


def assertion(parent: etree._Element, *, assertion_id: str, issue_instant: str, issuer: str, subject: Subject,
              not_before: str, audience: str, authn_instant: str, session_index: str,
              session_not_on_or_after: str | None, authn_context: str, attributes: Iterable[Attribute]
              ) -> etree._Element:
    """A saml:Assertion appended to ``parent`` (the Response)."""
    a = copy.deepcopy(_ASSERTION)
    parent.append(a)
    _fill(a, ID=assertion_id, IssueInstant=issue_instant)
    issuer_el, subj, conditions, statement = a
    issuer_el.text = issuer
    name_id, confirmation = subj
    _fill(name_id, NameQualifier=subject.name_qualifier, SPNameQualifier=subject.sp_name_qualifier,
          Format=subject.name_id_format)
    name_id.text = xml_text(subject.name_id)  # an email NameID comes from a directory too
    _fill(confirmation[0], NotOnOrAfter=subject.not_on_or_after, Recipient=subject.recipient,
          InResponseTo=subject.in_response_to)
    _fill(conditions, NotBefore=not_before, NotOnOrAfter=subject.not_on_or_after)
    conditions[0][0].text = audience
    _fill(statement, AuthnInstant=authn_instant, SessionIndex=session_index,
          SessionNotOnOrAfter=session_not_on_or_after)
    statement[0][0].text = authn_context
    released = list(attributes)
    if released:
        attr_statement = etree.SubElement(a, f"{{{SAML}}}AttributeStatement")
        for attr in released:
            # Names are checked when a release map is stored; a map stored before that, and every value (a
            # directory's attribute), may still hold a character XML cannot carry: dropped, not a failed sign-in.
            el = etree.SubElement(attr_statement, f"{{{SAML}}}Attribute", {"Name": xml_text(attr.name),
                                                                           "NameFormat": attr.name_format})
            if attr.friendly_name is not None:
                el.set("FriendlyName", xml_text(attr.friendly_name))
            for value in attr.values:
                # Typed as xs:string, each value declaring the xs prefix its type names (as pysaml2 wrote it).
                v = etree.SubElement(el, f"{{{SAML}}}AttributeValue", {f"{{{_XSI}}}type": "xs:string"},
                                     nsmap={"xs": _XS})
                v.text = xml_text(value)
    return a
