"""Sign-in against a real OpenLDAP slapd (tests/ldap_server.py, data in tests/fixtures/directory.ldif):
transports and certificate checks, wrong passwords, filter injection, UTF-8 names, nested groups and the
cycle, failover, and an outage that leaves local users signing in."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Clock
from flask import Flask
from flask.testing import FlaskClient
from helpers import committed_elsewhere, login, make_user
from ldap_server import Slapd, SlapdProcess, closed_port_url, directory_config, ldapmodify
from sqlalchemy import event as sa_event
from sqlalchemy import select

from idp import audit
from idp.authn import passwords
from idp.authn.connectors.ldap import LdapDirectory
from idp.authn.connectors.ldap_connector import LdapConnector
from idp.authn.connectors.settings import DirectoryConfig
from idp.authn.session import current_principal
from idp.extensions import db
from idp.store import User

NESTED = ("engineers", "rnd", "staff")


def sign_in(client: FlaskClient, username: str, password: str) -> tuple[int, str]:
    resp = login(client, username, password)
    return resp.status_code, resp.get_data(as_text=True)


def last_login() -> audit.AuditEvent:
    return audit.events(type="login", limit=1)[0]


@pytest.mark.parametrize("transport", ["ldap", "starttls", "ldaps"])
def test_directory_user_signs_in_over_each_transport(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask], transport: str
) -> None:
    options: dict[str, object] = {
        "ldap": {},
        "starttls": {"start_tls": True, "ca_file": str(slapd.ca_file)},
        "ldaps": {"urls": [slapd.ldaps_url], "ca_file": str(slapd.ca_file)},
    }[transport]  # type: ignore[assignment]
    app = with_directories(directory_config(slapd, tmp_path, **options))
    client = app.test_client()
    status, _ = sign_in(client, "alice", "alice-pw")
    assert status == 302
    with app.test_request_context(headers={"Cookie": client.get_cookie("idp_session").key + "="
                                           + client.get_cookie("idp_session").value}):
        principal = current_principal()
    assert principal is not None
    assert principal.username == "alice" and principal.source == "corp"
    assert principal.email == "alice@corp.example" and principal.display_name == "Alice Liddell"
    assert principal.groups == NESTED
    shadow = db.session.scalar(select(User).where(User.username == "alice"))
    assert shadow.source == "corp" and shadow.password_hash is None and shadow.external_id
    assert last_login().details == {"source": "corp"}


def test_a_bind_password_file_replaced_in_place_is_read_again(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    """The service password is kept in a file (a mounted Kubernetes Secret, say): when the file is replaced, the
    next sign-in binds with what it says now, on every worker, without a restart."""
    cfg = directory_config(slapd, tmp_path)
    assert cfg.bind_password_file is not None
    cfg.bind_password_file.write_text("the password before the rotation\n")
    app = with_directories(cfg)
    status, page = sign_in(app.test_client(), "alice", "alice-pw")
    assert status == 503 and "directory is unavailable" in page
    cfg.bind_password_file.write_text(slapd.service_password + "\n")
    status, _ = sign_in(app.test_client(), "alice", "alice-pw")
    assert status == 302


@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_a_certificate_from_another_ca_is_refused(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask], transport: str
) -> None:
    url = slapd.ldaps_url if transport == "ldaps" else slapd.ldap_url
    app = with_directories(directory_config(slapd, tmp_path, urls=[url], start_tls=transport == "starttls",
                                            ca_file=str(slapd.wrong_ca_file)))
    status, page = sign_in(app.test_client(), "alice", "alice-pw")
    assert status == 503 and "directory is unavailable" in page
    event = last_login()
    assert event.outcome == "failure" and "certificate verify failed" in (event.reason or "")


def test_wrong_password_unknown_user_and_empty_password_are_answers_not_errors(
    slapd: Slapd, tmp_path: Path, app: Flask
) -> None:
    connector = LdapConnector(directory_config(slapd, tmp_path), slapd.service_password)
    try:
        assert connector.authenticate("alice", "wrong") is None
        assert connector.check("alice", "wrong").reason == "bad password"
        assert connector.authenticate("nobody", "alice-pw") is None
        # An empty password would be an unauthenticated bind, which LDAP servers accept.
        assert connector.check("alice", "").reason == "empty password"
        assert connector.authenticate("alice", "alice-pw") is not None
    finally:
        connector.close()


@pytest.mark.parametrize("attempt", ["*", "*)(uid=*", "alice)(|(uid=*", "alice*", "*(x)", "o'brien*", "al\\2a",
                                     "alice\x00", "(uid=alice)"])
def test_filter_injection_matches_nobody(slapd: Slapd, tmp_path: Path, app: Flask, attempt: str) -> None:
    connector = LdapConnector(directory_config(slapd, tmp_path), slapd.service_password)
    try:
        assert connector.directory.find_user(attempt).entry is None
        for password in ("alice-pw", "bob-pw", "o'brien*(x)-pw"):
            assert connector.authenticate(attempt, password) is None
    finally:
        connector.close()


def test_names_needing_escapes_and_utf8_names_sign_in(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    app = with_directories(directory_config(slapd, tmp_path))
    assert sign_in(app.test_client(), "o'brien*(x)", "o'brien*(x)-pw")[0] == 302
    assert sign_in(app.test_client(), "Zoë", "zoë-pw")[0] == 302
    zoe = db.session.scalar(select(User).where(User.username == "zoë"))
    assert zoe.display_name == "Zoë Ünal" and zoe.family_name == "Ünal"
    assert sorted(zoe.external_groups) == list(NESTED)
    assert db.session.scalar(select(User).where(User.username == "o'brien*(x)")).email == "obrien@corp.example"


@pytest.mark.parametrize("password", [
    "pass\u00a0word-42",  # a no-break space (SASLprep makes it a space)
    "".join(chr(0xFEE0 + ord(c)) for c in "pass123456"),  # full-width letters and digits (NFKC: ASCII)
    "I\u2764\ufe0fNY-2024",  # an emoji with its variation selector (SASLprep drops it)
    "Secret\u05e9\u05dc\u05d5\u05dd1",  # Latin and Hebrew (SASLprep refuses the mix)
])
def test_a_password_is_sent_as_typed_not_prepared(
    slapd: Slapd, spare_slapd: SlapdProcess, tmp_path: Path, with_directories: Callable[..., Flask], password: str
) -> None:
    """OpenLDAP and Active Directory compare the password they stored as their tools and Windows send it: not
    SASLprep-ed, which ldap3 does to a password given as text."""
    ldapmodify(spare_slapd.ldap_url, f"dn: uid=bob,ou=people,{slapd.base_dn}\nchangetype: modify\n"
                                     f"replace: userPassword\nuserPassword: {password}\n")
    app = with_directories(directory_config(slapd, tmp_path, urls=[spare_slapd.ldap_url]))
    assert sign_in(app.test_client(), "bob", password)[0] == 302
    assert sign_in(app.test_client(), "bob", "bob-pw")[0] == 200


def test_the_service_password_is_sent_as_typed_too(
        slapd: Slapd, spare_slapd: SlapdProcess, tmp_path: Path, app: Flask) -> None:
    service_password = "svc\u00a0pass-" + "".join(chr(0xFEE0 + ord(c)) for c in "42")
    ldapmodify(spare_slapd.ldap_url, f"dn: {slapd.service_dn}\nchangetype: modify\n"
                                     f"replace: userPassword\nuserPassword: {service_password}\n")
    connector = LdapConnector(directory_config(slapd, tmp_path, urls=[spare_slapd.ldap_url]), service_password)
    try:
        assert connector.authenticate("alice", "alice-pw") is not None
    finally:
        connector.close()


@pytest.mark.parametrize(("mode", "user", "groups"), [
    ("member", "alice", NESTED),
    ("memberof", "alice", NESTED),
    ("member", "bob", ("auditors", "staff")),  # groupOfUniqueNames and groupOfNames
    ("posix", "alice", ("developers",)),
    ("member", "carol", ("cycle-a", "cycle-b")),  # a cycle ends
    ("memberof", "carol", ("cycle-a", "cycle-b")),
])
def test_groups_nested_and_cyclic(slapd: Slapd, tmp_path: Path, app: Flask, mode: str, user: str,
                                  groups: tuple[str, ...]) -> None:
    connector = LdapConnector(directory_config(slapd, tmp_path, group_mode=mode), slapd.service_password)
    try:
        principal = connector.authenticate(user, f"{user}-pw")
        assert principal is not None and principal.groups == groups
    finally:
        connector.close()


def test_memberof_counts_only_the_groups_under_the_group_base(slapd: Slapd, tmp_path: Path, app: Flask) -> None:
    """As the other modes search: with group_base_dn set, a group made elsewhere (an OU whose admin may make
    groups) does not count, even named like the admin group."""
    base = slapd.base_dn
    for dn, name in ((f"cn=idp-admins,ou=people,{base}", "idp-admins"),
                     (f"cn=C# Developers,ou=groups,{base}", "C# Developers")):  # a DN ldap3's parse_dn refuses
        ldapmodify(slapd.ldap_url, f"dn: {dn}\nchangetype: add\nobjectClass: groupOfNames\n"
                                   f"cn: {name}\nmember: uid=alice,ou=people,{base}\n")
    scoped = LdapConnector(directory_config(slapd, tmp_path, group_mode="memberof", group_base_dn=f"ou=groups,{base}",
                                            group_cache_seconds=0), slapd.service_password)
    whole = LdapConnector(directory_config(slapd, tmp_path, group_mode="memberof", group_cache_seconds=0),
                          slapd.service_password)  # the same directory, its group base left at the base DN
    try:
        signed_in = scoped.authenticate("alice", "alice-pw")
        assert signed_in is not None and "idp-admins" not in signed_in.groups
        assert {"engineers", "C# Developers"} <= set(signed_in.groups)
        everywhere = whole.authenticate("alice", "alice-pw")  # the group base is the base DN: every group in it
        assert everywhere is not None and "idp-admins" in everywhere.groups
    finally:
        scoped.close()
        whole.close()
        for dn in (f"cn=idp-admins,ou=people,{base}", f"cn=C# Developers,ou=groups,{base}"):
            ldapmodify(slapd.ldap_url, f"dn: {dn}\nchangetype: delete\n")


def test_a_group_whose_name_needs_escaping_in_its_dn_has_the_same_name_in_every_mode(
        slapd: Slapd, spare_slapd: SlapdProcess, tmp_path: Path, app: Flask) -> None:
    """cn=Sales\\, EMEA and cn=Z\\C3\\BCrich name the groups "Sales, EMEA" and "Zürich": memberof mode reads
    the name from the DN, which holds it escaped (RFC 4514); the other modes read it from the entry."""
    base = slapd.base_dn
    for rdn, name in (("Sales\\, EMEA", "Sales, EMEA"), ("Z\\C3\\BCrich", "Zürich"), ("a\\+b", "a+b")):
        ldapmodify(spare_slapd.ldap_url, f"dn: cn={rdn},ou=groups,{base}\nchangetype: add\n"
                                         f"objectClass: groupOfNames\ncn: {name}\nmember: uid=bob,ou=people,{base}\n")
    named = {}
    for mode in ("member", "memberof"):
        connector = LdapConnector(directory_config(slapd, tmp_path, urls=[spare_slapd.ldap_url], group_mode=mode,
                                                   group_cache_seconds=0), slapd.service_password)
        try:
            principal = connector.authenticate("bob", "bob-pw")
            assert principal is not None
            named[mode] = set(principal.groups)
        finally:
            connector.close()
    assert {"Sales, EMEA", "Zürich", "a+b"} <= named["memberof"] & named["member"]
    assert not [name for name in named["memberof"] if "\\" in name]


def test_the_depth_limit_stops_the_walk(slapd: Slapd, tmp_path: Path, app: Flask) -> None:
    connector = LdapConnector(directory_config(slapd, tmp_path, group_depth=2), slapd.service_password)
    try:
        entry = connector.directory.find_user("alice").entry
        assert entry is not None
        found = connector.directory.groups(entry)
        assert found.names == ("engineers", "rnd") and found.truncated
    finally:
        connector.close()


def test_failover_when_the_first_server_is_down(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    app = with_directories(directory_config(slapd, tmp_path, urls=[closed_port_url(), slapd.ldap_url], timeout=2))
    started = time.monotonic()
    assert sign_in(app.test_client(), "alice", "alice-pw")[0] == 302
    assert time.monotonic() - started < 2, "a refused connection must fail over at once"


def test_all_servers_down_gives_503_and_an_audit_event_while_local_users_sign_in(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    down = directory_config(slapd, tmp_path, urls=[closed_port_url(), closed_port_url("ldaps")], timeout=1)
    # The directory first and the built-in one after it: a local user must not depend on the directory.
    local_after = DirectoryConfig(name="local", type="local")
    app = with_directories(down, local_after)
    make_user("dora", "dora-local-password")
    client = app.test_client()
    status, page = sign_in(client, "alice", "alice-pw")
    assert status == 503
    assert "The directory is unavailable right now" in page
    event = last_login()
    assert event.outcome == "failure" and event.username == "alice"
    assert event.reason and event.reason.startswith("directory unavailable: corp:")
    assert event.details == {"source": "corp"}  # (idp_signins_total{result="unavailable"} is counted by it)
    # Not counted as a failed password: no lockout builds up during an outage. Nor does anyone's try cost a
    # password hash meanwhile (uncounted, it would be CPU for anyone to burn).
    dummy, hashed = passwords.dummy_verify, []

    def counted(password: str) -> None:
        hashed.append(password)
        dummy(password)

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(passwords, "dummy_verify", counted)
        for _ in range(6):
            sign_in(app.test_client(), "alice", "alice-pw")
    assert hashed == []
    assert sign_in(client, "dora", "dora-local-password")[0] == 302
    assert last_login().details == {"source": "local"}


def test_a_base_dn_that_does_not_exist_is_an_outage_not_an_unknown_user(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    """A base renamed or mistyped says nothing about who exists: taken for "unknown user", the next directory
    would sign alice in as someone else of that name (and keep the name for good)."""
    gone = directory_config(slapd, tmp_path, base_dn=f"ou=gone,{slapd.base_dn}")
    app = with_directories(gone, directory_config(slapd, tmp_path, name="other"))
    status, page = sign_in(app.test_client(), "alice", "alice-pw")
    assert status == 503 and "The directory is unavailable right now" in page
    reason = last_login().reason or ""
    assert "base DN does not exist" in reason and "other: not asked" in reason
    assert db.session.scalar(select(User).where(User.username == "alice")) is None


def test_a_username_with_a_domain_goes_to_that_directory(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    app = with_directories(directory_config(slapd, tmp_path, domains=["corp.example", "CORP"]))
    assert sign_in(app.test_client(), "alice@corp.example", "alice-pw")[0] == 302
    assert sign_in(app.test_client(), "CORP\\bob", "bob-pw")[0] == 302
    assert last_login().username == "bob"
    # Both sign-ins are the same shadow rows, keyed by entryUUID.
    assert db.session.scalar(select(User).where(User.username == "alice")).source == "corp"


def test_a_directory_password_never_opens_a_local_account_of_the_same_name(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    app = with_directories(directory_config(slapd, tmp_path), DirectoryConfig(name="local", type="local"))
    make_user("alice", "alice-local-password")
    status, page = sign_in(app.test_client(), "alice", "alice-pw")
    assert status == 200 and "Incorrect username or password." in page
    assert last_login().reason == "corp: username 'alice' already belongs to a local user"
    # The first source that knows a name decides: with the directory first, the local password is not tried.
    assert sign_in(app.test_client(), "alice", "alice-local-password")[0] == 200
    assert last_login().reason == "corp: bad password"


def test_a_first_sign_in_racing_another_of_the_same_user_signs_in(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    """Two first sign-ins of one directory user at once (two tabs, two clients): the other one's shadow row is
    committed just after this one's first look-up for it. Both are the same user: this one signs in too. (The
    bridge once took that row for another user's, and answered "Incorrect username or password".)"""
    cfg = directory_config(slapd, tmp_path)
    app = with_directories(cfg)
    connector = LdapConnector(cfg, slapd.service_password)
    entry = connector.directory.find_user("alice").entry
    connector.close()
    assert entry is not None
    injected: list[str] = []

    def after_statement(conn: object, cursor: object, statement: str, *_: object) -> None:
        if not injected and "FROM users" in statement and "external_id" in statement:
            injected.append(statement)
            committed_elsewhere(app, lambda: db.session.add(
                User(username="alice", source="corp", external_id=entry.external_id, enabled=True)))

    sa_event.listen(db.engine, "after_cursor_execute", after_statement)
    try:
        status, page = sign_in(app.test_client(), "alice", "alice-pw")
    finally:
        sa_event.remove(db.engine, "after_cursor_execute", after_statement)
    assert injected, "the sign-in never looked for the user's row"
    assert status == 302, (last_login().reason, page[:300])
    assert last_login().outcome == "success"
    assert db.session.scalars(select(User.external_id).where(User.username == "alice")).all() == [entry.external_id]


