"""The SSO session: idle and absolute lifetimes, ending it (logout, disabled user), and the home page."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import redis
from conftest import REDIS_URL
from flask import Flask
from flask.testing import FlaskClient
from helpers import csrf_token, login, make_user, signed_in, sql_statements
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from saml_peers import NAMEID_TRANSIENT, SP_SLO_URL, OneLoginSp, read_post_form, register_sp
from sqlalchemy import event

from idp import audit
from idp.authn import directory
from idp.authn.session import COOKIE, current_principal, login_url
from idp.extensions import db
from idp.state import sessions as session_state

PASSWORD = "correct horse battery"


def sessions(user_id: int) -> int:
    db.session.expire_all()
    return len(session_state.user_session_ids(user_id))


def test_home_page_sends_a_stranger_to_sign_in(app: Flask, client: FlaskClient) -> None:
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"] == "/login?next=/"
    with app.test_request_context():
        assert login_url("/saml/sso?a=b", force=True) == "/login?next=/saml/sso?a%3Db&force=1"


def test_idle_sessions_expire_and_activity_keeps_them_alive(short_app: Flask, frozen_clock: object) -> None:
    alice = make_user("alice", PASSWORD)
    client = short_app.test_client()
    login(client, "alice", PASSWORD)
    for _ in range(2):  # 2 x 9 minutes: past the idle limit in total, never idle that long
        frozen_clock.advance(seconds=540)  # type: ignore[attr-defined]
        assert signed_in(client)
    frozen_clock.advance(seconds=601)  # type: ignore[attr-defined]
    resp = client.get("/")
    assert resp.status_code == 302
    assert any(h.startswith("idp_session=;") for h in resp.headers.getlist("Set-Cookie"))
    assert sessions(alice.id) == 0
    (event,) = audit.events(type="session.expire")
    assert event.username == "alice" and event.reason == "idle timeout"


def test_sessions_end_at_their_absolute_lifetime_despite_activity(short_app: Flask, frozen_clock: object) -> None:
    make_user("alice", PASSWORD)
    client = short_app.test_client()
    login(client, "alice", PASSWORD)
    for _ in range(4):
        frozen_clock.advance(seconds=540)  # type: ignore[attr-defined]
        assert signed_in(client)
    frozen_clock.advance(seconds=239)  # type: ignore[attr-defined]  # 2399 s after sign-in
    assert signed_in(client)
    frozen_clock.advance(seconds=1)  # type: ignore[attr-defined]
    assert not signed_in(client)
    assert audit.events(type="session.expire")[0].reason == "absolute lifetime reached"


def test_last_seen_is_written_at_most_once_a_minute(short_app: Flask, frozen_clock: object) -> None:
    alice = make_user("alice", PASSWORD)
    client = short_app.test_client()
    login(client, "alice", PASSWORD)

    def last_seen() -> datetime:
        db.session.expire_all()
        (session_id,) = session_state.user_session_ids(alice.id)
        stored = session_state.get(session_id)
        assert stored is not None
        return stored.last_seen_at

    start = last_seen()
    frozen_clock.advance(seconds=30)  # type: ignore[attr-defined]
    assert signed_in(client)
    assert last_seen() == start
    frozen_clock.advance(seconds=31)  # type: ignore[attr-defined]
    assert signed_in(client)
    assert (last_seen() - start).total_seconds() == 61


def test_disabling_a_user_ends_their_live_session(app: Flask, client: FlaskClient) -> None:
    alice = make_user("alice", PASSWORD)
    login(client, "alice", PASSWORD)
    assert signed_in(client)
    assert directory.disable_user("alice", actor="test") == 1
    assert not signed_in(client)
    assert sessions(alice.id) == 0
    (event,) = audit.events(type="user.disable")
    assert event.details == {"sessions_ended": 1}


def test_a_session_whose_user_was_disabled_behind_its_back_is_refused(app: Flask, client: FlaskClient) -> None:
    # Another process (or a direct database change) disabled the user without ending the session.
    user = make_user("alice", PASSWORD)
    login(client, "alice", PASSWORD)
    user_id = user.id
    user.enabled = False
    db.session.commit()
    assert not signed_in(client)
    assert sessions(user_id) == 0


def test_deleting_a_user_ends_their_session(app: Flask, client: FlaskClient) -> None:
    alice_id = make_user("alice", PASSWORD).id
    login(client, "alice", PASSWORD)
    directory.delete_user("alice", actor="test")
    assert not signed_in(client)
    assert sessions(alice_id) == 0


def test_logout_asks_first_then_ends_the_session(app: Flask, client: FlaskClient) -> None:
    alice = make_user("alice", PASSWORD)
    login(client, "alice", PASSWORD)
    confirm = client.get("/logout")
    assert confirm.status_code == 200 and b"Sign out?" in confirm.data
    assert signed_in(client)  # GET alone (a link, an image) signs nobody out

    assert client.post("/logout").status_code == 400  # no CSRF token
    assert signed_in(client)

    token = csrf_token(confirm.get_data(as_text=True))
    done = client.post("/logout", data={"csrf_token": token})
    assert done.status_code == 200 and b"You are signed out" in done.data
    assert any(h.startswith("idp_session=;") for h in done.headers.getlist("Set-Cookie"))
    assert not signed_in(client)
    assert sessions(alice.id) == 0
    (event,) = audit.events(type="logout")
    assert event.username == "alice" and event.reason == "user signed out"


def test_logout_without_a_session_just_says_so(app: Flask, client: FlaskClient) -> None:
    resp = client.get("/logout")
    assert resp.status_code == 200 and b"You are signed out" in resp.data
    assert audit.events(type="logout") == []


def test_a_forged_cookie_is_ignored(app: Flask, client: FlaskClient) -> None:
    client.set_cookie("idp_session", "x" * 43)
    resp = client.get("/")
    assert resp.status_code == 302
    assert any(h.startswith("idp_session=;") for h in resp.headers.getlist("Set-Cookie"))


def test_the_server_keeps_only_a_digest_of_the_cookie(app: Flask, client: FlaskClient) -> None:
    alice = make_user("alice", PASSWORD)
    resp = login(client, "alice", PASSWORD)
    value = next(h for h in resp.headers.getlist("Set-Cookie") if h.startswith("idp_session="))
    token = value.split(";")[0].split("=", 1)[1]
    (session_id,) = session_state.user_session_ids(alice.id)
    assert session_id != token and len(session_id) == 64
    assert session_state.get(token) is None
    assert len(token) >= 43  # 32 random bytes


@pytest.mark.parametrize("groups", [(), ("eng", "ops")])
def test_a_request_reads_its_session_and_user_in_one_statement(app: Flask, groups: tuple[str, ...]) -> None:
    """Every request that carries a session (an SSO answer, an authorization request, the portal) needs its user
    too: in the database both come in one statement, whatever the number of the user's groups."""
    make_user("alice", PASSWORD, groups=groups)
    client = app.test_client()
    login(client, "alice", PASSWORD)
    cookie = client.get_cookie("idp_session")
    assert cookie is not None
    with sql_statements() as statements, app.test_request_context(
            "/", headers={"Cookie": f"idp_session={cookie.value}"}):
        principal = current_principal()
    assert principal is not None and principal.username == "alice" and principal.groups == groups
    if REDIS_URL is None:
        assert len(statements) == 1, statements
    else:  # the session from Redis, the user (whatever their groups) in one statement
        assert len(statements) == 1 and "sso_sessions" not in statements[0], statements


