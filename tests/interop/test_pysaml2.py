"""pysaml2 as a second service provider: an encrypted assertion it decrypts, and Single Logout round trips
with python3-saml as the other SP of the same browser session. Both SPs are real libraries, not our code;
everything goes over real HTTP to the live server, through the real login form."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import lxml.html
import pytest
import requests
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from pysaml2_sp import Browser, Pysaml2Sp, decoded, p3_request, python3_saml_sign_in
from saml2 import BINDING_HTTP_POST
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID
from saml2.sigver import SignatureError
from saml_peers import (
    SP_ENTITY_ID,
    SP_SLO_URL,
    cert_b64,
    python3_saml_metadata,
    python3_saml_settings,
    register_sp,
)

from idp import audit
from idp.authn import directory
from idp.extensions import db
from idp.keys import generate_key_pair

PASSWORD = "correct horse battery staple"
SUCCESS = "urn:oasis:names:tc:SAML:2.0:status:Success"
P3_SECURITY = {
    "logoutRequestSigned": True,
    "logoutResponseSigned": True,
    "wantMessagesSigned": True,
}


@pytest.fixture
def idp(live_server: Any) -> Any:
    directory.create_group("admins", actor="test")
    directory.create_group("engineering", actor="test")
    directory.create_user("alice", password=PASSWORD, actor="test", groups=["engineering", "admins"],
                          email="alice@example.test", given_name="Alice", family_name="Liddell")
    db.session.commit()
    return live_server


def register_pysaml2(idp: Any, workdir: Path, encrypt: bool) -> Pysaml2Sp:
    sp = Pysaml2Sp(workdir)
    register_sp(sp.metadata_xml(), encrypt_assertion=encrypt)
    db.session.commit()
    sp.connect(requests.get(idp.url + "/saml/metadata", timeout=10).content)
    return sp


@pytest.fixture
def pysaml2_sp(idp: Any, tmp_path: Path) -> Pysaml2Sp:
    """Registered with assertion encryption on (its metadata has an encryption certificate)."""
    return register_pysaml2(idp, tmp_path / "pysaml2-sp", encrypt=True)


@pytest.fixture
def pysaml2_sp_plain(idp: Any, tmp_path: Path) -> Pysaml2Sp:
    """Without encryption: the logout tests do not depend on it."""
    return register_pysaml2(idp, tmp_path / "pysaml2-sp", encrypt=False)


@pytest.fixture
def p3_settings(idp: Any) -> dict[str, Any]:
    register_sp(python3_saml_metadata(security=P3_SECURITY))
    db.session.commit()
    metadata = requests.get(idp.url + "/saml/metadata", timeout=10).content
    return python3_saml_settings(metadata, security=P3_SECURITY)


def sign_in_pysaml2(browser: Browser, sp: Pysaml2Sp, relay_state: str = "/pysaml2/home") -> Any:
    req_id, url = sp.login_url(relay_state)
    hop = browser.get(url)
    assert hop.destination == sp.acs_url, hop.response.text[:500]
    assert hop.form_fields is not None and hop.form_fields.get("RelayState") == relay_state
    return sp.accept_response(hop.form_fields["SAMLResponse"], {req_id: relay_state}), hop


def test_pysaml2_decrypts_the_encrypted_signed_assertion(idp: Any, pysaml2_sp: Pysaml2Sp) -> None:
    browser = Browser(idp.url, "alice", PASSWORD)
    authn, hop = sign_in_pysaml2(browser, pysaml2_sp)
    assert hop.asked_password

    # On the wire the assertion is encrypted: nothing of the user is readable without the SP's key.
    raw = base64.b64decode(hop.form_fields["SAMLResponse"])
    assert b"EncryptedAssertion" in raw
    assert b"alice" not in raw and b"engineering" not in raw

    # pysaml2 decrypted it with its key and checked both signatures against our metadata certificate.
    assert authn.assertion.signature is not None
    assert authn.response.signature is not None
    name_id = authn.name_id
    assert name_id.format == NAMEID_FORMAT_PERSISTENT
    assert name_id.text not in ("alice", "alice@example.test") and len(name_id.text) >= 32
    assert authn.ava["groups"] == ["admins", "engineering"]
    assert authn.ava["email"] == ["alice@example.test"]
    assert authn.session_info()["session_index"]

    # The same user at the same SP gets the same persistent identifier next time.
    again, hop = sign_in_pysaml2(browser, pysaml2_sp)
    assert not hop.asked_password
    assert again.name_id.text == name_id.text


def test_pysaml2_refuses_our_response_when_it_trusts_another_idp_key(
    idp: Any, pysaml2_sp_plain: Pysaml2Sp, tmp_path: Path
) -> None:
    """The signature checks above are real: the same SP trusting a different IdP certificate refuses us."""
    metadata = requests.get(idp.url + "/saml/metadata", timeout=10).content
    ours = idp.app.extensions["idp.keys"].ring().active.cert_b64
    assert ours.encode() in metadata
    impostor = Pysaml2Sp(tmp_path / "impostor")  # same entity ID and keys as the registered SP
    impostor.connect(metadata.replace(ours.encode(), cert_b64(generate_key_pair("another idp")[1]).encode()))
    browser = Browser(idp.url, "alice", PASSWORD)
    req_id, url = impostor.login_url("/x")
    hop = browser.get(url)
    assert hop.destination == impostor.acs_url
    with pytest.raises(SignatureError):
        impostor.accept_response(hop.form_fields["SAMLResponse"], {req_id: "/x"})


def test_single_logout_started_by_pysaml2_reaches_python3_saml(
    idp: Any, pysaml2_sp_plain: Pysaml2Sp, p3_settings: dict[str, Any]
) -> None:
    pysaml2_sp = pysaml2_sp_plain
    browser = Browser(idp.url, "alice", PASSWORD)
    p3 = python3_saml_sign_in(browser, p3_settings)
    authn, hop = sign_in_pysaml2(browser, pysaml2_sp)
    assert not hop.asked_password  # one IdP session, two SPs
    name_id = authn.name_id
    assert pysaml2_sp.is_logged_in(name_id)

    # pysaml2 starts logout on the Redirect binding; the IdP sends the browser on to python3-saml first.
    hop = browser.get(pysaml2_sp.logout_url(name_id))
    assert hop.destination == SP_SLO_URL, hop.response.text[:500]
    at_p3 = OneLogin_Saml2_Auth(p3_request(hop.redirect), p3_settings)
    back = at_p3.process_slo(keep_local_session=True)
    assert at_p3.get_errors() == [], at_p3.get_last_error_reason()  # signature, destination, issuer, expiry
    request_xml = at_p3.get_last_request_xml()
    assert OneLogin_Saml2_Logout_Request.get_nameid(request_xml) == p3.get_nameid()
    assert OneLogin_Saml2_Logout_Request.get_session_indexes(request_xml) == [p3.get_session_index()]

    # python3-saml's signed LogoutResponse comes back; the IdP answers pysaml2.
    hop = browser.get(back)
    assert hop.destination == pysaml2_sp.slo_url, hop.response.text[:500]
    message = hop.message
    assert message.relay_state  # pysaml2's own RelayState, carried back
    response = pysaml2_sp.accept_logout_response(message)
    assert response.response.status.status_code.value == SUCCESS
    assert response.response.status.status_code.status_code is None  # not PartialLogout
    pysaml2_sp.client.handle_logout_response(response)
    assert not pysaml2_sp.is_logged_in(name_id)

    # The IdP session is gone: signing in anywhere asks for the password again.
    browser.password = None
    _, url = pysaml2_sp.login_url()
    assert browser.get(url).asked_password

    db.session.expire_all()
    (event,) = audit.events(type="saml.logout")
    assert event.outcome == "success" and event.username == "alice" and event.sp == pysaml2_sp.entity_id
    assert event.details["notified"] == [{"sp": SP_ENTITY_ID, "result": "success"}]


def test_single_logout_started_by_python3_saml_reaches_pysaml2(
    idp: Any, pysaml2_sp_plain: Pysaml2Sp, p3_settings: dict[str, Any]
) -> None:
    pysaml2_sp = pysaml2_sp_plain
    browser = Browser(idp.url, "alice", PASSWORD)
    authn, _ = sign_in_pysaml2(browser, pysaml2_sp)
    p3 = python3_saml_sign_in(browser, p3_settings)
    name_id: NameID = authn.name_id

    start = OneLogin_Saml2_Auth(p3_request(SP_SLO_URL), p3_settings)
    url = start.logout(return_to="https://sp.example.test/bye", name_id=p3.get_nameid(),
                       session_index=p3.get_session_index(), name_id_format=p3.get_nameid_format())
    hop = browser.get(url)

    # pysaml2 gets a signed LogoutRequest naming the user exactly as its assertion did.
    assert hop.destination == pysaml2_sp.slo_url, hop.response.text[:500]
    message = hop.message
    pysaml2_sp.verify_redirect_signature(message)
    assert b"SessionIndex" in decoded(message)
    info = pysaml2_sp.answer_logout_request(message, name_id)
    assert not pysaml2_sp.is_logged_in(name_id)  # pysaml2 matched the NameID and logged the user out
    back = dict(info["headers"])["Location"]

    hop = browser.get(back)
    assert hop.destination == SP_SLO_URL, hop.response.text[:500]
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), p3_settings)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == [], done.get_last_error_reason()
    assert parse_qs(urlsplit(hop.redirect).query)["RelayState"] == ["https://sp.example.test/bye"]

    db.session.expire_all()
    (event,) = audit.events(type="saml.logout")
    assert event.details["notified"] == [{"sp": pysaml2_sp.entity_id, "result": "success"}]


def test_single_logout_over_http_post_with_an_enveloped_signature(idp: Any, pysaml2_sp_plain: Pysaml2Sp) -> None:
    sp = pysaml2_sp_plain
    browser = Browser(idp.url, "alice", PASSWORD)
    authn, _ = sign_in_pysaml2(browser, sp)

    action, fields = sp.logout_form(authn.name_id)
    assert action == idp.url + "/saml/slo"
    hop = browser.post(action, fields)

    # No other SP to tell: the answer comes at once, on the binding the request used, signed in the XML.
    assert hop.destination == sp.slo_url, hop.response.text[:500]
    message = hop.message
    assert message.binding == BINDING_HTTP_POST
    assert b"<ds:Signature" in decoded(message)
    response = sp.accept_logout_response(message)
    assert response.response.status.status_code.value == SUCCESS
    assert response.response.signature is not None
    browser.password = None
    assert browser.get(sp.login_url()[1]).asked_password


def test_idp_initiated_logout_visits_every_sp_and_ends_on_the_signed_out_page(
    idp: Any, pysaml2_sp_plain: Pysaml2Sp, p3_settings: dict[str, Any]
) -> None:
    sp = pysaml2_sp_plain
    browser = Browser(idp.url, "alice", PASSWORD)
    authn, _ = sign_in_pysaml2(browser, sp)
    p3 = python3_saml_sign_in(browser, p3_settings)

    # The IdP's own logout page, as a user would use it: the confirmation form, then its POST.
    confirm = browser.session.get(idp.url + "/logout", timeout=30)
    token = lxml.html.fromstring(confirm.text).xpath("//input[@name='csrf_token']/@value")[0]
    hop = browser.post(idp.url + "/logout", {"csrf_token": token})
    # First SP in sign-in order: pysaml2 gets a LogoutRequest it accepts for this user.
    assert hop.destination == sp.slo_url, hop.response.text[:500]
    sp.verify_redirect_signature(hop.message)
    back = dict(sp.answer_logout_request(hop.message, authn.name_id)["headers"])["Location"]
    assert not sp.is_logged_in(authn.name_id)

    hop = browser.get(back)
    assert hop.destination == SP_SLO_URL
    at_p3 = OneLogin_Saml2_Auth(p3_request(hop.redirect), p3_settings)
    back = at_p3.process_slo(keep_local_session=True)
    assert at_p3.get_errors() == [], at_p3.get_last_error_reason()
    assert OneLogin_Saml2_Logout_Request.get_nameid(at_p3.get_last_request_xml()) == p3.get_nameid()

    hop = browser.get(back)
    assert hop.redirect is None and hop.response.status_code == 200
    assert "You are signed out" in hop.response.text
    browser.password = None
    assert browser.get(sp.login_url()[1]).asked_password
    db.session.expire_all()
    (event,) = audit.events(type="saml.logout")
    assert event.details["initiated_by"] == "idp"
    assert event.details["notified"] == [
        {"sp": sp.entity_id, "result": "success"}, {"sp": SP_ENTITY_ID, "result": "success"},
    ]
