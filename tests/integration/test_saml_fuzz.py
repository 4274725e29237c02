"""Whatever arrives at the SAML endpoints, the answer is a clean refusal or a normal page: never a 500."""

from __future__ import annotations

import base64
import zlib
from urllib.parse import urlencode

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saml_peers import SP_ENTITY_ID, python3_saml_metadata, register_sp

from idp.extensions import db

XML_FRAGMENTS = st.sampled_from([
    b"<samlp:AuthnRequest xmlns:samlp='urn:oasis:names:tc:SAML:2.0:protocol' ID='_a' Version='2.0' "
    b"IssueInstant='2020-01-01T00:00:00Z'><saml:Issuer xmlns:saml='urn:oasis:names:tc:SAML:2.0:assertion'>"
    b"https://sp.example.test/metadata</saml:Issuer></samlp:AuthnRequest>",
    b"<samlp:LogoutRequest xmlns:samlp='urn:oasis:names:tc:SAML:2.0:protocol' ID='_b' Version='2.0'/>",
    b"<samlp:LogoutResponse xmlns:samlp='urn:oasis:names:tc:SAML:2.0:protocol' ID='_c' Version='2.0'/>",
    b"<a/>", b"", b"<?xml version='1.0' encoding='UTF-16'?><a/>", b"<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>",
])
MESSAGES = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
    st.tuples(XML_FRAGMENTS, st.binary(max_size=40)).map(lambda t: base64.b64encode(t[0] + t[1]).decode()),
    st.tuples(XML_FRAGMENTS, st.binary(max_size=40)).map(
        lambda t: base64.b64encode(zlib.compress(t[0] + t[1])[2:-4]).decode()),
)
PARAMS = st.fixed_dictionaries(
    {}, optional={"SAMLRequest": MESSAGES, "SAMLResponse": MESSAGES, "RelayState": st.text(max_size=100),
                  "SigAlg": st.sampled_from(["http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", "x", ""]),
                  "Signature": MESSAGES, "sp": st.one_of(st.just(SP_ENTITY_ID), st.text(max_size=50))},
)


@pytest.fixture
def registered(app: Flask) -> None:
    """An SP the fragments name as issuer, so that input gets past the first check."""
    register_sp(python3_saml_metadata())
    db.session.commit()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/saml/sso", "/saml/slo", "/saml/init"]), params=PARAMS, post=st.booleans())
def test_no_input_makes_a_server_error(
    app: Flask, registered: None, path: str, params: dict[str, str], post: bool
) -> None:
    client = app.test_client()
    resp = client.post(path, data=params) if post else client.get(path + "?" + urlencode(params))
    assert resp.status_code in (200, 302, 303, 400, 404, 405, 413), (resp.status_code, params)
    assert b"Traceback" not in resp.data
    db.session.rollback()
