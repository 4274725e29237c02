"""SSO session state (idp.state.sessions) behaves the same in Redis and in the database: lifetimes judged by our
clock, deletion, a user's sessions, participants following a re-authentication, Single Logout's lookup by
NameID and SessionIndex; and in Redis, nothing in the session tables and a TTL on every key."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from helpers import SHORT_IDLE, SHORT_MAX, login, make_user, signed_in
from interop.pysaml2_sp import Browser, p3_request, python3_saml_sign_in
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from saml_peers import SP_SLO_URL, python3_saml_metadata, python3_saml_settings, register_sp
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from idp import audit, clock
from idp.authn import directory
from idp.extensions import db
from idp.runtime import settings as idp_settings
from idp.state import GRACE, redis_client
from idp.state import sessions as session_state
from idp.state.sessions import END_GRACE, Participant, SsoSession
from idp.store import ParticipantRow, ServiceProvider, SsoSessionRow

PASSWORD = "correct horse battery"
IDLE, MAX = SHORT_IDLE, SHORT_MAX  # the short_app fixture's lifetimes
SECURITY = {"logoutRequestSigned": True, "logoutResponseSigned": True, "wantMessagesSigned": True}


def only_session(user_id: int) -> SsoSession:
    (session_id,) = session_state.user_session_ids(user_id)
    stored = session_state.get(session_id)
    assert stored is not None
    return stored


def sp(entity_id: str) -> ServiceProvider:
    row = ServiceProvider(entity_id=entity_id, name=entity_id, metadata_xml="<x/>", nameid_format="x")
    db.session.add(row)
    db.session.commit()
    return row


def new_session(user_id: int, at: datetime, session_id: str) -> SsoSession:
    s = SsoSession(id=session_id, user_id=user_id, authn_at=at, created_at=at, last_seen_at=at,
                   expires_at=at + timedelta(seconds=MAX), client_ip="192.0.2.1")
    session_state.create(s, at)
    db.session.commit()
    return s


def attach(s: SsoSession, sp_id: int, name_id: str, index: str, previous: Participant | None = None) -> Participant:
    p = Participant(session_id=s.id, sp_id=sp_id, name_id=name_id, name_id_format="fmt", session_index=index)
    session_state.save_participant(s, p, previous, clock.now())
    db.session.commit()
    return p


def test_a_session_reads_back_as_it_was_stored(short_app: Flask, frozen_clock: Any) -> None:
    alice = make_user("alice", PASSWORD)
    s = new_session(alice.id, clock.now(), "a" * 64)
    assert session_state.get(s.id) == s
    assert session_state.get("b" * 64) is None
    touched = session_state.touch(s, clock.now() + timedelta(seconds=90))
    assert session_state.get(s.id) == touched and touched.last_seen_at - s.last_seen_at == timedelta(seconds=90)


def test_a_session_ends_at_its_absolute_lifetime_by_our_clock(short_app: Flask, frozen_clock: Any) -> None:
    alice = make_user("alice", PASSWORD)
    client = short_app.test_client()
    login(client, "alice", PASSWORD)
    stored = only_session(alice.id)
    assert stored.expires_at - stored.authn_at == timedelta(seconds=MAX)
    for _ in range(4):
        frozen_clock.advance(seconds=IDLE - 60)
        assert signed_in(client)
    frozen_clock.advance(seconds=MAX - 4 * (IDLE - 60))
    assert not signed_in(client)
    assert session_state.get(stored.id) is None and session_state.user_session_ids(alice.id) == []
    assert audit.events(type="session.expire")[0].reason == "absolute lifetime reached"


def test_an_idle_session_ends_by_our_clock(short_app: Flask, frozen_clock: Any) -> None:
    alice = make_user("alice", PASSWORD)
    client = short_app.test_client()
    login(client, "alice", PASSWORD)
    stored = only_session(alice.id)
    frozen_clock.advance(seconds=IDLE - 1)
    assert signed_in(client)  # touched: the idle limit now counts from here
    frozen_clock.advance(seconds=IDLE - 1)
    assert signed_in(client)
    frozen_clock.advance(seconds=IDLE)
    assert not signed_in(client)
    assert session_state.get(stored.id) is None
    assert audit.events(type="session.expire")[0].reason == "idle timeout"


def test_expired_sessions_are_ended_by_the_next_sign_in(short_app: Flask, frozen_clock: Any) -> None:
    """Housekeeping: a session nobody comes back to still ends (and its listeners hear it) in both backends,
    not only when Redis drops its key."""
    alice, bob = make_user("alice", PASSWORD), make_user("bob", PASSWORD)
    login(short_app.test_client(), "alice", PASSWORD)
    stale = only_session(alice.id)
    frozen_clock.advance(seconds=MAX)
    assert session_state.expired_ids(clock.now()) == [stale.id]
    login(short_app.test_client(), "bob", PASSWORD)
    assert session_state.get(stale.id) is None and session_state.user_session_ids(alice.id) == []
    assert session_state.expired_ids(clock.now()) == []
    assert len(session_state.user_session_ids(bob.id)) == 1


def test_the_housekeeping_looks_for_expired_sessions_at_most_once_a_minute(
        short_app: Flask, frozen_clock: Any) -> None:
    """Not a look-up at every sign-in: an expired session waits for the next sign-in a minute after the last look
    (it is refused when read meanwhile), then ends."""
    users = [make_user(name, PASSWORD) for name in ("alice", "bob", "carol", "dave")]
    login(short_app.test_client(), "alice", PASSWORD)  # looks (nothing yet), and not again for a minute
    stale = only_session(users[0].id)
    frozen_clock.advance(seconds=MAX - 30)
    login(short_app.test_client(), "bob", PASSWORD)  # looks: alice's session has 30 seconds left
    assert session_state.get(stale.id) is not None
    frozen_clock.advance(seconds=40)
    login(short_app.test_client(), "carol", PASSWORD)  # 40 seconds after the last look: no look
    assert session_state.expired_ids(clock.now()) == [stale.id]
    frozen_clock.advance(seconds=20)
    login(short_app.test_client(), "dave", PASSWORD)
    assert session_state.expired_ids(clock.now()) == []
    assert session_state.user_session_ids(users[0].id) == []


def test_a_sweep_ends_a_batch_and_the_next_sign_in_takes_the_rest(short_app: Flask, frozen_clock: Any) -> None:
    """However many sessions are due, a sign-in that sweeps ends SWEEP_BATCH of them (it must not wait on
    thousands), and while more are due every sign-in sweeps again."""
    alice = make_user("alice", PASSWORD)
    for name in ("bob", "carol"):
        make_user(name, PASSWORD)
    stale = [new_session(alice.id, clock.now(), f"{i:064x}") for i in range(session_state.SWEEP_BATCH + 5)]
    frozen_clock.advance(seconds=MAX)
    login(short_app.test_client(), "bob", PASSWORD)
    assert len(session_state.user_session_ids(alice.id)) == 5
    login(short_app.test_client(), "carol", PASSWORD)  # at once: no minute's wait
    assert session_state.user_session_ids(alice.id) == []
    assert session_state.expired_ids(clock.now()) == [] and len(stale) == session_state.SWEEP_BATCH + 5


def test_a_sweep_that_fails_costs_the_sign_in_nothing_and_is_tried_again(
        short_app: Flask, frozen_clock: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = make_user("alice", PASSWORD), make_user("bob", PASSWORD)
    stale = new_session(alice.id, clock.now(), "e" * 64)
    frozen_clock.advance(seconds=MAX)
    with monkeypatch.context() as patched:
        patched.setattr(session_state, "expired_ids", lambda now: (_ for _ in ()).throw(
            OperationalError("SELECT", {}, ConnectionError("lock timeout"))))
        client = short_app.test_client()
        assert login(client, "bob", PASSWORD).status_code == 302
    assert signed_in(client) and len(session_state.user_session_ids(bob.id)) == 1
    assert "session housekeeping failed (tried again in a minute)" in caplog.text
    assert session_state.get(stale.id) is not None
    frozen_clock.advance(seconds=61)
    login(short_app.test_client(), "bob", PASSWORD)
    assert session_state.get(stale.id) is None


def test_the_housekeeping_looks_again_at_once_when_our_clock_was_set_back(
        short_app: Flask, frozen_clock: Any) -> None:
    alice, bob = make_user("alice", PASSWORD), make_user("bob", PASSWORD)
    login(short_app.test_client(), "alice", PASSWORD)  # looks, and not again until a minute from now
    frozen_clock.advance(hours=-2)
    stale = new_session(alice.id, clock.now() - timedelta(seconds=MAX + 1), "s" * 64)  # expired by this clock
    login(short_app.test_client(), "bob", PASSWORD)  # a minute from the old "now" is hours away: looks now
    assert session_state.get(stale.id) is None and session_state.expired_ids(clock.now()) == []
    assert len(session_state.user_session_ids(bob.id)) == 1


def test_deleting_forgets_the_session_its_participants_and_its_index_entries(short_app: Flask) -> None:
    alice = make_user("alice", PASSWORD)
    app1 = sp("https://sp1.example.test")
    kept, gone = new_session(alice.id, clock.now(), "k" * 64), new_session(alice.id, clock.now(), "g" * 64)
    attach(kept, app1.id, "alice@sp1", "idx-k")
    attach(gone, app1.id, "alice@sp1", "idx-g")
    session_state.delete([gone.id])
    db.session.commit()
    assert session_state.get(gone.id) is None and session_state.participants(gone.id) == []
    assert session_state.user_session_ids(alice.id) == [kept.id]
    assert session_state.find_by_name_id(app1.id, "alice@sp1", []) == [kept]
    # A touch racing the deletion does not bring the session back.
    session_state.touch(gone, clock.now())
    assert session_state.get(gone.id) is None


def test_a_users_sessions_are_theirs_and_end_together(short_app: Flask) -> None:
    alice, bob = make_user("alice", PASSWORD), make_user("bob", PASSWORD)
    laptop, phone, other = short_app.test_client(), short_app.test_client(), short_app.test_client()
    login(laptop, "alice", PASSWORD)
    login(phone, "alice", PASSWORD)
    login(other, "bob", PASSWORD)
    assert len(set(session_state.user_session_ids(alice.id))) == 2
    assert len(session_state.user_session_ids(bob.id)) == 1
    assert directory.disable_user("alice", actor="test") == 2
    assert session_state.user_session_ids(alice.id) == []
    assert not signed_in(laptop) and not signed_in(phone) and signed_in(other)


def test_participants_follow_a_reauthentication_and_slo_finds_them_there(
    short_app: Flask, frozen_clock: Any
) -> None:
    alice = make_user("alice", PASSWORD)
    app1, app2 = sp("https://sp1.example.test"), sp("https://sp2.example.test")
    client = short_app.test_client()
    login(client, "alice", PASSWORD)
    old = only_session(alice.id)
    attach(old, app2.id, "alice@sp2", "idx-2")
    attach(old, app1.id, "alice@sp1", "idx-1")
    frozen_clock.advance(seconds=120)
    login(client, "alice", PASSWORD, force=True)
    new = only_session(alice.id)
    assert new.id != old.id and new.authn_at == old.authn_at + timedelta(seconds=120)
    assert [(p.sp_id, p.name_id, p.session_index) for p in session_state.participants(new.id)] == [
        (app1.id, "alice@sp1", "idx-1"), (app2.id, "alice@sp2", "idx-2")]
    assert session_state.participants(old.id) == [] and session_state.get(old.id) is None
    assert session_state.find_by_name_id(app1.id, "alice@sp1", ["idx-1"]) == [new]
    # Another user signing in on that browser replaces the session and its participants altogether.
    make_user("bob", PASSWORD)
    login(client, "bob", PASSWORD, force=True)
    assert session_state.participants(new.id) == []
    assert session_state.find_by_name_id(app1.id, "alice@sp1", []) == []


def test_slo_finds_sessions_by_nameid_and_session_index(short_app: Flask) -> None:
    alice, bob = make_user("alice", PASSWORD), make_user("bob", PASSWORD)
    app1, app2 = sp("https://sp1.example.test"), sp("https://sp2.example.test")
    laptop, phone = new_session(alice.id, clock.now(), "l" * 64), new_session(alice.id, clock.now(), "p" * 64)
    bobs = new_session(bob.id, clock.now(), "b" * 64)
    attach(laptop, app1.id, "persistent-alice", "idx-laptop")
    attach(phone, app1.id, "persistent-alice", "idx-phone")
    attach(bobs, app1.id, "persistent-bob", "idx-bob")
    first = attach(phone, app2.id, "transient-1", "idx-phone-2")

    def found(sp_id: int, name_id: str, indexes: list[str]) -> set[str]:
        return {s.id for s in session_state.find_by_name_id(sp_id, name_id, indexes)}

    assert found(app1.id, "persistent-alice", []) == {laptop.id, phone.id}
    assert found(app1.id, "persistent-alice", ["idx-phone"]) == {phone.id}
    assert found(app1.id, "persistent-alice", ["idx-phone", "idx-laptop"]) == {laptop.id, phone.id}
    assert found(app1.id, "persistent-alice", ["idx-bob"]) == set()
    assert found(app2.id, "persistent-alice", []) == set()
    assert found(app1.id, "persistent-bob", []) == {bobs.id}
    # A new transient NameID for the same SP replaces the old one: the old one finds nothing any more.
    attach(phone, app2.id, "transient-2", "idx-phone-2", previous=first)
    assert found(app2.id, "transient-1", []) == set()
    assert found(app2.id, "transient-2", ["idx-phone-2"]) == {phone.id}
    assert session_state.participant(phone.id, app2.id) == Participant(phone.id, app2.id, "transient-2", "fmt",
                                                                       "idx-phone-2")


# -- Redis only -----------------------------------------------------------------------------------------------


@pytest.fixture
def redis_mode(live_server: Any) -> redis.Redis:
    client = redis_client()
    if client is None:
        pytest.skip("sessions live in the database in this pass (IDP_TEST_REDIS_URL unset); CI's Redis pass runs it")
    return client


def table_rows() -> int:
    db.session.rollback()
    return sum(db.session.scalar(select(func.count()).select_from(t)) or 0 for t in (SsoSessionRow, ParticipantRow))


def test_an_sp_answered_in_the_old_session_while_it_goes_on_as_a_new_one_is_moved_not_dropped(
    live_server: Any, redis_mode: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another instance answers an SP in the session just as the user signs in again here: its participant is
    saved between this instance reading the old session's participants and forgetting the session. It must go on
    in the new session (Single Logout reaches that SP), not vanish with the old one."""
    alice = make_user("alice", PASSWORD)
    app1, app2 = sp("https://sp1.example.test"), sp("https://sp2.example.test")
    client = live_server.app.test_client()
    login(client, "alice", PASSWORD)
    old = only_session(alice.id)
    attach(old, app1.id, "alice@sp1", "idx-1")
    forget = session_state._forget
    elsewhere: list[bool] = []

    def answered_elsewhere_first(pipe: Any, ended: Any) -> None:
        if not elsewhere:  # once, after the old session's participants were read
            elsewhere.append(True)
            attach(old, app2.id, "alice@sp2", "idx-2")
        forget(pipe, ended)

    monkeypatch.setattr(session_state, "_forget", answered_elsewhere_first)
    login(client, "alice", PASSWORD, force=True)
    monkeypatch.undo()
    new = only_session(alice.id)
    assert elsewhere and new.id != old.id
    assert sorted(p.sp_id for p in session_state.participants(new.id)) == [app1.id, app2.id]
    assert session_state.find_by_name_id(app2.id, "alice@sp2", ["idx-2"]) == [new]