def test_a_shadow_user_disabled_locally_cannot_sign_in(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    from idp.authn import directory

    app = with_directories(directory_config(slapd, tmp_path))
    assert sign_in(app.test_client(), "bob", "bob-pw")[0] == 302
    directory.disable_user("bob", actor="test")
    db.session.commit()
    assert sign_in(app.test_client(), "bob", "bob-pw")[0] == 200
    assert last_login().reason == "corp: user disabled"


# --- what a sign-in costs ------------------------------------------------------------------------------------


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many argon2 verifications sign-ins run: real ones (a local user's) and dummy ones (timing)."""
    from idp.authn import passwords

    counts = {"verify": 0, "dummy": 0}
    real_verify, real_dummy = passwords.verify, passwords.dummy_verify

    def verify(password_hash: str | None, password: str) -> bool:
        counts["verify"] += 1
        return real_verify(password_hash, password)

    def dummy(password: str) -> None:
        counts["dummy"] += 1
        real_dummy(password)

    monkeypatch.setattr(passwords, "verify", verify)
    monkeypatch.setattr(passwords, "dummy_verify", dummy)
    return counts


def test_a_directory_sign_in_costs_no_password_hash_and_every_refusal_costs_one(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask], hashes: dict[str, int]
) -> None:
    """A refusal costs one password hash whoever was refused (a local user, a directory's, a name nobody
    knows): the time it takes does not tell which names exist, nor where. A directory's sign-in costs none."""
    # The built-in directory first (the default place): it does not know alice, the directory after it does.
    app = with_directories(directory_config(slapd, tmp_path))
    make_user("dora", "dora-local-password")
    for password, status in (("alice-pw", 302), ("alice-pw", 302)):  # a new shadow row, then a known one
        assert sign_in(app.test_client(), "alice", password)[0] == status
    assert hashes == {"verify": 0, "dummy": 0}
    assert sign_in(app.test_client(), "alice", "wrong")[0] == 200
    assert last_login().reason == "corp: bad password"
    assert hashes == {"verify": 0, "dummy": 1}
    # Nobody knows the name: one dummy verification, the cost of a local user's wrong password.
    assert sign_in(app.test_client(), "nobody", "some-password")[0] == 200
    assert hashes == {"verify": 0, "dummy": 2}
    assert sign_in(app.test_client(), "dora", "wrong-password")[0] == 200
    assert hashes == {"verify": 1, "dummy": 2}


# --- the group-membership cache ----------------------------------------------------------------------------


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The base DN of every ldap3 search the bridge sends, recorded before ldap3 sends it."""
    import ldap3

    seen: list[str] = []
    original = ldap3.Connection.search

    def spy(self: ldap3.Connection, search_base: str, *args: object, **kwargs: object) -> object:
        seen.append(search_base)
        return original(self, search_base, *args, **kwargs)

    monkeypatch.setattr(ldap3.Connection, "search", spy)
    return seen


def group_searches(seen: list[str]) -> int:
    return sum(1 for base in seen if base.startswith("ou=groups,"))


def test_groups_are_cached_for_group_cache_seconds_then_read_again(
    slapd: Slapd, spare_slapd: SlapdProcess, tmp_path: Path, with_directories: Callable[..., Flask],
    frozen_clock: Clock, searches: list[str]
) -> None:
    # A directory of this test's own (spare_slapd): its groups are changed below.
    app = with_directories(directory_config(slapd, tmp_path, urls=[spare_slapd.ldap_url], group_cache_seconds=30,
                                            group_base_dn="ou=groups," + slapd.base_dn))
    assert sign_in(app.test_client(), "alice", "alice-pw")[0] == 302
    walked = group_searches(searches)
    assert walked == 4  # engineers, rnd, staff, then nothing above staff
    shadow = db.session.scalar(select(User).where(User.username == "alice"))
    assert sorted(shadow.external_groups) == list(NESTED)

    # The admin takes alice out of engineers (and so out of rnd and staff).
    ldapmodify(spare_slapd.ldap_url, "dn: cn=engineers,ou=groups,dc=example,dc=test\nchangetype: modify\n"
                                     "delete: member\nmember: uid=alice,ou=people,dc=example,dc=test\n")
    frozen_clock.advance(seconds=29)
    assert sign_in(app.test_client(), "alice", "alice-pw")[0] == 302
    assert group_searches(searches) == walked, "a sign-in within the TTL must not search for groups"
    db.session.expire_all()
    assert sorted(shadow.external_groups) == list(NESTED)  # still the cached membership

    frozen_clock.advance(seconds=2)
    assert sign_in(app.test_client(), "alice", "alice-pw")[0] == 302
    assert group_searches(searches) == walked + 1  # one search: alice is in no group any more
    db.session.expire_all()
    assert shadow.external_groups == []


def test_a_zero_group_cache_asks_the_directory_every_time(
    slapd: Slapd, tmp_path: Path, with_directories: Callable[..., Flask], searches: list[str]
) -> None:
    app = with_directories(directory_config(slapd, tmp_path, group_cache_seconds=0,
                                            group_base_dn="ou=groups," + slapd.base_dn))
    assert sign_in(app.test_client(), "alice", "alice-pw")[0] == 302
    assert sign_in(app.test_client(), "alice", "alice-pw")[0] == 302
    assert group_searches(searches) == 8


def test_wrong_passwords_at_once_under_several_spellings_reach_the_directory_no_more_than_the_limit(
        slapd: Slapd, spare_slapd: SlapdProcess, tmp_path: Path, with_directories: Callable[..., Flask],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One directory user typed several ways that the directory takes for one (LDAP ignores repeated spaces:
    "ann lee", "ann  lee", ...; AD takes any DOMAIN\\ prefix), each a name counter of its own: the user's own
    counter is what stops them, so it is counted before the password goes to the directory too. Counted after,
    every spelling sent at once was bound, and a burst locked the account in the directory itself."""
    ldapmodify(spare_slapd.ldap_url, f"dn: uid=ann lee,ou=people,{slapd.base_dn}\nchangetype: add\n"
                                     "objectClass: inetOrgPerson\nuid: ann lee\ncn: Ann Lee\nsn: Lee\n"
                                     "userPassword: ann-pw\n")
    app = with_directories(directory_config(slapd, tmp_path, urls=[spare_slapd.ldap_url]),
                           login_max_failures=3, login_ip_max_failures=11)
    verify, binds = LdapDirectory.verify_password, []

    def slow(self: LdapDirectory, entry: object, password: str) -> object:
        binds.append(password)
        time.sleep(0.3)  # a directory under load: the other tries all arrive while the first are being checked
        return verify(self, entry, password)  # type: ignore[arg-type]

    monkeypatch.setattr(LdapDirectory, "verify_password", slow)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: login(app.test_client(), "ann" + " " * (i + 1) + "lee",
                                                f"guess {i}").status_code, range(10)))
    assert len(binds) == 3, binds
    assert sorted(answers) == [200, 200] + [429] * 8
    monkeypatch.undo()
    assert login(app.test_client(), "ann lee", "ann-pw").status_code == 429  # the user is locked, not a spelling
    # The address counted the three wrong passwords, and gave back the tries refused before the directory: eight
    # more failures from it start its lockout, whatever the names.
    answers = [login(app.test_client(), f"nobody{i}", "guess").status_code for i in range(8)]
    assert answers == [200] * 7 + [429]