def test_an_sso_answer_reads_the_sessions_participant_with_the_session(app: Flask) -> None:
    """A session answering an SP it answered before (its participant: the NameID and SessionIndex Single Logout
    uses) reads that participant in the statement that reads the session and its user. The SP, python3-saml,
    gets the same SessionIndex both times."""
    make_user("alice", PASSWORD, groups=("eng",))
    browser = app.test_client()
    login(browser, "alice", PASSWORD)
    sp = OneLoginSp(browser.get("/saml/metadata").data)
    register_sp(sp.metadata())

    def sign_in() -> str:
        url, request_id = sp.redirect_login("https://sp.example.test/after")
        parts = urlsplit(url)  # the metadata names the configured host, the test client's cookie is localhost's
        page = browser.get(f"{parts.path}?{parts.query}")
        assert page.status_code == 200, page.headers.get("Location")
        auth = sp.process_response(read_post_form(page.get_data(as_text=True)), request_id)
        assert auth.get_errors() == [], auth.get_last_error_reason()
        index: str = auth.get_session_index()
        return index

    first = sign_in()
    with sql_statements() as statements:
        again = sign_in()
    assert again == first
    reads = [s for s in statements if "session_participants" in s]
    if REDIS_URL is None:
        assert len(reads) == 1 and "FROM sso_sessions LEFT OUTER JOIN session_participants" in reads[0], statements
        assert not any(s.startswith("INSERT INTO session_participants") for s in statements), statements
    else:  # sessions and their participants live in Redis
        assert reads == [], statements


