"""RP-initiated logout: the session ends (SAML side included), tokens of the session are revoked, and the
browser goes back only to a registered post-logout URI."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import lxml.html
import pytest
import requests
from conftest import PG_URL, REDIS_URL
from helpers import login_http, make_user
from interop.pysaml2_sp import p3_request
from joserfc import jwt
from oidc_peers import PASSWORD, browse, register, rp, start
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from saml_peers import ATTRIBUTE_MAP, OneLoginSp, idp_metadata, read_post_form, register_sp, submit_login
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from test_oidc_jwt_access_tokens import GRANTS, validate

from idp import audit
from idp.extensions import db
from idp.keys import RSA
from idp.oidc.server import RefreshTokenGrant
from idp.runtime import keystore

AFTER = "https://rp.example.test/signed-out"


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, email="alice@example.test")
    return live_server


def signed_in(idp: Any, http: requests.Session, **options: Any) -> tuple[Any, Any, dict[str, Any]]:
    reg = register(post_logout_redirect_uris=(AFTER,), **options)
    session = rp(idp.url, reg)
    auth = start(session)
    arrival = browse(http, auth.url)
    token = session.fetch_token(idp.url + "/oauth/token", authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    return reg, session, token


def test_logout_with_a_hint_ends_the_session_and_its_tokens(idp: Any) -> None:
    http = requests.Session()
    _, session, token = signed_in(idp, http)
    resp = http.get(idp.url + "/oauth/logout", allow_redirects=False, timeout=10, params={
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": AFTER, "state": "bye"})
    assert resp.status_code == 302 and resp.headers["Location"] == AFTER + "?state=bye"
    assert browse(http, start(session).url).login_prompts == 1  # signed out: asked again
    info = session.introspect_token(idp.url + "/oauth/introspect", token=token["refresh_token"]).json()
    assert info == {"active": False}
    assert any(e.type == "oidc.logout" and e.outcome == "success" for e in audit.events())


def test_an_unregistered_post_logout_uri_is_refused_without_redirect(idp: Any) -> None:
    http = requests.Session()
    _, session, token = signed_in(idp, http)
    resp = http.get(idp.url + "/oauth/logout", allow_redirects=False, timeout=10, params={
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": "https://evil.example.test/"})
    assert resp.status_code == 400 and "Location" not in resp.headers
    assert browse(http, start(session).url).login_prompts == 0  # still signed in


def test_an_access_token_is_refused_as_a_hint_and_signs_nobody_out(idp: Any) -> None:
    """A JWT access token (RFC 9068) has our key, issuer, the client as audience and the user's subject, like an
    ID token; whoever holds it (a resource server) must not be able to sign the user out with it."""
    http = requests.Session()
    reg, session, token = signed_in(idp, http, grant_types=GRANTS, access_token_format="jwt")
    access = validate(idp, token["access_token"], reg.client_id)
    assert access["sub"] == session.parse_id_token(token, nonce=None)["sub"]
    key = keystore(RSA).ring().active
    # The token itself, and the same claims signed with the other spellings of its media type.
    hints = [token["access_token"]] + [jwt.encode({"typ": typ, "alg": key.alg, "kid": key.jwk_kid}, access, key.jwk)
                                       for typ in ("AT+JWT", "application/at+jwt")]
    for hint in hints:
        resp = http.get(idp.url + "/oauth/logout", allow_redirects=False, timeout=10, params={
            "id_token_hint": hint, "post_logout_redirect_uri": AFTER, "state": "bye"})
        assert resp.status_code == 400 and "Location" not in resp.headers
        assert "the id_token_hint is an access token, not an ID token" in resp.text
    assert browse(http, start(session).url).login_prompts == 0  # still signed in
    assert active(idp, session, token["access_token"])
    db.session.expire_all()
    refusals = [e for e in audit.events(type="oidc.logout") if e.outcome == "failure"]
    assert [e.reason for e in refusals] == ["the id_token_hint is an access token, not an ID token"] * 3

    resp = http.get(idp.url + "/oauth/logout", allow_redirects=False, timeout=10, params={
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": AFTER, "state": "bye"})
    assert resp.status_code == 302 and resp.headers["Location"] == AFTER + "?state=bye"
    assert browse(http, start(session).url).login_prompts == 1


def test_without_a_hint_the_user_confirms(idp: Any) -> None:
    http = requests.Session()
    reg, session, _ = signed_in(idp, http)
    page = http.get(idp.url + "/oauth/logout", timeout=10,
                    params={"client_id": reg.client_id, "post_logout_redirect_uri": AFTER})
    assert page.status_code == 200 and "Sign out?" in page.text
    assert browse(http, start(session).url).login_prompts == 0  # the GET alone signed nobody out
    form = lxml.html.fromstring(page.text).forms[0]
    data = {i.get("name"): i.get("value") or "" for i in form.inputs if i.get("name")}
    forged = requests.post(idp.url + "/oauth/logout", data={**data, "csrf_token": "forged"},
                           cookies=http.cookies, allow_redirects=False, timeout=10)
    assert forged.status_code == 400
    done = http.post(idp.url + "/oauth/logout", data=data, headers={"Referer": page.url},
                     allow_redirects=False, timeout=10)
    assert done.status_code == 302 and done.headers["Location"] == AFTER
    assert browse(http, start(session).url).login_prompts == 1


def test_logout_also_ends_the_saml_side(idp: Any) -> None:
    sp = OneLoginSp(idp_metadata(idp.url))
    register_sp(sp.metadata(), attribute_map=tuple(ATTRIBUTE_MAP))
    http = requests.Session()
    url, request_id = sp.redirect_login("https://sp.example.test/after")
    page = submit_login(http, http.get(url, timeout=10), "alice", PASSWORD)
    assert sp.process_response(read_post_form(page.text), request_id).get_errors() == []
    _, session, token = signed_in(idp, http)

    resp = http.get(idp.url + "/oauth/logout", allow_redirects=False, timeout=10, params={
        "id_token_hint": token["id_token"], "post_logout_redirect_uri": AFTER, "state": "bye"})
    # The browser is sent to the SAML SP's Single Logout service with a LogoutRequest, which python3-saml
    # accepts (signed, for this user) and answers; back at the IdP, the chain ends at the client's URI.
    assert resp.status_code in (302, 303), resp.text[:500]
    assert resp.headers["Location"].startswith("https://sp.example.test/slo?SAMLRequest=")
    settings = {**sp.settings, "security": {**sp.settings["security"], "logoutResponseSigned": True}}
    at_sp = OneLogin_Saml2_Auth(p3_request(resp.headers["Location"]), settings)
    back = at_sp.process_slo(keep_local_session=True)
    assert at_sp.get_errors() == [], at_sp.get_last_error_reason()
    done = http.get(back, allow_redirects=False, timeout=10)
    assert done.status_code == 302 and done.headers["Location"] == AFTER + "?state=bye"
    assert browse(http, start(session).url).login_prompts == 1
    db.session.expire_all()
    (event,) = audit.events(type="saml.logout")
    assert event.outcome == "success" and event.details["notified"] == [{"sp": sp.entity_id, "result": "success"}]


def active(idp: Any, session: Any, token: str) -> bool:
    return bool(session.introspect_token(idp.url + "/oauth/introspect", token=token).json()["active"])


def log_out(idp: Any, http: requests.Session) -> requests.Response:
    """The IdP's own /logout page, confirmed."""
    page = http.get(idp.url + "/logout", timeout=10)
    csrf = lxml.html.fromstring(page.text).xpath("//input[@name='csrf_token']/@value")[0]
    return http.post(idp.url + "/logout", data={"csrf_token": csrf}, headers={"Referer": page.url}, timeout=10)


