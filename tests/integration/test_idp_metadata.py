"""The IdP's metadata at /saml/metadata, as two SP libraries read it."""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from lxml import etree
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import Config
from saml2.mdstore import MetadataStore

from idp.runtime import keystore
from idp.saml.metadata import _schema, idp_metadata_xml

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
FORMATS = [
    "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
    "urn:oasis:names:tc:SAML:2.0:nameid-format:transient",
    "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified",
]


def fetch(client: FlaskClient) -> bytes:
    resp = client.get("/saml/metadata")
    assert resp.status_code == 200
    assert resp.mimetype == "application/samlmetadata+xml"
    return resp.data


def test_python3_saml_reads_our_metadata(client: FlaskClient, app: Flask) -> None:
    base = app.extensions["idp.settings"].base
    parsed = OneLogin_Saml2_IdPMetadataParser.parse(fetch(client).decode())
    idp = parsed["idp"]
    assert idp["entityId"] == base + "/saml/metadata"
    assert idp["singleSignOnService"]["url"] == base + "/saml/sso"
    assert idp["singleLogoutService"]["url"] == base + "/saml/slo"
    assert "".join(idp["x509cert"].split()) == keystore().ring().active.cert_b64
    post = OneLogin_Saml2_IdPMetadataParser.parse(
        fetch(client).decode(), required_sso_binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")
    assert post["idp"]["singleSignOnService"]["binding"].endswith("HTTP-POST")


def test_pysaml2_reads_our_metadata(client: FlaskClient, app: Flask) -> None:
    base = app.extensions["idp.settings"].base
    store = MetadataStore(attrc=None, config=Config())
    store.load("inline", fetch(client).decode())
    entity_id = base + "/saml/metadata"
    assert list(store.identity_providers()) == [entity_id]
    for binding in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST):
        assert [s["location"] for s in store.single_sign_on_service(entity_id, binding)] == [base + "/saml/sso"]
        assert [s["location"] for s in store.single_logout_service(entity_id, binding, "idpsso")] == [
            base + "/saml/slo"]
    certs = store.certs(entity_id, "idpsso", "signing")
    assert ["".join(c[1].split()) for c in certs] == [keystore().ring().active.cert_b64]
    descriptor = store[entity_id]["idpsso_descriptor"][0]
    assert [f["text"] for f in descriptor["name_id_format"]] == FORMATS
    assert descriptor["want_authn_requests_signed"] == "false"


def test_our_metadata_is_schema_valid_and_cached(client: FlaskClient) -> None:
    root = etree.fromstring(fetch(client))
    assert _schema().validate(root), _schema().error_log
    idp = root.find(f"{{{MD}}}IDPSSODescriptor")
    assert idp.get("protocolSupportEnumeration") == "urn:oasis:names:tc:SAML:2.0:protocol"
    assert [k.get("use") for k in idp.iterfind(f"{{{MD}}}KeyDescriptor")] == ["signing"]
    # Built once per key ring, not per request.
    assert idp_metadata_xml() is idp_metadata_xml()
