"""The Responses we build from parsed templates: an optional attribute left out is absent (never empty), and
one answer's values never reach the next (the templates are copied, not filled in place)."""

from __future__ import annotations

from lxml import etree
from saml2 import samlp

from idp.saml import build
from idp.saml.build import SAML, SAMLP


def _success(*, name_qualifier: str | None, in_response_to: str | None, session_end: str | None,
             attributes: list[build.Attribute]) -> etree._Element:
    root = build.response(response_id="_r1", issue_instant="2030-01-01T00:00:00Z", destination="https://sp/acs",
                          in_response_to=in_response_to, issuer="https://idp/md",
                          status=(samlp.STATUS_SUCCESS, None, None))
    build.assertion(
        root, assertion_id="_a1", issue_instant="2030-01-01T00:00:00Z", issuer="https://idp/md",
        subject=build.Subject("alice", "fmt", name_qualifier, None, "https://sp/acs", "2030-01-01T00:05:00Z",
                              in_response_to),
        not_before="2029-12-31T23:59:00Z", audience="https://sp/md", authn_instant="2029-12-31T23:00:00Z",
        session_index="_s1", session_not_on_or_after=session_end, authn_context="ctx", attributes=attributes)
    # Through text, as an SP receives it.
    return etree.fromstring(etree.tostring(root))


def test_optional_attributes_are_present_when_given_and_absent_when_not_whatever_came_before() -> None:
    full = _success(name_qualifier="https://idp/md", in_response_to="_q1", session_end="2030-01-01T08:00:00Z",
                    attributes=[build.Attribute("mail", "basic", "Mail", ("a@example.test",))])
    bare = _success(name_qualifier=None, in_response_to=None, session_end=None, attributes=[])
    name_id, data, statement = (f"{{{SAML}}}NameID", f"{{{SAML}}}SubjectConfirmationData",
                                f"{{{SAML}}}AuthnStatement")
    assert full.get("InResponseTo") == "_q1"
    assert full.find(f".//{name_id}").attrib == {"NameQualifier": "https://idp/md", "Format": "fmt"}
    assert full.find(f".//{data}").get("InResponseTo") == "_q1"
    assert full.find(f".//{statement}").get("SessionNotOnOrAfter") == "2030-01-01T08:00:00Z"
    assert [a.get("Name") for a in full.iter(f"{{{SAML}}}Attribute")] == ["mail"]
    assert "InResponseTo" not in bare.attrib
    assert bare.find(f".//{name_id}").attrib == {"Format": "fmt"}
    assert "InResponseTo" not in bare.find(f".//{data}").attrib
    assert "SessionNotOnOrAfter" not in bare.find(f".//{statement}").attrib
    assert bare.find(f".//{{{SAML}}}AttributeStatement") is None
    # Each namespace declared once, on the Response: the copied assertion declares none again.
    assert etree.tostring(full).count(b'xmlns:saml="') == 1


def test_an_error_response_carries_its_codes_and_message_and_the_next_success_none_of_them() -> None:
    error = build.response(response_id="_r2", issue_instant="2030-01-01T00:00:00Z", destination="https://sp/acs",
                           in_response_to="_q2", issuer="https://idp/md",
                           status=(samlp.STATUS_RESPONDER, samlp.STATUS_REQUEST_DENIED, "not <yours>"))
    code = error.find(f"{{{SAMLP}}}Status/{{{SAMLP}}}StatusCode")
    assert code is not None and code.get("Value") == samlp.STATUS_RESPONDER
    assert [c.get("Value") for c in code] == [samlp.STATUS_REQUEST_DENIED]
    assert error.findtext(f"{{{SAMLP}}}Status/{{{SAMLP}}}StatusMessage") == "not <yours>"
    success = _success(name_qualifier=None, in_response_to="_q3", session_end=None, attributes=[])
    status = success.find(f"{{{SAMLP}}}Status")
    assert status is not None and len(status) == 1 and len(status[0]) == 0
    assert status[0].get("Value") == samlp.STATUS_SUCCESS