def refresh_aside(pool: ThreadPoolExecutor, idp: Any, reg: Any, token: dict[str, Any]) -> Future[Any]:
    """A refresh sent by the client's back end, in another thread (a test holds it up half-way)."""
    return pool.submit(rp(idp.url, reg).refresh_token, idp.url + "/oauth/token", refresh_token=token["refresh_token"])


def test_any_end_of_the_sso_session_revokes_its_tokens_but_signing_in_again_does_not(idp: Any) -> None:
    """Tokens live no longer than the sign-in they came from (as Keycloak binds refresh tokens to the SSO
    session): the IdP's own /logout page ends them too. Re-authenticating keeps them."""
    http = requests.Session()
    _, session, token = signed_in(idp, http)

    again = browse(http, start(session, prompt="login").url)  # the same user types the password again
    assert again.login_prompts == 1
    assert active(idp, session, token["refresh_token"]) and active(idp, session, token["access_token"])

    assert log_out(idp, http).status_code == 200
    assert not active(idp, session, token["refresh_token"])
    assert not active(idp, session, token["access_token"])


def test_a_refresh_racing_a_new_sign_in_issues_its_token_in_the_new_session(
        idp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refresh that read its token before the same user signed in again (which moves the session's tokens to
    the session's new id) writes its new token under the id it read: that token must follow, or logging out
    would leave it alive."""
    http = requests.Session()
    reg, session, token = signed_in(idp, http)
    read, resume = threading.Event(), threading.Event()
    authenticate = RefreshTokenGrant.authenticate_refresh_token

    def paused(self: RefreshTokenGrant, value: str) -> Any:
        found = authenticate(self, value)
        read.set()
        assert resume.wait(10)
        return found

    monkeypatch.setattr(RefreshTokenGrant, "authenticate_refresh_token", paused)
    with ThreadPoolExecutor(1) as pool:
        refreshing = refresh_aside(pool, idp, reg, token)
        assert read.wait(10)
        assert browse(http, start(session, prompt="login").url).login_prompts == 1  # signed in again meanwhile
        resume.set()
        renewed = refreshing.result(10)
    assert active(idp, session, renewed["refresh_token"])

    assert log_out(idp, http).status_code == 200
    assert not active(idp, session, renewed["refresh_token"])
    assert not active(idp, session, renewed["access_token"])


@pytest.mark.skipif(PG_URL is None, reason="row locks: PostgreSQL only (SQLite has one writer at a time)")
def test_a_new_sign_in_waiting_on_a_refresh_moves_the_token_it_adds_too(
        idp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other order: the refresh has used its token (a row lock) and added the new one when the same user
    signs in again; the move of the session's tokens waits on that lock, then must not miss the new token."""
    http = requests.Session()
    reg, session, token = signed_in(idp, http)
    held, resume = threading.Event(), threading.Event()
    use = RefreshTokenGrant.revoke_old_credential

    def paused(self: RefreshTokenGrant, refresh_token: Any) -> None:
        use(self, refresh_token)
        held.set()
        assert resume.wait(10)

    monkeypatch.setattr(RefreshTokenGrant, "revoke_old_credential", paused)
    with ThreadPoolExecutor(2) as pool:
        refreshing = refresh_aside(pool, idp, reg, token)
        assert held.wait(10)
        again = pool.submit(browse, http, start(session, prompt="login").url)
        deadline = time.monotonic() + 10
        while not db.session.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE 'UPDATE oidc_tokens SET session_id%'")):
            db.session.rollback()
            assert time.monotonic() < deadline, "the new sign-in never waited on the refresh"
            time.sleep(0.05)
        db.session.rollback()
        resume.set()
        renewed = refreshing.result(10)
        assert again.result(10).login_prompts == 1

    assert log_out(idp, http).status_code == 200
    assert not active(idp, session, renewed["refresh_token"])


@pytest.mark.skipif(REDIS_URL is None, reason="in the database a session ends in the transaction that ends its tokens")
def test_tokens_of_a_session_whose_logout_failed_to_commit_are_revoked_by_the_next_sweep(
        idp: Any, monkeypatch: pytest.MonkeyPatch, frozen_clock: Any) -> None:
    """Redis forgets a session at once; its tokens are revoked in the database, committed with the logout. When
    that commit fails (the database went away), the session stays due for the housekeeping, whose next run
    revokes them: they never outlive a session that is gone."""
    http = requests.Session()
    _, session, token = signed_in(idp, http)
    record = audit.record

    def database_gone(event: audit.AuditEvent, **kwargs: Any) -> None:
        if event.type == "logout":
            raise OperationalError("INSERT INTO audit_events", {}, ConnectionError("server closed the connection"))
        record(event, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(audit, "record", database_gone)
        failed = log_out(idp, http)
    assert failed.status_code == 503
    assert browse(http, start(session).url).login_prompts == 1  # the session is gone all the same
    frozen_clock.advance(seconds=61)  # the next sign-in a minute later runs the housekeeping
    make_user("bob", PASSWORD)
    assert login_http(requests.Session(), idp.url, "bob", PASSWORD).status_code == 302
    assert not active(idp, session, token["refresh_token"])
    assert not active(idp, session, token["access_token"])