def test_an_entry_with_several_usernames_signs_in_under_none_of_them(
        slapd: Slapd, spare_slapd: SlapdProcess, tmp_path: Path, with_directories: Callable[..., Flask]) -> None:
    # uid is multi-valued in the schema: taking the server's first value signed "ann" in as "zed", a name that
    # may be someone else's.
    ldapmodify(spare_slapd.ldap_url, f"dn: uid=ann,ou=people,{slapd.base_dn}\nchangetype: add\n"
                                     "objectClass: inetOrgPerson\nuid: zed\nuid: ann\ncn: Ann\nsn: Lee\n"
                                     "userPassword: ann-pw\n")
    app = with_directories(directory_config(slapd, tmp_path, urls=[spare_slapd.ldap_url]))
    for typed in ("ann", "zed"):
        status, page = sign_in(app.test_client(), typed, "ann-pw")
        assert status == 200 and "Incorrect username or password." in page
        assert last_login().reason == (f"corp: entry uid=ann,ou=people,{slapd.base_dn} has 2 values of uid, and a user "
                                       "has one name: choose a single-valued username_attribute")
    assert db.session.scalar(select(User).where(User.source == "corp")) is None
    # Alice, with one uid, is unaffected.
    assert sign_in(app.test_client(), "alice", "alice-pw")[0] == 302