def test_an_sso_answer_whose_session_ends_meanwhile_carries_no_assertion(
        app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    make_user("alice", PASSWORD)
    browser = app.test_client()
    login(browser, "alice", PASSWORD)
    sp = OneLoginSp(browser.get("/saml/metadata").data)
    register_sp(sp.metadata())
    record = session_state.save_participant

    def logged_out_meanwhile(s: session_state.SsoSession, *args: object) -> None:
        # A logout (on another instance, say) lands while this answer is being made.
        session_state.delete([s.id])
        db.session.commit()
        record(s, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(session_state, "save_participant", logged_out_meanwhile)
    url, request_id = sp.redirect_login("https://sp.example.test/after")
    parts = urlsplit(url)
    page = browser.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200
    # An SP that got an assertion now would never hear of the logout: it gets a refusal instead.
    auth = sp.process_response(read_post_form(page.get_data(as_text=True)), request_id)
    assert not auth.is_authenticated()
    assert auth.get_last_error_reason() == (
        "The status code of the Response was not Success, was Responder -> the session ended while answering")
    (refused,) = audit.events(type="saml.refused")
    assert refused.reason == "the session ended while answering"
    assert audit.events(type="saml.response") == []


@pytest.mark.parametrize("visited_before", [False, True])
def test_an_sso_answer_at_the_moment_of_logout_is_refused_or_reached_by_it(
        app: Flask, monkeypatch: pytest.MonkeyPatch, visited_before: bool) -> None:
    """Signing out in one tab while another tab is being signed in to an SP: that SP gets no assertion, or the
    logout reaches it, naming the NameID it last got (transient: a new one at every answer). (The logout read the
    session's SPs, the other tab's answer went out and recorded its SP or its new NameID, then the logout ended
    the session: that SP was never told, or told of a NameID it no longer knew, and its session outlived the
    sign-out.)"""
    make_user("alice", PASSWORD)
    browser = app.test_client()
    login(browser, "alice", PASSWORD)
    sp = OneLoginSp(browser.get("/saml/metadata").data, nameid_format=NAMEID_TRANSIENT)
    register_sp(sp.metadata())
    db.session.commit()

    def sign_in_at_sp(tab: FlaskClient) -> str | None:
        """The NameID of the assertion the SP accepted, or None when it got none."""
        url, request_id = sp.redirect_login("https://sp.example.test/after")
        parts = urlsplit(url)
        page = tab.get(f"{parts.path}?{parts.query}").get_data(as_text=True)
        if 'name="SAMLResponse"' not in page:
            return None
        auth = sp.process_response(read_post_form(page), request_id)
        return auth.get_nameid() if auth.is_authenticated() else None

    first = sign_in_at_sp(browser) if visited_before else None
    assert first is not None or not visited_before
    cookie = browser.get_cookie(COOKIE)
    assert cookie is not None
    other_tab = app.test_client()
    other_tab.set_cookie(COOKIE, cookie.value)
    got: list[str | None] = []
    tab, main = threading.Thread(target=lambda: got.append(sign_in_at_sp(other_tab))), threading.get_ident()

    def the_other_tab_now() -> None:
        # The logout has read the session's SPs: the other tab's answer comes now, before the logout goes on
        # (or, if the logout holds the session, as long as it waits a second for it).
        if threading.get_ident() == main and tab.ident is None:
            tab.start()
            tab.join(1.0)

    if REDIS_URL:
        hgetall = redis.Redis.hgetall

        def read_then(self: redis.Redis, name: str) -> Any:
            found = hgetall(self, name)
            if name.endswith(":sps"):
                the_other_tab_now()
            return found

        monkeypatch.setattr(redis.Redis, "hgetall", read_then)
    else:
        def after(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.lstrip().startswith("SELECT") and "FROM session_participants" in statement:
                the_other_tab_now()

        event.listen(db.engine, "after_cursor_execute", after)
    try:
        page = browser.get("/logout").get_data(as_text=True)
        signed_out = browser.post("/logout", data={"csrf_token": csrf_token(page)})
    finally:
        if not REDIS_URL:
            event.remove(db.engine, "after_cursor_execute", after)
    tab.join(15)
    assert got, "the other tab never asked"
    # Reached: the browser is sent on to the SP's logout endpoint with a LogoutRequest, rather than shown that
    # it is signed out; the request names the NameID the SP last accepted.
    location = signed_out.headers.get("Location", "")
    told = (OneLogin_Saml2_Logout_Request.get_nameid(OneLogin_Saml2_Utils.decode_base64_and_inflate(
        parse_qs(urlsplit(location).query)["SAMLRequest"][0])) if location.startswith(SP_SLO_URL) else None)
    assert told == (got[0] or first), (first, got, told)
