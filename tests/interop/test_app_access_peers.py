"""Apps are closed unless assigned: the third-party peers' view of idp.access.decide.authorize().

A python3-saml SP (SP- and IdP-initiated sign-in) and authlib's OAuth client (authorize, code exchange,
refresh), plus the RFC 8628 device client, against the running bridge. A user the app is not assigned to
gets a 403 page (SAML), ``access_denied`` at the redirect URI (authorize), ``invalid_grant`` (token
endpoint) or a refused device; each refusal is one ``access.denied`` audit event.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import jwt as pyjwt
import pytest
import requests
from authlib.integrations.base_client import OAuthError
from conftest import Clock, LiveServer
from helpers import make_user
from oidc_peers import (
    DEVICE_GRANT,
    PASSWORD,
    browse,
    device_authorization,
    error_of,
    open_device_page,
    poll,
    post_form,
    register,
    rp,
    start,
)
from saml_peers import OneLoginSp, idp_metadata, is_login_page, read_post_form, register_sp, submit_login

from idp import audit
from idp.access.assignments import assign_app, unassign_app
from idp.extensions import db

NO_ACCESS = "You have not been given access to this"
NOT_ASSIGNED = "not assigned to this application"
WIKI = "https://wiki.example.test"
PAYROLL = "https://payroll.example.test"


@pytest.fixture
def idp(live_server: LiveServer) -> LiveServer:
    make_user("alice", PASSWORD, groups=["engineering"], email="alice@example.test")
    make_user("bob", PASSWORD, groups=["finance"])
    return live_server


def closed_sp(idp: LiveServer, base: str) -> OneLoginSp:
    """A python3-saml SP registered closed (open to nobody until assigned)."""
    sp = OneLoginSp(idp_metadata(idp.url), entity_id=f"{base}/metadata", acs_url=f"{base}/acs")
    register_sp(sp.metadata(), open_to_all=False)
    return sp


def denials() -> list[tuple[str | None, str | None, str | None]]:
    db.session.expire_all()
    return [(e.username, e.sp, e.reason) for e in reversed(audit.events(type="access.denied"))]


def idp_initiated(http: requests.Session, idp: LiveServer, entity_id: str) -> requests.Response:
    return http.get(idp.url + "/saml/init", params={"sp": entity_id, "RelayState": "/home"}, timeout=10)


def assert_refused(page: requests.Response) -> None:
    assert page.status_code == 403, (page.status_code, page.text[:1000])
    assert NO_ACCESS in page.text and "saml-post" not in page.text


# --- SAML ----------------------------------------------------------------------------------------------------


def test_saml_sign_in_is_refused_to_a_user_the_sp_is_not_assigned_to(idp: LiveServer) -> None:
    wiki = closed_sp(idp, WIKI)

    # SP-initiated: the AuthnRequest is good, the password is right, and still no Response reaches the SP.
    http = requests.Session()
    url, _ = wiki.redirect_login("https://wiki.example.test/after")
    page = http.get(url, timeout=10)
    assert is_login_page(page)
    assert_refused(submit_login(http, page, "alice", PASSWORD))

    # IdP-initiated, from another browser: the sign-in is asked for first, then refused the same way.
    other = requests.Session()
    page = idp_initiated(other, idp, wiki.entity_id)
    assert is_login_page(page)
    assert_refused(submit_login(other, page, "alice", PASSWORD))

    assert denials() == [("alice", wiki.entity_id, NOT_ASSIGNED)] * 2
    assert audit.events(type="saml.response") == []


def test_a_passive_request_from_an_unassigned_user_gets_request_denied_at_the_sp(idp: LiveServer) -> None:
    """IsPassive forbids taking over the screen: the SP gets a RequestDenied Response, not our 403 page."""
    wiki = closed_sp(idp, WIKI)
    http = requests.Session()
    assert submit_login(http, http.get(idp.url + "/login", timeout=10), "alice", PASSWORD).status_code == 200
    url, request_id = wiki.redirect_login("https://wiki.example.test/after", is_passive=True)
    form = read_post_form(http.get(url, timeout=10).text)
    auth = wiki.process_response(form, request_id)
    assert not auth.is_authenticated()
    assert "was Responder" in auth.get_last_error_reason()
    assert b'StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:RequestDenied"' in base64.b64decode(
        form.fields["SAMLResponse"])
    assert denials() == [("alice", wiki.entity_id, NOT_ASSIGNED)]


def test_a_forged_idp_initiated_link_to_an_unassigned_sp_is_refused(idp: LiveServer) -> None:
    wiki, payroll = closed_sp(idp, WIKI), closed_sp(idp, PAYROLL)
    assign_app(wiki.entity_id, "group:engineering", actor="test")
    assign_app(payroll.entity_id, "group:finance", actor="test")

    http = requests.Session()
    page = submit_login(http, idp_initiated(http, idp, wiki.entity_id), "alice", PASSWORD)
    auth = wiki.process_response(read_post_form(page.text), None)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.get_nameid() == "alice"

    # Signed in, alice edits the link to name the SP her group was not given.
    assert_refused(idp_initiated(http, idp, payroll.entity_id))
    assert denials() == [("alice", payroll.entity_id, NOT_ASSIGNED)]
    assert [e.sp for e in audit.events(type="saml.response")] == [wiki.entity_id]


def test_a_group_assignment_opens_the_sp_until_it_ends(idp: LiveServer, frozen_clock: Clock) -> None:
    wiki = closed_sp(idp, WIKI)
    http = requests.Session()
    assert_refused(submit_login(http, idp_initiated(http, idp, wiki.entity_id), "alice", PASSWORD))

    ends = frozen_clock.current + timedelta(minutes=10)
    assign_app(wiki.entity_id, "group:engineering", until=ends, actor="test")
    url, request_id = wiki.redirect_login("https://wiki.example.test/after")
    auth = wiki.process_response(read_post_form(http.get(url, timeout=10).text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.get_attributes()["groups"] == ["engineering"]
    # The SP hears (SessionNotOnOrAfter) that its session must not outlive the assignment, as AWS does.
    assert auth.get_session_expiration() == int(ends.timestamp())

    frozen_clock.advance(minutes=10, seconds=1)  # past the assignment's end; the session is still good
    assert_refused(idp_initiated(http, idp, wiki.entity_id))
    assert denials() == [("alice", wiki.entity_id, NOT_ASSIGNED)] * 2


# --- OIDC ----------------------------------------------------------------------------------------------------


def test_authorize_answers_access_denied_at_the_redirect_uri(idp: LiveServer) -> None:
    reg = register(open_to_all=False)
    session = rp(idp.url, reg)
    auth = start(session)
    arrival = browse(requests.Session(), auth.url)
    assert arrival.login_prompts == 1
    assert arrival.params["error"] == "access_denied" and arrival.params["state"] == auth.state
    assert "code" not in arrival.params
    assert denials() == [("alice", reg.client_id, NOT_ASSIGNED)]


def test_code_exchange_and_refresh_stop_when_the_assignment_is_removed(idp: LiveServer) -> None:
    reg = register(open_to_all=False)
    assign_app(reg.client_id, "user:alice", actor="test")
    session = rp(idp.url, reg)
    token_url = session.server_metadata["token_endpoint"]
    http = requests.Session()
    first = start(session)
    arrival = browse(http, first.url)
    token = session.fetch_token(token_url, authorization_response=arrival.url, code_verifier=first.verifier,
                                state=first.state)
    assert session.parse_id_token(token, nonce=first.nonce)["preferred_username"] == "alice"
    token = session.refresh_token(token_url, refresh_token=token["refresh_token"])  # still assigned: fine
    second = start(session)
    pending_code = browse(http, second.url)
    assert "code" in pending_code.params

    unassign_app(reg.client_id, "user:alice", actor="test")
    with pytest.raises(OAuthError) as refresh:
        session.refresh_token(token_url, refresh_token=token["refresh_token"])
    assert refresh.value.error == "invalid_grant"
    with pytest.raises(OAuthError) as exchange:
        session.fetch_token(token_url, authorization_response=pending_code.url, code_verifier=second.verifier,
                            state=second.state)
    assert exchange.value.error == "invalid_grant"
    assert denials() == [("alice", reg.client_id, NOT_ASSIGNED)] * 2


def test_access_tokens_end_no_later_than_the_assignment_and_refresh_stops_with_it(
        idp: LiveServer, frozen_clock: Clock) -> None:
    """As a SAML app's session (SessionNotOnOrAfter): a JWT access token is checked by resource servers without
    asking here, so its exp must not outlive the grant."""
    reg = register(open_to_all=False, access_token_format="jwt")
    ends = frozen_clock.current.replace(microsecond=0) + timedelta(minutes=10)
    assign_app(reg.client_id, "user:alice", until=ends, actor="test")
    session = rp(idp.url, reg)
    token_url = session.server_metadata["token_endpoint"]
    auth = start(session)
    arrival = browse(requests.Session(), auth.url)
    token = session.fetch_token(token_url, authorization_response=arrival.url, code_verifier=auth.verifier,
                                state=auth.state)
    assert token["expires_in"] == 600
    key = pyjwt.PyJWKClient(session.server_metadata["jwks_uri"]).get_signing_key_from_jwt(token["access_token"])
    claims = pyjwt.decode(token["access_token"], key.key, algorithms=["RS256"], audience=reg.client_id)
    assert claims["exp"] == int(ends.timestamp())

    frozen_clock.advance(minutes=9)
    token = session.refresh_token(token_url, refresh_token=token["refresh_token"])
    assert token["expires_in"] == 60
    frozen_clock.advance(minutes=1)
    with pytest.raises(OAuthError) as refresh:
        session.refresh_token(token_url, refresh_token=token["refresh_token"])
    assert refresh.value.error == "invalid_grant"


def test_userinfo_and_introspection_stop_when_the_assignment_is_removed_and_resume_when_given_again(
    idp: LiveServer,
) -> None:
    """An access token is not only refused a refresh: its claims (userinfo) and its introspection stop at once,
    not when it expires; each refused use is an access.denied event. Given the client again, it works again."""
    reg = register(open_to_all=False)
    assign_app(reg.client_id, "user:alice", actor="test")
    session = rp(idp.url, reg)
    auth = start(session)
    arrival = browse(requests.Session(), auth.url)
    session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                        code_verifier=auth.verifier, state=auth.state)
    userinfo = session.server_metadata["userinfo_endpoint"]

    def introspected() -> bool:
        resp = requests.post(session.server_metadata["introspection_endpoint"], timeout=10,
                             data={"token": session.token["access_token"]}, auth=(reg.client_id, reg.client_secret))
        assert resp.status_code == 200
        body = resp.json()
        assert body["active"] or body == {"active": False}  # an inactive token tells nothing more
        return bool(body["active"])

    assert session.get(userinfo).json()["preferred_username"] == "alice" and introspected()

    unassign_app(reg.client_id, "user:alice", actor="test")
    refused = session.get(userinfo)
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    assert not introspected()
    assert denials() == [("alice", reg.client_id, NOT_ASSIGNED)] * 2

    assign_app(reg.client_id, "user:alice", actor="test")
    assert session.get(userinfo).json()["preferred_username"] == "alice" and introspected()


def test_device_approval_is_refused_and_the_device_hears_access_denied(idp: LiveServer) -> None:
    tv = register(name="Living-room TV", public=True, redirect_uris=(), grant_types=(DEVICE_GRANT,),
                  open_to_all=False)
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    confirm = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    refused = post_form(http, confirm, decision="approve")
    assert refused.status_code == 403 and NO_ACCESS in refused.text
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "access_denied"
    assert denials() == [("alice", tv.client_id, NOT_ASSIGNED)]
    assert [(e.outcome, e.reason) for e in audit.events(type="oidc.device.deny")] == [("failure", NOT_ASSIGNED)]

    # Approved while assigned, unassigned before the device collects its tokens: nothing for the device.
    assign_app(tv.client_id, "user:alice", actor="test")
    grant = device_authorization(idp, tv.client_id)
    confirm = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    assert "Device connected" in post_form(http, confirm, decision="approve").text
    unassign_app(tv.client_id, "user:alice", actor="test")
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "invalid_grant"
    assert len(denials()) == 2


def test_a_machine_client_needs_no_assignment(idp: LiveServer) -> None:
    reg = register(grant_types=("client_credentials",), redirect_uris=(), scopes=("groups",), open_to_all=False)
    session = rp(idp.url, reg, scope="groups")
    token = session.fetch_token(session.server_metadata["token_endpoint"], grant_type="client_credentials")
    assert token["access_token"] and token["scope"] == "groups"
    assert denials() == []


def test_a_client_open_to_all_needs_no_assignment(idp: LiveServer) -> None:
    reg = register(open_to_all=True)
    session = rp(idp.url, reg)
    auth = start(session)
    arrival = browse(requests.Session(), auth.url, username="bob")
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    assert session.parse_id_token(token, nonce=auth.nonce)["preferred_username"] == "bob"
    assert denials() == []