def test_in_redis_sessions_stay_out_of_the_tables_and_every_key_expires(
    live_server: Any, redis_mode: redis.Redis
) -> None:
    directory.create_user("alice", password=PASSWORD, actor="test")
    db.session.commit()
    register_sp(python3_saml_metadata(security=SECURITY))
    db.session.commit()
    metadata = requests.get(live_server.url + "/saml/metadata", timeout=10).content
    settings = python3_saml_settings(metadata, security=SECURITY)
    browser = Browser(live_server.url, "alice", PASSWORD)
    auth = python3_saml_sign_in(browser, settings)
    assert table_rows() == 0

    keys = set(redis_mode.keys("idp:session*"))
    (session_key,) = {k for k in keys if k.count(":") == 2 and k.startswith("idp:session:")}
    session_id = session_key.split(":")[2]
    assert {f"idp:session:{session_id}:sps", "idp:session-expiry"} <= keys
    assert any(k.startswith("idp:session-user:") for k in keys)
    assert any(k.startswith("idp:session-nameid:") for k in keys)
    limit = (timedelta(seconds=idp_settings().session_max_seconds) + GRACE).total_seconds()
    for key in keys - {"idp:session-expiry"}:  # that one is pruned by the housekeeping, not by a TTL
        assert 0 < redis_mode.ttl(key) <= limit, key

    # Single Logout by NameID and SessionIndex, without the cookie: the session and its indexes go together.
    start = OneLogin_Saml2_Auth(p3_request(SP_SLO_URL), settings)
    url = start.logout(name_id=auth.get_nameid(), session_index=auth.get_session_index(),
                       name_id_format=auth.get_nameid_format())
    hop = Browser(live_server.url).get(url)
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), settings)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == [], done.get_last_error_reason()
    assert table_rows() == 0
    # The session and its index entries are gone (emptied index sets too). Its id stays in the expiry index, due
    # a minute later, until a housekeeping has ended it again and committed (a failed commit of the logout loses
    # nothing).
    assert redis_mode.keys("idp:session*") == ["idp:session-expiry"]
    ((left, due),) = redis_mode.zrange("idp:session-expiry", 0, -1, withscores=True)
    assert left == session_id and due == pytest.approx(time.time() + END_GRACE.total_seconds(), abs=10)


def test_a_participant_read_in_a_request_follows_its_writes_and_rollbacks(short_app: Flask) -> None:
    """participant() answers from what the request read; a write, or a rollback of one, makes it read again."""
    if redis_client() is not None:
        pytest.skip("participants live in Redis in this pass, outside the database's transactions")
    alice = make_user("alice", PASSWORD)
    app1 = sp("https://sp1.example.test")
    s = new_session(alice.id, clock.now(), "r" * 64)
    with short_app.test_request_context("/"):
        assert session_state.participant(s.id, app1.id) is None
        p = Participant(session_id=s.id, sp_id=app1.id, name_id="n", name_id_format="fmt", session_index="i")
        session_state.save_participant(s, p, None, clock.now())
        assert session_state.participant(s.id, app1.id) == p
        db.session.rollback()
        assert session_state.participant(s.id, app1.id) is None
