"""Revalidation against a real slapd (a spare one per test, changed behind the bridge's back with ldapmodify): a
directory user deleted or moved out of groups loses their SSO session, OIDC tokens and groups once the last check
is older than revalidate_seconds, with a python3-saml SP and authlib's OIDC client on the other side."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ldap3
import pytest
import requests
from conftest import Clock, LiveServer
from helpers import audit_insert_lost
from ldap_server import SUFFIX, Slapd, SlapdProcess, directory_config, ldapmodify
from oidc_peers import AuthlibRp, browse, register, rp, start
from saml_peers import ATTRIBUTE_MAP, OneLoginSp, idp_metadata, is_login_page, read_post_form, register_sp, submit_login
from sqlalchemy import select

from idp import audit
from idp.authn.connectors import admin
from idp.authn.connectors.ldap_connector import LdapConnector
from idp.authn.revalidation import BACKOFF
from idp.cli import cli
from idp.errors import DirectoryUnavailable
from idp.extensions import db
from idp.state import sessions as session_state
from idp.store import User

REVALIDATE = 60
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"


@pytest.fixture
def corp(spare_slapd: SlapdProcess) -> Slapd:
    return Slapd(ldap_url=spare_slapd.ldap_url, ldaps_url=spare_slapd.ldaps_url, ca_file=spare_slapd.dir / "ca.pem",
                 wrong_ca_file=spare_slapd.dir / "wrong-ca.pem")


@pytest.fixture
def idp(directory_server: Callable[..., LiveServer], corp: Slapd, tmp_path: Path, frozen_clock: Clock
        ) -> Iterator[LiveServer]:
    # No group cache: what is under test is when the directory is asked, not the membership cache.
    server = directory_server(directory_config(corp, tmp_path, revalidate_seconds=REVALIDATE, group_cache_seconds=0))
    with server.app.app_context():
        yield server
        db.session.remove()


@dataclass
class SignedIn:
    """One browser signed in through a SAML SP, then (same SSO session) an OIDC client holding tokens."""

    http: requests.Session
    sp: OneLoginSp
    session: AuthlibRp
    client_id: str
    client_secret: str
    token: dict[str, Any]


def sign_in(idp: LiveServer, username: str, password: str) -> SignedIn:
    sp = OneLoginSp(idp_metadata(idp.url))
    register_sp(sp.metadata(), attribute_map=tuple(ATTRIBUTE_MAP))
    reg = register()
    db.session.commit()
    http = requests.Session()
    url, request_id = sp.redirect_login("https://sp.example.test/after")
    page = http.get(url, timeout=10)
    assert is_login_page(page)
    auth = sp.process_response(read_post_form(submit_login(http, page, username, password).text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    session = rp(idp.url, reg)
    authorization = start(session)
    arrival = browse(http, authorization.url, username=None)  # the SSO session: no password asked
    token = session.fetch_token(session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                code_verifier=authorization.verifier, state=authorization.state)
    return SignedIn(http, sp, session, reg.client_id, reg.client_secret, token)


def saml_groups(s: SignedIn) -> list[str] | None:
    """The groups of a new assertion for the browser's session; None when the IdP asks for a password instead."""
    url, request_id = s.sp.redirect_login("https://sp.example.test/again")
    page = s.http.get(url, timeout=10)
    if is_login_page(page):
        return None
    auth = s.sp.process_response(read_post_form(page.text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    groups: list[str] = auth.get_attributes().get("groups", [])
    return groups


def userinfo(idp: LiveServer, s: SignedIn) -> requests.Response:
    return requests.get(idp.url + "/oauth/userinfo", headers={"Authorization": f"Bearer {s.token['access_token']}"},
                        timeout=10)


def refresh(idp: LiveServer, s: SignedIn) -> requests.Response:
    """A refresh with authlib's client (the new tokens kept, the ID token checked); the raw answer on refusal."""
    resp = requests.post(idp.url + "/oauth/token", auth=(s.client_id, s.client_secret), timeout=10,
                         data={"grant_type": "refresh_token", "refresh_token": s.token["refresh_token"]})
    if resp.ok:
        s.token = resp.json()
    return resp


def id_token_groups(s: SignedIn, nonce: str | None = None) -> list[str]:
    # The bridge's clock was moved forward by the test; authlib checks "iat" against the real one.
    claims = s.session.parse_id_token(s.token, nonce=nonce, leeway=3 * REVALIDATE)
    groups: list[str] = claims.get("groups", [])
    return groups


def authorize_again(s: SignedIn) -> list[str]:
    """The groups of the ID token of a new authorization in the browser's SSO session (no password asked)."""
    authorization = start(s.session)
    arrival = browse(s.http, authorization.url, username=None)
    s.token = s.session.fetch_token(s.session.server_metadata["token_endpoint"], authorization_response=arrival.url,
                                    code_verifier=authorization.verifier, state=authorization.state)
    return id_token_groups(s, authorization.nonce)


def shadow_groups(username: str) -> list[str]:
    db.session.expire_all()
    user = db.session.scalar(select(User).where(User.username == username))
    return sorted(user.external_groups or [])


def revalidations(outcome: str) -> list[audit.AuditEvent]:
    db.session.expire_all()
    return [e for e in audit.events(type="user.revalidate") if e.outcome == outcome]


class SearchCounter:
    """ldap3 searches made by the bridge (the server runs in this process), by filter."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.filters: list[str] = []
        original = ldap3.Connection.search

        def search(conn: ldap3.Connection, search_base: str, search_filter: str, *args: Any, **kwargs: Any) -> Any:
            self.filters.append(search_filter)
            return original(conn, search_base, search_filter, *args, **kwargs)

        monkeypatch.setattr(ldap3.Connection, "search", search)

    def by_id(self) -> int:
        return sum("entryUUID=" in f for f in self.filters)


def test_a_user_deleted_in_the_directory_loses_session_and_tokens_after_revalidate_seconds(
    idp: LiveServer, corp: Slapd, frozen_clock: Clock
) -> None:
    s = sign_in(idp, "alice", "alice-pw")
    ldapmodify(corp.ldap_url, f"dn: uid=alice,{PEOPLE}\nchangetype: delete\n")
    # Within revalidate_seconds the bridge goes by the last check.
    frozen_clock.advance(seconds=REVALIDATE - 1)
    assert userinfo(idp, s).status_code == 200

    frozen_clock.advance(seconds=2)
    resp = userinfo(idp, s)
    assert resp.status_code == 401 and "invalid_token" in resp.headers["WWW-Authenticate"]
    resp = refresh(idp, s)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"
    assert saml_groups(s) is None  # the SP's next request asks for a password
    alice = db.session.scalar(select(User).where(User.username == "alice"))
    assert session_state.user_session_ids(alice.id) == []
    [event] = revalidations("failure")
    assert event.username == "alice" and "gone from the directory" in (event.reason or "")
    assert event.details["sessions_ended"] == 1


def leave_staff_and_refresh(idp: LiveServer, corp: Slapd, s: SignedIn, frozen_clock: Clock) -> None:
    """bob leaves staff in the directory; a refresh after revalidate_seconds asks the directory itself (the shadow
    row changes with it), and the RP's userinfo follows."""
    ldapmodify(corp.ldap_url, f"dn: cn=staff,{GROUPS}\nchangetype: modify\ndelete: member\n"
                              f"member: uid=bob,{PEOPLE}\n")
    frozen_clock.advance(seconds=REVALIDATE + 1)
    assert refresh(idp, s).status_code == 200
    assert shadow_groups("bob") == ["auditors"]
    assert userinfo(idp, s).json()["groups"] == ["auditors"]


def test_a_user_removed_from_groups_loses_them_in_the_next_tokens_and_assertion(
    idp: LiveServer, corp: Slapd, frozen_clock: Clock
) -> None:
    s = sign_in(idp, "bob", "bob-pw")
    assert id_token_groups(s) == ["auditors", "staff"]
    leave_staff_and_refresh(idp, corp, s, frozen_clock)

    # The SSO session revalidates on its own: after the next period, a new ID token and a new SAML assertion
    # lack the group removed meanwhile.
    ldapmodify(corp.ldap_url, f"dn: cn=auditors,{GROUPS}\nchangetype: modify\nreplace: uniqueMember\n"
                              f"uniqueMember: uid=alice,{PEOPLE}\n")
    assert saml_groups(s) == ["auditors"]  # checked a moment ago by the refresh
    frozen_clock.advance(seconds=REVALIDATE + 1)
    assert authorize_again(s) == []
    assert saml_groups(s) == []
    assert revalidations("failure") == []


def test_a_revalidation_asks_for_the_groups_whatever_the_group_cache_holds(
    directory_server: Callable[..., LiveServer], corp: Slapd, tmp_path: Path, frozen_clock: Clock
) -> None:
    """The groups a revalidation writes stand until the next one: taken from a cache filled before (in this
    process, or another instance's older one), a group removed in the directory would come back for that long."""
    server = directory_server(directory_config(corp, tmp_path, revalidate_seconds=REVALIDATE,
                                               group_cache_seconds=3600))
    with server.app.app_context():
        s = sign_in(server, "bob", "bob-pw")  # fills the group cache
        assert id_token_groups(s) == ["auditors", "staff"]
        leave_staff_and_refresh(server, corp, s, frozen_clock)
        db.session.remove()


def test_a_sign_in_with_cached_groups_leaves_the_next_revalidation_due_as_soon_as_they_were_read(
    directory_server: Callable[..., LiveServer], corp: Slapd, tmp_path: Path, frozen_clock: Clock
) -> None:
    """Groups taken from the cache at a sign-in are as old as the cache's copy: the user's row counts as checked
    then, not now, so a group lost in the directory meanwhile stands no longer than revalidate_seconds from when
    it was read (another instance may have removed it from the row already)."""
    server = directory_server(directory_config(corp, tmp_path, revalidate_seconds=REVALIDATE,
                                               group_cache_seconds=3600))
    with server.app.app_context():
        first = sign_in(server, "bob", "bob-pw")  # reads and caches the groups
        ldapmodify(corp.ldap_url, f"dn: cn=staff,{GROUPS}\nchangetype: modify\ndelete: member\n"
                                  f"member: uid=bob,{PEOPLE}\n")
        frozen_clock.advance(seconds=REVALIDATE // 2)
        # Another browser, another password sign-in: the cached groups, staff included.
        http, authorization = requests.Session(), start(first.session)
        arrival = browse(http, authorization.url, username="bob", password="bob-pw")
        token = first.session.fetch_token(first.session.server_metadata["token_endpoint"],
                                          authorization_response=arrival.url, code_verifier=authorization.verifier,
                                          state=authorization.state)
        again = replace(first, http=http, token=token)
        assert shadow_groups("bob") == ["auditors", "staff"]
        frozen_clock.advance(seconds=REVALIDATE // 2 + 1)  # revalidate_seconds after the groups were read
        assert refresh(server, again).status_code == 200
        assert shadow_groups("bob") == ["auditors"]
        db.session.remove()


@pytest.mark.parametrize("lost", ["answer", "directory"])
def test_a_request_answered_after_a_revalidation_keeps_its_id_unused_until_the_answer_is_stored(
    idp: LiveServer, frozen_clock: Clock, lost: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A revalidation commits midway through an SSO answer (what the directory said, or that it could not be
    asked). The request's ID is claimed after it, with the answer: the database lost as the answer is recorded
    is a 503, and the browser's retry of the same request is answered, not refused as a replay."""
    s = sign_in(idp, "bob", "bob-pw")
    frozen_clock.advance(seconds=REVALIDATE + 1)
    if lost == "directory":
        def down(*_args: Any, **_kwargs: Any) -> Any:
            raise DirectoryUnavailable("unavailable", "test: the directory is down")

        monkeypatch.setattr(LdapConnector, "recheck", down)
    url, request_id = s.sp.redirect_login("https://sp.example.test/again")
    with audit_insert_lost("saml.response"):
        assert s.http.get(url, timeout=10).status_code == 503
    again = s.http.get(url, timeout=10)
    assert again.status_code == 200, again.text[:500]
    auth = s.sp.process_response(read_post_form(again.text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.get_attributes().get("groups") == ["auditors", "staff"]


def test_a_forced_sign_in_answers_with_the_groups_that_sign_in_has_just_read(
    idp: LiveServer, corp: Slapd, frozen_clock: Clock
) -> None:
    """ForceAuthn: the SP has the password asked again, and the assertion answered right after it says what the
    directory said at that sign-in, not what the browser's session held before it (within revalidate_seconds)."""
    s = sign_in(idp, "bob", "bob-pw")
    ldapmodify(corp.ldap_url, f"dn: cn=staff,{GROUPS}\nchangetype: modify\ndelete: member\n"
                              f"member: uid=bob,{PEOPLE}\n")
    url, request_id = s.sp.redirect_login("https://sp.example.test/forced", force_authn=True)
    page = s.http.get(url, timeout=10)
    assert is_login_page(page)
    auth = s.sp.process_response(read_post_form(submit_login(s.http, page, "bob", "bob-pw").text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.get_attributes().get("groups") == ["auditors"]
    assert shadow_groups("bob") == ["auditors"]


def test_within_revalidate_seconds_the_directory_is_not_asked(
    idp: LiveServer, frozen_clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = sign_in(idp, "bob", "bob-pw")
    searches = SearchCounter(monkeypatch)
    frozen_clock.advance(seconds=REVALIDATE - 1)
    assert saml_groups(s) == ["auditors", "staff"]
    assert userinfo(idp, s).status_code == 200
    assert refresh(idp, s).status_code == 200
    assert searches.filters == []

    frozen_clock.advance(seconds=2)
    assert userinfo(idp, s).status_code == 200
    assert refresh(idp, s).status_code == 200
    assert saml_groups(s) == ["auditors", "staff"]
    # One lookup by the stable id (then the group walk), after which the row counts as checked again.
    assert searches.by_id() == 1
    found = next(f for f in searches.filters if "entryUUID=" in f)
    bob = db.session.scalar(select(User).where(User.username == "bob"))
    assert f"(entryUUID={bob.external_id})" in found


def test_a_directory_down_at_revalidation_leaves_the_session_going(
    idp: LiveServer, spare_slapd: SlapdProcess, frozen_clock: Clock
) -> None:
    s = sign_in(idp, "bob", "bob-pw")
    spare_slapd.stop()
    frozen_clock.advance(seconds=REVALIDATE + 1)
    assert userinfo(idp, s).status_code == 200
    assert refresh(idp, s).status_code == 200
    assert userinfo(idp, s).json()["groups"] == ["auditors", "staff"]
    assert saml_groups(s) == ["auditors", "staff"]
    # Asked by the first use only, then left alone for the back-off: a hung directory would otherwise cost every
    # one of these uses its whole timeout.
    assert len(revalidations("warning")) == 1
    frozen_clock.advance(seconds=BACKOFF.total_seconds())
    assert userinfo(idp, s).status_code == 200  # not marked as checked: asked again after the back-off
    assert len(revalidations("warning")) == 2
    frozen_clock.advance(hours=-1)  # a clock step back must not stretch the back-off to an hour
    assert userinfo(idp, s).status_code == 200
    warnings = revalidations("warning")
    assert len(warnings) == 3 and all("not rechecked" in (e.reason or "") for e in warnings)
    assert revalidations("failure") == []


def test_a_hung_directory_costs_one_wait_per_back_off_and_is_asked_again_after_it(
    idp: LiveServer, spare_slapd: SlapdProcess, corp: Slapd, frozen_clock: Clock
) -> None:
    s = sign_in(idp, "bob", "bob-pw")
    frozen_clock.advance(seconds=REVALIDATE + 1)
    spare_slapd.freeze()
    try:
        started = time.monotonic()
        assert userinfo(idp, s).status_code == 200  # waited out the directory's 3 s, then went on
        first = time.monotonic() - started
        started = time.monotonic()
        assert refresh(idp, s).status_code == 200
        assert userinfo(idp, s).status_code == 200
        later = time.monotonic() - started
    finally:
        spare_slapd.proc.send_signal(signal.SIGCONT)
    assert first > 2.5 and later < 1.5, (first, later)

    # Deleted meanwhile: the first use after the back-off asks again, and he is out.
    ldapmodify(corp.ldap_url, f"dn: uid=bob,{PEOPLE}\nchangetype: delete\n")
    frozen_clock.advance(seconds=BACKOFF.total_seconds())
    assert userinfo(idp, s).status_code == 401
    assert [e.username for e in revalidations("failure")] == ["bob"]


def test_directory_remove_disables_its_users_and_ends_their_sessions(
    directory_server: Callable[..., LiveServer], corp: Slapd
) -> None:
    idp = directory_server()
    with idp.app.app_context():
        admin.add("corp", "ldap", {"urls": [corp.ldap_url], "base_dn": corp.base_dn, "bind_dn": corp.service_dn},
                  corp.service_password, actor="test")
        db.session.commit()
        s = sign_in(idp, "bob", "bob-pw")
        result = idp.app.test_cli_runner().invoke(cli, ["directory", "remove", "corp"])
        assert result.exit_code == 0, result.output
        assert "1 of its user(s) disabled and signed out" in result.output
        db.session.expire_all()
        bob = db.session.scalar(select(User).where(User.username == "bob"))
        assert not bob.enabled
        assert session_state.user_session_ids(bob.id) == []
        assert userinfo(idp, s).status_code == 401
        assert refresh(idp, s).json()["error"] == "invalid_grant"
        assert saml_groups(s) is None
        event = audit.events(type="directory.remove", limit=1)[0]
        assert event.details == {"directory": "corp", "users_disabled": 1, "sessions_ended": 1}
        db.session.remove()

