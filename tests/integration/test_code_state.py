"""Authorization and device codes (idp.state.oidc_codes, idp.state.device_codes) behave the same in the
database and in Redis: each is used once even when eight uses race for it, a replay revokes what the first
use issued, expiry follows the clock, polling is paced, the end of a session ends its codes. In Redis mode,
nothing about codes is written to the database and every key expires."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

import lxml.html
import pytest
import redis
import requests
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import Flask
from helpers import make_user
from oidc_peers import (
    DEVICE_GRANT,
    PASSWORD,
    REDIRECT_URI,
    browse,
    device_authorization,
    error_of,
    poll,
    register,
)
from sqlalchemy import func, select

from idp import audit, clock
from idp.extensions import db
from idp.oidc import clients
from idp.state import device_codes, oidc_codes, sessions
from idp.state.device_codes import DeviceCode
from idp.state.oidc_codes import AuthorizationCode, Use
from idp.state.sessions import SsoSession
from idp.store import OidcAuthorizationCode, OidcDeviceCode, OidcToken, User
from idp.store.oidc import digest

T = TypeVar("T")
REDIS_URL = os.environ.get("IDP_TEST_REDIS_URL")


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, email="alice@example.test")
    return live_server


def authorize_url(idp: Any, reg: clients.Registered, verifier: str, **extra: str) -> str:
    return idp.url + "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": reg.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid email",
        "state": "s1", "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256",
        **extra})


def code_for(idp: Any, reg: clients.Registered, http: requests.Session | None = None,
             **extra: str) -> tuple[str, str]:
    """(code, verifier), signing in through the real login form unless ``http`` has a session."""
    verifier = generate_token(48)
    arrival = browse(http or requests.Session(), authorize_url(idp, reg, verifier, **extra))
    return arrival.params["code"], verifier


def exchange(idp: Any, reg: clients.Registered, code: str, verifier: str) -> requests.Response:
    return requests.post(idp.url + "/oauth/token", auth=(reg.client_id, reg.client_secret), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier})


def active(idp: Any, reg: clients.Registered, token: str) -> bool:
    resp = requests.post(idp.url + "/oauth/introspect", data={"token": token},
                         auth=(reg.client_id, reg.client_secret), timeout=10)
    return bool(resp.json()["active"])


def at_once(n: int, work: Callable[[], T]) -> list[T]:
    """Run ``work`` in ``n`` threads released together; their results (an exception fails the test)."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(10)
            results.append(work())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(results) == n
    return results


def in_context(app: Flask, work: Callable[[], T]) -> Callable[[], T]:
    """``work`` in its own app context (its own database session), committed, as one request would be."""
    def run() -> T:
        with app.app_context():
            try:
                result = work()
                db.session.commit()
                return result
            finally:
                db.session.remove()
    return run


def sign_out(idp: Any, http: requests.Session) -> None:
    page = http.get(idp.url + "/logout", timeout=10)
    csrf = lxml.html.fromstring(page.text).xpath("//input[@name='csrf_token']/@value")[0]
    resp = http.post(idp.url + "/logout", data={"csrf_token": csrf}, headers={"Referer": page.url}, timeout=10)
    assert resp.status_code == 200


# --- authorization codes --------------------------------------------------------------------------------

def a_code(user_id: int, client_id: str = "client", session_id: str | None = None) -> AuthorizationCode:
    t = clock.now()
    return AuthorizationCode(
        code_hash=digest(generate_token(48)), client_id=client_id, user_id=user_id, session_id=session_id,
        redirect_uri=REDIRECT_URI, scope="openid", nonce=generate_token(10), auth_time=t,
        code_challenge=None, code_challenge_method=None, expires_at=t + oidc_codes.LIFETIME)


def a_session(user_id: int) -> str:
    """A stored SSO session of the user; its id."""
    t = clock.now()
    session = SsoSession(id=digest(generate_token(32)), user_id=user_id, authn_at=t, created_at=t, last_seen_at=t,
                         expires_at=t + timedelta(hours=8), client_ip=None)
    sessions.create(session, t)
    db.session.commit()
    return session.id


def test_a_code_raced_by_eight_exchanges_is_used_once(app: Flask) -> None:
    user_id = make_user("alice").id
    code = a_code(user_id, session_id=a_session(user_id))
    oidc_codes.save(code)
    db.session.commit()

    found = oidc_codes.find(code.code_hash)  # as every exchange reads it before one of them marks it
    assert found is not None and found.used_at is None
    outcomes = at_once(8, in_context(app, lambda: oidc_codes.use(found, clock.now())))
    assert sorted(o.value for o in outcomes) == ["again"] * 7 + ["first"]
    used = oidc_codes.find(code.code_hash)
    assert used is not None and used.used_at is not None  # remembered, marked used
    assert oidc_codes.use(used, clock.now()) is Use.AGAIN


