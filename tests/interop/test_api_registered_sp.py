"""An SP registered and assigned through the admin API is a real, usable SP: a python3-saml SP signs users in
through it, over HTTP, with nothing set up behind the API's back."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import requests
from admin_api import bearer
from conftest import LiveServer
from helpers import make_user
from saml_peers import (
    ATTRIBUTE_MAP,
    OneLoginSp,
    idp_metadata,
    is_login_page,
    read_post_form,
    sp_keys,
    submit_login,
)

PASSWORD = "correct horse battery"
WIKI = "https://wiki.example.test"


@pytest.fixture
def admin(live_server: LiveServer) -> requests.Session:
    """An HTTP session carrying a write token, as a ticketing system would."""
    make_user("alice", PASSWORD, groups=["engineers"], email="alice@example.test", display_name="Alice")
    make_user("bob", PASSWORD, groups=["finance"])
    http = requests.Session()
    http.headers.update(bearer("write", name="ticketing"))
    return http


def api(http: requests.Session, idp: LiveServer, path: str, body: dict[str, Any]) -> Any:
    resp = http.post(f"{idp.url}/api/v1{path}", json=body, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()


def sign_in(sp: OneLoginSp, username: str) -> requests.Response:
    http = requests.Session()
    url, _ = sp.redirect_login(f"{WIKI}/after")
    page = http.get(url, timeout=10)
    assert is_login_page(page)
    return submit_login(http, page, username, PASSWORD)


def test_an_sp_registered_from_its_metadata_and_assigned_to_a_group_signs_its_members_in(
    live_server: LiveServer, admin: requests.Session,
) -> None:
    sp = OneLoginSp(idp_metadata(live_server.url), entity_id=f"{WIKI}/metadata", acs_url=f"{WIKI}/acs",
                    nameid_format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress")
    api(admin, live_server, "/service-providers", {"metadata_xml": sp.metadata().decode(), "name": "Wiki",
                                                   "nameid_format": "email", "attribute_map": ATTRIBUTE_MAP})
    assert sign_in(sp, "alice").status_code == 403  # registered closed: nobody is assigned yet

    api(admin, live_server, "/app-assignments", {"app": "Wiki", "principal": "group:engineers"})
    url, request_id = sp.redirect_login(f"{WIKI}/after")
    http = requests.Session()
    page = submit_login(http, http.get(url, timeout=10), "alice", PASSWORD)
    auth = sp.process_response(read_post_form(page.text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.get_nameid() == "alice@example.test"
    assert auth.get_attributes()["groups"] == ["engineers"]
    assert auth.get_attributes()["displayName"] == ["Alice"]

    page = sign_in(sp, "bob")
    assert page.status_code == 403 and "saml-post" not in page.text


def test_an_sp_registered_from_fields_gets_signed_requests_checked_and_assertions_encrypted(
    live_server: LiveServer, admin: requests.Session,
) -> None:
    """The metadata the API renders from an entity ID, an ACS URL and a certificate carries the key that
    checks the SP's signed AuthnRequests and encrypts its assertions."""
    security = {"authnRequestsSigned": True, "wantAssertionsEncrypted": True}
    sp = OneLoginSp(idp_metadata(live_server.url), entity_id=f"{WIKI}/metadata", acs_url=f"{WIKI}/acs",
                    security=security)
    api(admin, live_server, "/service-providers", {
        "entity_id": f"{WIKI}/metadata", "acs_urls": [f"{WIKI}/acs"], "certificate": sp_keys()[1].decode(),
        "require_signed_requests": True, "encrypt_assertion": True, "open_to_all": True,
        "attribute_map": ATTRIBUTE_MAP,
    })

    url, request_id = sp.redirect_login(f"{WIKI}/after")
    http = requests.Session()
    page = submit_login(http, http.get(url, timeout=10), "alice", PASSWORD)
    form = read_post_form(page.text)
    auth = sp.process_response(form, request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.get_nameid() == "alice" and auth.get_attributes()["mail"] == ["alice@example.test"]
    assert b"EncryptedAssertion" in base64.b64decode(form.fields["SAMLResponse"])

    # The same SP without its signature: the IdP refuses the request, as the API's switch said.
    unsigned = OneLoginSp(idp_metadata(live_server.url), entity_id=f"{WIKI}/metadata", acs_url=f"{WIKI}/acs",
                          security={"wantAssertionsEncrypted": True})
    url, _ = unsigned.redirect_login(f"{WIKI}/after")
    refused = requests.get(url, timeout=10)
    assert refused.status_code == 400 and "sign" in refused.text.lower(), refused.text[:500]
