"""The login page: sign-in, the one generic failure message, CSRF, throttling, redirects and cookies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import pytest
from conftest import PG_URL, REDIS_URL
from flask import Flask
from flask.testing import FlaskClient
from helpers import audit_insert_lost, csrf_token, form_action, login, make_user, sql_statements, statement_fails
from sqlalchemy import event, select, text
from sqlalchemy.exc import OperationalError

from idp import audit, clock, create_app
from idp.authn import directory, passwords, throttle
from idp.authn.connectors import chain
from idp.config import Settings
from idp.errors import DirectoryUnavailable
from idp.extensions import db
from idp.state import counters, redis_client
from idp.state import sessions as session_state
from idp.state.sessions import Participant
from idp.store import LoginThrottle

PASSWORD = "correct horse battery"
GENERIC = "Incorrect username or password."
LOCKED = "Too many failed attempts. Try again later."


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Flask]]:
    """An app with overridden settings (throttle limits, base URL), its app context pushed."""
    pushed = []

    def make(**overrides: object) -> Flask:
        application = create_app(make_settings(**overrides))
        application.config["TESTING"] = True
        ctx = application.app_context()
        ctx.push()
        pushed.append(ctx)
        return application

    yield make
    for ctx in reversed(pushed):
        db.session.remove()
        db.engine.dispose()
        ctx.pop()


def set_cookie_header(resp: object, name: str = "idp_session") -> str:
    headers = [h for h in resp.headers.getlist("Set-Cookie") if h.startswith(name + "=")]  # type: ignore[attr-defined]
    assert len(headers) == 1, headers
    return headers[0]


def signed_in(client: FlaskClient) -> bool:
    resp = client.get("/")
    return resp.status_code == 200 and b"Signed in as" in resp.data


def login_events(outcome: str | None = None) -> list[audit.AuditEvent]:
    return [e for e in audit.events(type="login") if outcome is None or e.outcome == outcome]


def test_successful_sign_in_sets_a_hardened_cookie_and_redirects(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD, groups=["engineering"], display_name="Alice Anderson")
    resp = login(client, "Alice", PASSWORD, next="/saml/sso?x=1")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/saml/sso?x=1"
    cookie = set_cookie_header(resp)
    attrs = [a.strip().lower() for a in cookie.split(";")]
    assert "httponly" in attrs and "samesite=lax" in attrs and "path=/" in attrs
    assert "secure" not in attrs  # plain-http base URL: a Secure cookie would never come back
    page = client.get("/")
    assert b"Signed in as <strong>Alice Anderson</strong>" in page.data
    (event,) = login_events("success")
    assert event.username == "alice" and event.client_ip == "127.0.0.1"


def test_cookies_are_secure_and_host_only_when_the_base_url_is_https(make_app: Callable[..., Flask]) -> None:
    base = "https://idp.example.test"
    application = make_app(base_url=base)
    make_user("alice", PASSWORD, display_name="Alice Anderson")
    client = application.test_client()
    page = client.get("/login", base_url=base)
    resp = login(client, "alice", PASSWORD, base_url=base)
    assert resp.status_code == 302
    # The names browsers hold to Secure, Path=/ and no Domain: a sibling host cannot plant either cookie.
    for cookie in (set_cookie_header(resp, "__Host-idp_session"), set_cookie_header(page, "__Host-idp_csrf")):
        attrs = [a.strip().lower() for a in cookie.split(";")]
        assert "secure" in attrs and "path=/" in attrs and not any(a.startswith("domain=") for a in attrs), cookie
    assert not any(h.startswith(("idp_session=", "idp_csrf=")) for r in (page, resp)
                   for h in r.headers.getlist("Set-Cookie"))
    assert b"Signed in as <strong>Alice Anderson</strong>" in client.get("/", base_url=base).data


def _scrubbed(page: str) -> str:
    page = page.replace(csrf_token(page), "TOKEN")
    for name in ("alice", "mallory", "dora"):
        page = page.replace(f'value="{name}"', 'value="NAME"')
    return page


def test_wrong_password_unknown_user_and_disabled_user_look_the_same(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    make_user("dora", PASSWORD)
    directory.disable_user("dora", actor="test")
    wrong = login(client, "alice", "not the password")
    unknown = login(client, "mallory", PASSWORD)
    disabled = login(client, "dora", PASSWORD)
    pages = [_scrubbed(r.get_data(as_text=True)) for r in (wrong, unknown, disabled)]
    assert [r.status_code for r in (wrong, unknown, disabled)] == [200, 200, 200]
    assert GENERIC in pages[0]
    assert pages[0] == pages[1] == pages[2]
    assert not any(h.startswith("idp_session=") for r in (wrong, unknown, disabled)
                   for h in r.headers.getlist("Set-Cookie"))
    # The audit log keeps the precise reason the user is not told.
    reasons = {e.username: e.reason for e in login_events("failure")}
    assert reasons == {"alice": "bad password", "mallory": "unknown user", "dora": "user disabled"}


def test_post_without_csrf_token_is_refused(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    client.get("/login")
    resp = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert resp.status_code == 400
    assert b"CSRF" in resp.data
    assert not signed_in(client)
    assert login_events() == []


def test_a_sign_in_makes_the_form_token_known_before_it_worthless(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    before = csrf_token(client.get("/login").get_data(as_text=True))
    assert login(client, "alice", PASSWORD).status_code == 302
    resp = client.post("/logout", data={"csrf_token": before})
    assert resp.status_code == 400 and signed_in(client)
    after = csrf_token(client.get("/logout").get_data(as_text=True))
    assert after != before
    assert client.post("/logout", data={"csrf_token": after}).status_code == 200 and not signed_in(client)


def test_the_csrf_cookie_is_read_only_where_a_form_needs_it(app: Flask, client: FlaskClient,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # Flask's cookie carries only the CSRF token. A request that shows or checks no form leaves it unread (its
    # signature check was 2-3% of a SAML answer) and as it was; the login form still reads and checks it.
    make_user("alice", PASSWORD)
    serializer = type(app.session_interface.get_signing_serializer(app))  # type: ignore[attr-defined]
    read: list[str] = []
    loads = serializer.loads

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        read.append(self.salt)  # Flask's cookie; flask-wtf reads its token with the same class
        return loads(self, *args, **kwargs)

    monkeypatch.setattr(serializer, "loads", counted)
    page = client.get("/login")
    assert any(h.startswith("idp_csrf=") for h in page.headers.getlist("Set-Cookie"))
    assert "Cookie" in page.headers.get("Vary", "")  # a page that read the cookie varies with it
    metadata = client.get("/saml/metadata")
    assert metadata.status_code == 200 and read == []
    assert not any(h.startswith("idp_csrf=") for h in metadata.headers.getlist("Set-Cookie"))
    assert "Cookie" not in metadata.headers.get("Vary", "")
    done = client.post(form_action(page.get_data(as_text=True)), data={
        "csrf_token": csrf_token(page.get_data(as_text=True)), "username": "alice", "password": PASSWORD})
    assert done.status_code == 302 and app.session_interface.salt.encode() in read  # type: ignore[attr-defined]
    assert signed_in(client)


def test_lockout_after_repeated_failures_refuses_even_the_right_password(
    make_app: Callable[..., Flask], frozen_clock: object
) -> None:
    application = make_app(login_max_failures=3, login_lockout_seconds=300)
    make_user("alice", PASSWORD)
    client = application.test_client()
    assert login(client, "alice", "wrong-1").status_code == 200
    assert login(client, "alice", "wrong-2").status_code == 200
    third = login(client, "alice", "wrong-3")
    assert third.status_code == 429 and LOCKED in third.get_data(as_text=True)
    refused = login(client, "alice", PASSWORD)
    assert refused.status_code == 429 and LOCKED in refused.get_data(as_text=True)
    assert not signed_in(client)
    assert len(audit.events(type="login.lockout")) == 1
    assert login_events("failure")[0].reason == "locked out"

    frozen_clock.advance(seconds=299)  # type: ignore[attr-defined]
    assert login(client, "alice", PASSWORD).status_code == 429
    frozen_clock.advance(seconds=2)  # type: ignore[attr-defined]
    assert login(client, "alice", PASSWORD).status_code == 302
    assert signed_in(client)
    assert len(audit.events(type="login.lockout")) == 1


def test_wrong_passwords_sent_at_once_reach_no_more_password_checks_than_the_limit(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    application = make_app(login_max_failures=3, login_ip_max_failures=13)
    make_user("alice", PASSWORD)
    verify, checked = passwords.verify, []

    def slow(password_hash: str | None, password: str) -> bool:
        checked.append(password)
        time.sleep(0.3)  # a hash under load: the other tries all arrive while the first ones are being checked
        return verify(password_hash, password)

    monkeypatch.setattr(passwords, "verify", slow)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: login(application.test_client(), "alice", f"guess {i}").status_code,
                                range(10)))
    # Each try is counted before its password is checked: the third starts the lockout, the rest are refused
    # unchecked. (Counted after the check, all ten were checked before the first failure was counted.)
    assert len(checked) == 3, checked
    assert sorted(answers) == [200, 200] + [429] * 8
    assert login(application.test_client(), "alice", PASSWORD).status_code == 429
    (lockout,) = audit.events(type="login.lockout")
    assert lockout.reason == "too many failed sign-ins for user:alice"
    monkeypatch.undo()
    # The address holds the three failures, not the tries refused for the name: ten more start its lockout.
    answers = [login(application.test_client(), f"nobody{i}", "guess").status_code for i in range(10)]
    assert answers == [200] * 9 + [429]


def test_a_spray_sent_at_once_from_one_address_reaches_no_more_password_checks_than_its_limit(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    """One wrong password for each of many users, all at once from one address (a password spray): the
    address's counter, like the name's, counts each try before its password is checked."""
    application = make_app(login_max_failures=2, login_ip_max_failures=3)
    names = [f"user{i}" for i in range(10)]
    for name in names:
        make_user(name, PASSWORD)
    verify, checked = passwords.verify, []

    def slow(password_hash: str | None, password: str) -> bool:
        checked.append(password)
        time.sleep(0.3)
        return verify(password_hash, password)

    monkeypatch.setattr(passwords, "verify", slow)
    attacker = {"environ_base": {"REMOTE_ADDR": "203.0.113.7"}}
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(
            lambda name: login(application.test_client(), name, "Winter2026!", **attacker).status_code, names))
    # Counted after the check, all ten were checked before the first failure was counted.
    assert len(checked) == 3, checked
    assert sorted(answers) == [200, 200] + [429] * 8
    assert login(application.test_client(), "user0", PASSWORD, **attacker).status_code == 429
    (lockout,) = audit.events(type="login.lockout")
    assert lockout.reason == "too many failed sign-ins for ip:203.0.113.7"
    # The tries refused for the address counted nothing against their names: one more wrong password for each
    # user, from addresses of their own, locks out only the three users whose password was checked.
    again = [login(application.test_client(), name, "wrong", environ_base={"REMOTE_ADDR": f"198.51.100.{i}"})
             .status_code for i, name in enumerate(names)]
    assert sorted(again) == [200] * 7 + [429] * 3


def test_sign_ins_from_one_address_give_back_the_tries_they_reserved(make_app: Callable[..., Flask]) -> None:
    """Each sign-in counts a try against its address before the password is checked; a right password gives it
    back, so that people behind one address (an office's NAT) never lock it out by signing in."""
    application = make_app(login_max_failures=100, login_ip_max_failures=3)
    make_user("alice", PASSWORD)
    office = {"environ_base": {"REMOTE_ADDR": "198.51.100.1"}}
    for _ in range(5):
        assert login(application.test_client(), "alice", PASSWORD, **office).status_code == 302
    # Two failures still leave the address one try: the five successes counted nothing.
    for name in ("typo1", "typo2"):
        assert login(application.test_client(), name, "guess", **office).status_code == 200
    assert login(application.test_client(), "alice", PASSWORD, **office).status_code == 302
    assert audit.events(type="login.lockout") == []


def test_a_sign_in_one_failure_short_of_the_address_limit_keeps_the_failures_in_their_window(
        make_app: Callable[..., Flask], frozen_clock: Any) -> None:
    """A success's try is held while its password is checked, never counted: it neither starts a lockout of the
    address (everyone behind an office's NAT) nor makes its failures last longer than their window."""
    application = make_app(login_max_failures=100, login_ip_max_failures=3, login_failure_window_seconds=600)
    make_user("alice", PASSWORD)
    office = {"environ_base": {"REMOTE_ADDR": "198.51.100.1"}}
    for name in ("typo1", "typo2"):
        assert login(application.test_client(), name, "guess", **office).status_code == 200
    frozen_clock.advance(seconds=300)
    assert login(application.test_client(), "alice", PASSWORD, **office).status_code == 302
    frozen_clock.advance(seconds=301)  # the two failures' window is over
    for name in ("typo3", "typo4"):
        assert login(application.test_client(), name, "guess", **office).status_code == 200
    assert audit.events(type="login.lockout") == []


def test_an_address_s_failure_window_starts_at_its_first_failure_not_at_an_earlier_success(
        make_app: Callable[..., Flask], frozen_clock: Any) -> None:
    """The database and Redis decide alike: a success's try, given back, leaves no counter behind whose window
    would still be running when failures come."""
    application = make_app(login_max_failures=100, login_ip_max_failures=3, login_failure_window_seconds=900)
    make_user("alice", PASSWORD)
    assert login(application.test_client(), "alice", PASSWORD).status_code == 302
    frozen_clock.advance(seconds=899)
    for name in ("typo1", "typo2"):
        assert login(application.test_client(), name, "guess").status_code == 200
    frozen_clock.advance(seconds=2)  # the success's window would be over, the failures' is not
    assert login(application.test_client(), "typo3", "guess").status_code == 429


def test_tries_held_by_requests_that_never_ended_are_forgotten_when_the_window_rolls(
        make_app: Callable[..., Flask], frozen_clock: Any) -> None:
    """Workers killed while they checked passwords (a deploy, the OOM killer) never give their tries back: the
    name stays held to its limit only until its window rolls, not for good."""
    application = make_app(login_max_failures=2, login_failure_window_seconds=600)
    make_user("alice", PASSWORD)
    for _ in range(2):
        assert throttle.reserve("alice") is not None
        db.session.commit()
    assert login(application.test_client(), "alice", PASSWORD).status_code == 429
    frozen_clock.advance(seconds=601)
    assert login(application.test_client(), "alice", PASSWORD).status_code == 302
    assert audit.events(type="login.lockout") == []


def test_a_try_no_directory_could_judge_is_not_counted(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    application = make_app(login_max_failures=2, login_ip_max_failures=100)
    make_user("alice", PASSWORD)
    assert login(application.test_client(), "alice", "wrong").status_code == 200

    def unavailable(*args: object, **kwargs: object) -> NoReturn:
        raise DirectoryUnavailable("unavailable", "test: the directory is down")

    # The second try would start the lockout; it is held in advance, then given back unjudged.
    with monkeypatch.context() as patched:
        patched.setattr(chain, "check", unavailable)
        for _ in range(3):
            assert login(application.test_client(), "alice", PASSWORD).status_code == 503
    assert login(application.test_client(), "alice", PASSWORD).status_code == 302
    assert audit.events(type="login.lockout") == []


@pytest.mark.skipif(PG_URL is None or REDIS_URL is not None,
                    reason="row locks of the database's counters: PostgreSQL without Redis")
def test_a_success_and_a_failure_of_one_user_at_once_do_not_deadlock(app: Flask) -> None:
    """A wrong password locks the user's and the name's counters in key order as it counts them; a right one
    (another spelling, another address) clears the same two. Deleted with one statement, the second locked them
    in whatever order the plan visited them (a sequential scan: as stored), and the two could deadlock."""
    for key in ("user:alice", "subject:corp:1"):  # stored in this order: the name's row first
        counters.count(key, throttle._limits(5), clock.now())
    db.session.commit()
    holds_subject, main = threading.Event(), threading.get_ident()
    failed: list[str] = []

    def after_counting(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if (threading.get_ident() != main and statement.startswith("UPDATE login_throttle")
                and "subject:corp:1" in str(parameters)):
            holds_subject.set()
            time.sleep(1.0)  # the success reaches its delete meanwhile, and waits on the row this holds

    def wrong_password() -> None:
        with app.app_context():
            try:
                throttle.register_failure(throttle.Reservation("subject:corp:1", 5),
                                          throttle.Reservation("user:alice", 5))
                db.session.commit()
            except Exception as exc:
                failed.append(repr(exc))

    event.listen(db.engine, "after_cursor_execute", after_counting)
    other = threading.Thread(target=wrong_password)
    try:
        other.start()
        assert holds_subject.wait(10)
        # The plan a small table gets once it is analysed, made certain.
        db.session.execute(text("SET LOCAL enable_indexscan = off"))
        db.session.execute(text("SET LOCAL enable_bitmapscan = off"))
        throttle.succeeded("alice", "corp:1")
        db.session.commit()
    finally:
        other.join(15)
        event.remove(db.engine, "after_cursor_execute", after_counting)
    assert failed == []
    assert db.session.scalars(select(LoginThrottle.key)).all() == []


def test_a_try_given_back_after_a_success_cleared_the_counter_leaves_it_cleared(
        make_app: Callable[..., Flask]) -> None:
    """A try waits on a directory that is down while the right password (typed under another spelling, say)
    clears the name's counter: giving that try back must not make the counter again (in Redis it would have no
    expiry: every later failure would count against the user for good)."""
    make_app(login_max_failures=1)
    reservation = throttle.reserve("alice")
    assert reservation is not None
    throttle.succeeded("alice", None)
    throttle.release(reservation)
    db.session.commit()
    client = redis_client()
    if client is not None:
        assert client.keys("*throttle*") == []
    else:
        assert db.session.scalars(select(LoginThrottle.key)).all() == []


def test_success_resets_the_user_counter_and_old_failures_age_out(
    make_app: Callable[..., Flask], frozen_clock: object
) -> None:
    application = make_app(login_max_failures=3, login_failure_window_seconds=600)
    make_user("alice", PASSWORD)
    client = application.test_client()
    for _ in range(2):
        login(client, "alice", "wrong")
    assert login(client, "alice", PASSWORD).status_code == 302
    client = application.test_client()  # a browser without the session
    for _ in range(2):
        assert login(client, "alice", "wrong").status_code == 200
    frozen_clock.advance(seconds=601)  # type: ignore[attr-defined]
    for _ in range(2):
        assert login(client, "alice", "wrong").status_code == 200
    assert login(client, "alice", PASSWORD).status_code == 302


def throttle_writes(statements: list[str]) -> list[str]:
    """Those of ``statements`` that write to the database's throttle table."""
    return [s for s in statements if "login_throttle" in s and not s.upper().startswith("SELECT")]


@pytest.mark.skipif(REDIS_URL is not None, reason="the counters are in Redis in this pass (no statements)")
def test_a_sign_in_counts_its_try_before_the_password_and_a_success_leaves_no_counter(
        app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    with sql_statements() as statements:
        assert login(client, "alice", PASSWORD).status_code == 302
    # Held against the address and the name (and committed) before the password is checked, so that tries sent
    # at once see each other, one statement each where no counter was there; then the address's try given back
    # and the name's counter cleared, one statement each.
    writes = [w.split()[0] for w in throttle_writes(statements)]
    assert writes == ["INSERT", "INSERT", "DELETE", "DELETE"], statements
    assert db.session.scalars(select(LoginThrottle.key)).all() == []


@pytest.mark.skipif(REDIS_URL is not None, reason="the counters are in Redis in this pass, which expires them")
def test_counters_whose_window_is_over_are_collected_by_the_next_failure(
        make_app: Callable[..., Flask], frozen_clock: Any) -> None:
    """Names sprayed at the form leave no rows behind, whether or not anybody signs in afterwards."""
    application = make_app(login_failure_window_seconds=600, login_max_failures=5, login_ip_max_failures=100)
    client = application.test_client()
    for name in ("sprayed-1", "sprayed-2"):
        assert login(client, name, "guess").status_code == 200
    frozen_clock.advance(seconds=601)
    assert login(client, "sprayed-3", "guess").status_code == 200
    keys = set(db.session.scalars(select(LoginThrottle.key)))
    assert keys == {"user:sprayed-3", "ip:127.0.0.1"}, keys


def test_a_lockout_outlasting_the_failure_window_survives_the_collection(
        make_app: Callable[..., Flask], frozen_clock: Any) -> None:
    application = make_app(login_failure_window_seconds=60, login_lockout_seconds=600, login_max_failures=2,
                           login_ip_max_failures=100)
    make_user("alice", PASSWORD)
    client = application.test_client()
    assert login(client, "alice", "wrong").status_code == 200
    assert login(client, "alice", "wrong").status_code == 429
    frozen_clock.advance(seconds=120)  # the window is over, the lockout is not
    assert login(client, "sprayed", "guess").status_code == 200  # a failure: stale counters are collected
    assert login(client, "alice", PASSWORD).status_code == 429


def test_per_address_throttle_spans_usernames(make_app: Callable[..., Flask]) -> None:
    application = make_app(login_max_failures=100, login_ip_max_failures=3)
    make_user("alice", PASSWORD)
    attacker = {"environ_base": {"REMOTE_ADDR": "203.0.113.7"}}
    client = application.test_client()
    for name in ("u1", "u2"):
        assert login(client, name, "guess", **attacker).status_code == 200
    assert login(client, "u3", "guess", **attacker).status_code == 429
    # The address is locked out, whoever it tries...
    assert login(client, "alice", PASSWORD, **attacker).status_code == 429
    # ...while the same user from another address signs in.
    other = application.test_client()
    assert login(other, "alice", PASSWORD, environ_base={"REMOTE_ADDR": "198.51.100.1"}).status_code == 302
    (lockout,) = audit.events(type="login.lockout")
    assert lockout.client_ip == "203.0.113.7" and "ip:203.0.113.7" in (lockout.reason or "")


@pytest.mark.parametrize(
    "next_value", ["//evil.example", "https://evil.example", "/\\evil.example", "/\t/evil.example", "evil"]
)
def test_next_must_be_a_local_path(app: Flask, client: FlaskClient, next_value: str) -> None:
    make_user("alice", PASSWORD)
    resp = login(client, "alice", PASSWORD, next=next_value)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/"


def test_signed_in_user_is_sent_on_without_the_form_unless_force(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    login(client, "alice", PASSWORD)
    again = client.get("/login", query_string={"next": "/somewhere"})
    assert again.status_code == 302 and again.headers["Location"] == "/somewhere"
    forced = client.get("/login", query_string={"next": "/somewhere", "force": "1"})
    assert forced.status_code == 200 and b'type="password"' in forced.data
    assert b'value="alice"' in forced.data


def test_force_reauthentication_refreshes_authn_time_with_a_new_session_id(
    app: Flask, client: FlaskClient, frozen_clock: object
) -> None:
    from idp.store import ServiceProvider

    alice = make_user("alice", PASSWORD)
    first = set_cookie_header(login(client, "alice", PASSWORD))
    (old_id,) = session_state.user_session_ids(alice.id)
    old = session_state.get(old_id)
    assert old is not None
    sp = ServiceProvider(entity_id="https://sp.example.test", name="sp", metadata_xml="<x/>", nameid_format="x")
    db.session.add(sp)
    db.session.flush()
    session_state.save_participant(old, Participant(session_id=old.id, sp_id=sp.id, name_id="alice",
                                                    name_id_format="x", session_index="s1"), None, old.created_at)
    db.session.commit()
    first_authn = old.authn_at
    frozen_clock.advance(seconds=120)  # type: ignore[attr-defined]

    resp = login(client, "alice", PASSWORD, next="/x", force=True)
    assert resp.status_code == 302 and resp.headers["Location"] == "/x"
    second = set_cookie_header(resp)
    assert second.split(";")[0] != first.split(";")[0]
    db.session.expire_all()
    (new_id,) = session_state.user_session_ids(alice.id)
    new = session_state.get(new_id)
    assert new is not None and new.authn_at > first_authn
    # The SPs already signed in to stay attached, so Single Logout still reaches them.
    assert [p.sp_id for p in session_state.participants(new.id)] == [sp.id]
    assert session_state.participants(old.id) == []


def test_force_with_a_wrong_password_does_not_reauthenticate(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    login(client, "alice", PASSWORD)
    resp = login(client, "alice", "wrong", force=True)
    assert resp.status_code == 200 and GENERIC in resp.get_data(as_text=True)


def test_every_sign_in_gets_a_new_session_and_the_old_cookie_dies(app: Flask, client: FlaskClient) -> None:
    alice = make_user("alice", PASSWORD)
    bob = make_user("bob", PASSWORD)
    first = set_cookie_header(login(client, "alice", PASSWORD)).split(";")[0].split("=", 1)[1]
    second_resp = login(client, "bob", PASSWORD, force=True)
    second = set_cookie_header(second_resp).split(";")[0].split("=", 1)[1]
    assert first != second
    assert session_state.user_session_ids(alice.id) == [] and len(session_state.user_session_ids(bob.id)) == 1
    stale = app.test_client()
    stale.set_cookie("idp_session", first)
    assert stale.get("/").status_code == 302


def test_missing_fields_show_a_hint_not_an_error(app: Flask, client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    resp = client.post("/login", data={"csrf_token": csrf_token(page), "username": "", "password": ""})
    assert resp.status_code == 200
    assert "Enter your username and password." in resp.get_data(as_text=True)


def test_a_sign_in_whose_session_cannot_be_stored_records_no_success(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The "login success" event commits with the session it opened: when the session store fails (a fault
    injected into it), the user gets a 503 and the audit trail no sign-in that never happened."""
    make_user("alice", "correct horse battery")

    def lost(*_: object) -> None:
        raise OperationalError("INSERT INTO sso_sessions", {}, Exception("database went away"))

    monkeypatch.setattr(session_state, "create", lost)
    resp = login(client, "alice", "correct horse battery")
    assert resp.status_code == 503 and "Service unavailable" in resp.get_data(as_text=True)
    assert not signed_in(client)
    db.session.rollback()
    assert login_events("success") == []
    monkeypatch.undo()
    assert login(client, "alice", "correct horse battery").status_code == 302
    assert [e.username for e in login_events("success")] == ["alice"]


def test_sign_ins_whose_session_cannot_be_stored_leave_no_tries_held(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    """The database lost after a right password was checked (a failover): each such sign-in gets a 503 and
    gives back the tries it held against the name and the address; otherwise, behind an office's NAT, a few
    seconds of failover held the address to its limit until the window ended (15 minutes by default)."""
    application = make_app(login_max_failures=2, login_ip_max_failures=2)
    make_user("alice", PASSWORD)

    def lost(*_: object) -> None:
        raise OperationalError("INSERT INTO sso_sessions", {}, Exception("database went away"))

    with monkeypatch.context() as patched:
        patched.setattr(session_state, "create", lost)
        for _ in range(2):
            assert login(application.test_client(), "alice", PASSWORD).status_code == 503
    assert login(application.test_client(), "alice", PASSWORD).status_code == 302


def test_a_wrong_password_whose_failure_cannot_be_recorded_holds_no_try(make_app: Callable[..., Flask]) -> None:
    """The same for a wrong password: in the database the failure's count goes with the rollback, and its tries
    are given back rather than held (the name is then free); in Redis it was counted as it was judged, and with a
    limit of one the name is locked out."""
    application = make_app(login_max_failures=1, login_ip_max_failures=5)
    make_user("alice", PASSWORD)
    with audit_insert_lost("login"):
        assert login(application.test_client(), "alice", "wrong").status_code == 503
    expected = 429 if REDIS_URL is not None else 302
    assert login(application.test_client(), "alice", PASSWORD).status_code == expected


def test_a_try_no_directory_could_judge_whose_refusal_cannot_be_recorded_holds_no_try(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    application = make_app(login_max_failures=1, login_ip_max_failures=5)
    make_user("alice", PASSWORD)

    def unavailable(*args: object, **kwargs: object) -> NoReturn:
        raise DirectoryUnavailable("unavailable", "test: the directory is down")

    with monkeypatch.context() as patched, audit_insert_lost("login"):
        patched.setattr(chain, "check", unavailable)
        assert login(application.test_client(), "alice", PASSWORD).status_code == 503
    assert login(application.test_client(), "alice", PASSWORD).status_code == 302


@pytest.mark.skipif(REDIS_URL is None, reason="the counters are in the database in this pass")
def test_in_redis_a_failure_whose_record_is_lost_stays_counted_and_gives_back_no_other_try(
        make_app: Callable[..., Flask]) -> None:
    """Redis counts a wrong password as it is judged: the database lost as it is recorded undoes nothing there,
    and giving its tries back as well would take another request's hold on the same name."""
    application = make_app(login_max_failures=2, login_ip_max_failures=5)
    make_user("alice", PASSWORD)
    assert throttle.reserve("alice") is not None  # another request, still checking its password
    with audit_insert_lost("login"):
        assert login(application.test_client(), "alice", "wrong").status_code == 503
    # One failure and one try in flight take the limit of two.
    assert login(application.test_client(), "alice", PASSWORD).status_code == 429


def test_a_failure_that_cannot_be_recorded_for_a_bug_keeps_its_tries_held(make_app: Callable[..., Flask]) -> None:
    """Only a lost dependency gives tries back: a bug while a wrong password is recorded (a 500) must not turn
    it into an uncounted guess, so its tries stay held (with a limit of one, the name is refused)."""
    application = make_app(login_max_failures=1, login_ip_max_failures=5)
    make_user("alice", PASSWORD)
    with statement_fails("INSERT INTO audit_events", given="login", error=lambda _: ValueError("a bug")):
        assert login(application.test_client(), "alice", "wrong").status_code == 500
    assert login(application.test_client(), "alice", PASSWORD).status_code == 429


@pytest.mark.skipif(REDIS_URL is not None, reason="the counters are in Redis in this pass (no statements)")
def test_a_success_whose_counters_cannot_be_settled_holds_no_try(make_app: Callable[..., Flask]) -> None:
    """The database lost as a right password's counters are settled: a 503, and the tries given back once it
    answers again."""
    application = make_app(login_max_failures=1, login_ip_max_failures=5)
    make_user("alice", PASSWORD)
    with statement_fails("DELETE FROM login_throttle", nth=1) as lost:
        assert login(application.test_client(), "alice", PASSWORD).status_code == 503
    assert lost
    assert login(application.test_client(), "alice", PASSWORD).status_code == 302


def test_a_re_authentication_whose_session_cannot_be_stored_records_no_success(
    app: Flask, client: FlaskClient, frozen_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same with a live session whose load commits a write of its own (the idle time slides when the user
    took two minutes to type): that commit must not carry the new sign-in's event along (found by review)."""
    make_user("alice", "correct horse battery")
    assert login(client, "alice", "correct horse battery").status_code == 302
    page = client.get("/login", query_string={"force": "1"})
    text = page.get_data(as_text=True)
    frozen_clock.advance(seconds=120)

    def lost(*_: object) -> None:
        raise OperationalError("INSERT INTO sso_sessions", {}, Exception("database went away"))

    monkeypatch.setattr(session_state, "create", lost)
    resp = client.post(form_action(text), headers={"Referer": page.request.url},
                       data={"csrf_token": csrf_token(text), "username": "alice", "password": "correct horse battery"})
    assert resp.status_code == 503
    db.session.rollback()
    assert len(login_events("success")) == 1  # the first sign-in only


@pytest.mark.parametrize("rollback_fails", [False, True])
def test_a_try_that_fails_on_the_database_unjudged_is_not_counted(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, rollback_fails: bool) -> None:
    """The store failing under the check (a fault injected into it) answers 503 and gives the try back: users
    who retry through an outage are not locked out after it. Also when rolling back fails too (the connection
    is gone): the give-back is tried all the same."""
    application = make_app(login_max_failures=2, login_ip_max_failures=100)
    make_user("alice", PASSWORD)

    def lost(*args: object, **kwargs: object) -> NoReturn:
        raise OperationalError("UPDATE users", {}, Exception("server closed the connection unexpectedly"))

    rollback = type(db.session()).rollback

    def rollback_lost(session: object) -> None:
        rollback(session)  # (a real one: the injected fault left the connection usable)
        raise OperationalError("ROLLBACK", {}, Exception("server closed the connection unexpectedly"))

    with monkeypatch.context() as patched:
        patched.setattr(chain, "check", lost)
        if rollback_fails:
            patched.setattr(db.session, "rollback", lambda: rollback_lost(db.session()))
        for _ in range(3):
            assert login(application.test_client(), "alice", PASSWORD).status_code == 503
    assert login(application.test_client(), "alice", PASSWORD).status_code == 302
    assert audit.events(type="login.lockout") == []