def test_a_second_token_request_for_one_code_is_refused_and_revokes_the_first_answer(idp: Any) -> None:
    """Over HTTP, two exchanges of one code get one answer, and the other is a replay that revokes it. The two
    requests are sent together but may run one after the other; that one use wins a true race is shown by
    test_a_code_raced_by_eight_exchanges_is_used_once."""
    reg = register()
    code, verifier = code_for(idp, reg)
    answers = at_once(2, lambda: exchange(idp, reg, code, verifier))
    assert sorted(a.status_code for a in answers) == [200, 400]
    (won,) = (a.json() for a in answers if a.status_code == 200)
    (lost,) = (a.json() for a in answers if a.status_code == 400)
    assert lost["error"] == "invalid_grant"
    # The second was a replay: what the first got is revoked (RFC 6749 4.1.2).
    assert not active(idp, reg, won["access_token"]) and not active(idp, reg, won["refresh_token"])
    db.session.expire_all()
    assert [e.outcome for e in audit.events(type="oidc.code_reuse")] == ["failure"]


def test_an_exchange_that_loses_the_race_for_its_code_is_audited_as_refused_only(
    idp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The losing side of a true race: another exchange marks the code used between this one reading it and
    marking it (in Redis mode this one's tokens are committed by then). The refusal is the only oidc.token
    event, beside the code reuse; what either side got is revoked. Only the Redis pass can fail without the fix:
    in the database the refused exchange's rollback takes its event with it anyway."""
    reg = register()
    code, verifier = code_for(idp, reg)
    find_joined = oidc_codes.find_joined

    def find_then_lose(code_hash: str, statement: Any) -> tuple[AuthorizationCode | None, Any]:
        found, rows = find_joined(code_hash, statement)
        if found is not None:  # the winner, in its own request
            assert in_context(idp.app, lambda: oidc_codes.use(found, clock.now()))() is Use.FIRST
        return found, rows

    monkeypatch.setattr(oidc_codes, "find_joined", find_then_lose)
    lost = exchange(idp, reg, code, verifier)
    assert lost.status_code == 400 and lost.json()["error"] == "invalid_grant"
    db.session.expire_all()
    assert [e.outcome for e in audit.events(type="oidc.token")] == ["failure"]
    assert [e.outcome for e in audit.events(type="oidc.code_reuse")] == ["failure"]
    assert db.session.scalar(select(func.count()).select_from(OidcToken).where(OidcToken.revoked_at.is_(None))) == 0


def test_a_code_replayed_later_revokes_what_it_gave(idp: Any, frozen_clock: Any) -> None:
    reg = register()
    code, verifier = code_for(idp, reg)
    tokens = exchange(idp, reg, code, verifier).json()
    frozen_clock.advance(minutes=5)  # past the code's expiry: a used code is still recognised
    replay = exchange(idp, reg, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert not active(idp, reg, tokens["access_token"])


def test_a_code_expires_by_the_clock(idp: Any, frozen_clock: Any) -> None:
    reg = register()
    http = requests.Session()
    early, early_verifier = code_for(idp, reg, http)
    late, late_verifier = code_for(idp, reg, http)
    frozen_clock.advance(seconds=oidc_codes.LIFETIME.total_seconds() - 1)
    assert exchange(idp, reg, early, early_verifier).status_code == 200
    frozen_clock.advance(seconds=1)
    expired = exchange(idp, reg, late, late_verifier)
    assert expired.status_code == 400 and expired.json()["error"] == "invalid_grant"


def test_the_end_of_the_session_ends_its_codes_and_signing_in_again_keeps_them(idp: Any) -> None:
    reg = register()
    http = requests.Session()
    ended, ended_verifier = code_for(idp, reg, http)
    sign_out(idp, http)
    refused = exchange(idp, reg, ended, ended_verifier)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"

    kept, kept_verifier = code_for(idp, reg, http)
    again = browse(http, authorize_url(idp, reg, generate_token(48), prompt="login"))
    assert again.login_prompts == 1  # the same user signs in again: the session goes on under a new id
    tokens = exchange(idp, reg, kept, kept_verifier).json()
    assert active(idp, reg, tokens["refresh_token"])
    sign_out(idp, http)  # the tokens followed the session to its new id, and end with it
    assert not active(idp, reg, tokens["refresh_token"])


def test_a_code_saved_just_after_its_session_ended_cannot_be_exchanged(idp: Any) -> None:
    """An authorization request (on another instance, say) read the session just before a logout ended it, and
    saved its code just after: the end could not expire a code it did not see, and the exchange must not issue
    tokens from an ended sign-in."""
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)  # signed in: the browser's session
    user_id = db.session.scalar(select(User.id).where(User.username == "alice"))
    [session_id] = sessions.user_session_ids(user_id)
    sign_out(idp, http)
    code, verifier = generate_token(48), generate_token(48)
    t = clock.now()
    oidc_codes.save(AuthorizationCode(
        code_hash=digest(code), client_id=reg.client_id, user_id=user_id, session_id=session_id,
        redirect_uri=REDIRECT_URI, scope="openid email", nonce=None, auth_time=t,
        code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256",
        expires_at=t + oidc_codes.LIFETIME))
    db.session.commit()
    refused = exchange(idp, reg, code, verifier)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    assert db.session.scalar(select(func.count()).select_from(OidcToken)
                             .where(OidcToken.code_hash == digest(code))) == 0


def test_a_nonce_is_refused_while_its_code_is_remembered(idp: Any, frozen_clock: Any) -> None:
    reg = register()
    http = requests.Session()
    assert "code" in browse(http, authorize_url(idp, reg, generate_token(48), nonce="n-1")).params
    replayed = browse(http, authorize_url(idp, reg, generate_token(48), nonce="n-1")).params
    assert replayed["error"] == "invalid_request"
    other = register(name="another client")  # nonces are per client
    assert "code" in browse(http, authorize_url(idp, other, generate_token(48), nonce="n-1")).params
    frozen_clock.advance(seconds=(oidc_codes.LIFETIME + oidc_codes.KEEP).total_seconds() + 1)
    assert "code" in browse(http, authorize_url(idp, reg, generate_token(48), nonce="n-1")).params


def test_a_head_request_issues_no_code_and_leaves_the_nonce_unused(idp: Any) -> None:
    """Link checkers and prefetchers send HEAD: a signed-in user's authorization link must not act for them."""
    reg = register()
    http = requests.Session()
    code_for(idp, reg, http)  # signed in
    issued = len(audit.events(type="oidc.authorize"))
    assert http.head(authorize_url(idp, reg, generate_token(48), nonce="n-2"), timeout=10).status_code == 200
    assert len(audit.events(type="oidc.authorize")) == issued
    assert "code" in browse(http, authorize_url(idp, reg, generate_token(48), nonce="n-2")).params


def test_the_codes_of_a_deleted_client_cannot_be_exchanged(idp: Any) -> None:
    reg = register()
    code, verifier = code_for(idp, reg)
    clients.remove(reg.client_id, actor="test")
    db.session.commit()
    resp = exchange(idp, reg, code, verifier)
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


# --- device codes ---------------------------------------------------------------------------------------

def a_device_code(client_id: str = "tv") -> DeviceCode:
    return DeviceCode(device_code_hash=digest(generate_token(48)), user_code_hash=digest(generate_token(8)),
                      client_id=client_id, scope="openid", expires_at=clock.now() + timedelta(minutes=10),
                      poll_interval=5)


def test_a_user_code_is_taken_once(app: Flask) -> None:
    first = a_device_code()
    assert device_codes.issue(first)
    db.session.commit()
    assert device_codes.user_code_taken(first.user_code_hash)
    clash = DeviceCode(device_code_hash=digest(generate_token(48)), user_code_hash=first.user_code_hash,
                       client_id="tv", scope="", expires_at=first.expires_at, poll_interval=5)
    assert not device_codes.issue(clash)
    db.session.commit()
    found = device_codes.find_by_user_code(first.user_code_hash)
    assert found is not None and found.device_code_hash == first.device_code_hash
    assert device_codes.find(clash.device_code_hash) is None


def test_a_device_code_raced_by_eight_exchanges_is_used_once(app: Flask) -> None:
    user = make_user("alice")
    code = a_device_code()
    device_codes.issue(code)
    assert device_codes.decide(code.device_code_hash, True, user.id, clock.now(), clock.now())
    db.session.commit()
    wins = at_once(8, in_context(app, lambda: device_codes.use(code.device_code_hash, clock.now())))
    assert sorted(wins) == [False] * 7 + [True]


def test_a_decision_is_recorded_once_and_only_while_pending(app: Flask, frozen_clock: Any) -> None:
    user_id = make_user("alice").id  # an id, not the row: the threads must not touch this thread's session
    code = a_device_code()
    device_codes.issue(code)
    db.session.commit()
    decided = at_once(4, in_context(app, lambda: device_codes.decide(
        code.device_code_hash, True, user_id, clock.now(), clock.now())))
    assert sorted(decided) == [False] * 3 + [True]
    late = a_device_code()
    device_codes.issue(late)
    db.session.commit()
    frozen_clock.advance(minutes=10)
    assert not device_codes.decide(late.device_code_hash, False, user_id, clock.now(), clock.now())


def test_two_polls_at_once_cannot_both_pass_the_pace(app: Flask, frozen_clock: Any) -> None:
    code = a_device_code()
    device_codes.issue(code)
    db.session.commit()

    unpolled = device_codes.find(code.device_code_hash)  # as both polls read it before either recorded itself
    assert unpolled is not None
    paced = at_once(2, in_context(app, lambda: device_codes.pace(unpolled, clock.now(), 5)))
    assert sorted(paced) == [False, True]  # one of them is too soon: slow_down
    found = device_codes.find(code.device_code_hash)
    assert found is not None and found.poll_interval == 10
    frozen_clock.advance(seconds=9)
    assert device_codes.pace(found, clock.now(), 5)  # still too soon for the grown interval
    frozen_clock.advance(seconds=15)
    found = device_codes.find(code.device_code_hash)
    assert found is not None and found.poll_interval == 15
    assert not device_codes.pace(found, clock.now(), 5)


def test_an_approved_device_code_gives_one_token_and_a_second_poll_is_refused(idp: Any) -> None:
    """Over HTTP, two polls of one approved device code get one token between them. They are sent together but
    may run one after the other; that one use wins a true race is shown by
    test_a_device_code_raced_by_eight_exchanges_is_used_once."""
    tv = register(name="tv", public=True, redirect_uris=(), grant_types=(DEVICE_GRANT,))
    grant = device_authorization(idp, tv.client_id)
    user = make_user("bob")
    assert device_codes.decide(digest(grant["device_code"]), True, user.id, clock.now(), clock.now())
    db.session.commit()
    answers = at_once(2, lambda: poll(idp, tv.client_id, grant["device_code"]))
    assert sorted(a.status_code for a in answers) == [200, 400]
    assert [error_of(a) for a in answers if a.status_code == 400] == ["invalid_grant"]


# --- Redis only -----------------------------------------------------------------------------------------

redis_only = pytest.mark.skipif(REDIS_URL is None, reason="codes are in the database without IDP_TEST_REDIS_URL")


@redis_only
def test_in_redis_codes_leave_no_row_and_every_key_expires(idp: Any) -> None:
    reg = register(grant_types=("authorization_code", "refresh_token", DEVICE_GRANT))
    http = requests.Session()
    code, verifier = code_for(idp, reg, http, nonce="a nonce")
    assert exchange(idp, reg, code, verifier).status_code == 200
    grant = requests.post(idp.url + "/oauth/device", data={"scope": "openid"},
                          auth=(reg.client_id, reg.client_secret), timeout=10).json()
    assert error_of(requests.post(idp.url + "/oauth/token", auth=(reg.client_id, reg.client_secret), timeout=10,
                                  data={"grant_type": DEVICE_GRANT, "device_code": grant["device_code"]})) \
        == "authorization_pending"
    sign_out(idp, http)

    db.session.expire_all()
    for model in (OidcAuthorizationCode, OidcDeviceCode):
        assert db.session.scalar(select(func.count()).select_from(model)) == 0
    assert REDIS_URL is not None
    with redis.Redis.from_url(REDIS_URL, decode_responses=True) as r:
        keys = {k: r.type(k) for k in r.scan_iter("idp:*")}
        ours = {"code", "nonce", "code-session", "device", "device-user"}
        assert ours <= {k.split(":")[1] for k in keys}
        secrets = (code, grant["device_code"], grant["user_code"], grant["user_code"].replace("-", ""))
        for key, kind in keys.items():
            if key.split(":")[1] in ours:
                assert r.ttl(key) > 0, key
            values = list(r.hgetall(key).values()) if kind == "hash" else [r.get(key)] if kind == "string" else []
            assert not any(s in v for s in secrets for v in [key, *values] if v), key  # codes only as digests
