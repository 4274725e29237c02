"""Admin rights for a user of a real OpenLDAP directory (tests/ldap_server.py, tests/fixtures/directory.ldif),
over real HTTP: membership of the LDAP group IDP_ADMIN_GROUP names opens /admin, whatever directory the user
comes from; a directory user outside it is refused; the admin's own page shows their directory's data
read-only, since their profile and groups belong to the directory."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import lxml.html
import pytest
import requests
from conftest import LiveServer
from helpers import login_http
from ldap_server import SUFFIX, Slapd, SlapdProcess, directory_config, ldapmodify
from sqlalchemy import select

from idp import audit
from idp.authn.connectors.chain import close_all
from idp.config import Settings
from idp.extensions import db
from idp.store import User

# A group of tests/fixtures/directory.ldif: alice and zoë are members, bob is not (he is in staff and auditors).
ADMIN_GROUP = "engineers"


@pytest.fixture
def idp(make_settings: Callable[..., Settings], slapd: Slapd, tmp_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(make_settings, directories=(directory_config(slapd, tmp_path),), admin_group=ADMIN_GROUP)
    with server.app.app_context():
        yield server
        close_all()
        db.session.remove()
    server.stop()
    with server.app.app_context():
        close_all()
        db.engine.dispose()


def browser(idp: LiveServer, username: str) -> requests.Session:
    """A browser signed in as this directory user (their password is the uid followed by -pw)."""
    http = requests.Session()
    assert login_http(http, idp.url, username, f"{username}-pw").status_code == 302
    return http


def test_a_member_of_the_ldap_admin_group_administers(idp: LiveServer) -> None:
    alice = browser(idp, "alice")
    home = alice.get(f"{idp.url}/admin/", timeout=10)
    assert home.status_code == 200 and "Alice Liddell" in home.text
    people = alice.get(f"{idp.url}/admin/people", params={"source": "corp"}, timeout=10)
    assert people.status_code == 200 and "/admin/people/alice" in people.text

    # Her changes are audited in her name, as any admin's.
    page = alice.get(f"{idp.url}/admin/groups", timeout=10)
    form = lxml.html.fromstring(page.text).forms[0]
    data = {**dict(form.form_values()), "name": "on-call"}
    created = alice.post(f"{idp.url}/admin/groups", data=data, headers={"Referer": page.url}, allow_redirects=False,
                         timeout=10)
    assert created.status_code == 303
    assert [e.actor for e in audit.events(type="group.create")] == ["admin:alice"]


def test_a_directory_user_outside_the_group_is_refused(idp: LiveServer) -> None:
    bob = browser(idp, "bob")
    for path in ("/admin/", "/admin/people", "/admin/people/bob"):
        assert bob.get(f"{idp.url}{path}", timeout=10).status_code == 403, path
    denied = audit.events(type="admin.denied")
    assert {(e.username, e.reason) for e in denied} == {("bob", f"not a member of {ADMIN_GROUP}")}


def test_the_directory_admins_own_page_is_read_only(idp: LiveServer) -> None:
    alice = browser(idp, "alice")
    own = alice.get(f"{idp.url}/admin/people/alice", timeout=10)
    assert own.status_code == 200
    doc = lxml.html.fromstring(own.text)
    assert doc.forms == [] and doc.xpath("//input|//textarea|//select|//button") == []
    shown = " ".join(doc.text_content().split())
    assert "comes from the directory corp" in shown and "alice@corp.example" in shown
    assert all(group in shown for group in ("engineers", "rnd", "staff"))  # her nested groups, as reported

    # Posting to it anyway changes nothing: her profile belongs to the directory.
    token = lxml.html.fromstring(alice.get(f"{idp.url}/admin/groups", timeout=10).text).forms[0].fields["csrf_token"]
    refused = alice.post(f"{idp.url}/admin/people/alice/profile", timeout=10, allow_redirects=False,
                         data={"csrf_token": token, "email": "mallory@evil.example"},
                         headers={"Referer": f"{idp.url}/admin/groups"})
    assert refused.status_code == 409
    assert "mallory@evil.example" not in alice.get(f"{idp.url}/admin/people/alice", timeout=10).text


def test_a_directory_group_named_like_the_admin_group_in_other_letters_is_not_it(
        make_settings: Callable[..., Settings], spare_slapd: SlapdProcess, tmp_path: Path) -> None:
    """Whoever may name a group in a directory must not make its members admins with a name that Unicode case
    folding makes the admin group's: a long s (U+017F) folds to s. Group names match in any case in ASCII only,
    so bob, in "engineer" + U+017F and not in engineers, is refused; the admin group in capitals is still it.
    (slapd folds the two names alike in a DN, so the look-alike is made in another branch of the tree.)"""
    corp = Slapd(ldap_url=spare_slapd.ldap_url, ldaps_url=spare_slapd.ldaps_url, ca_file=spare_slapd.dir / "ca.pem",
                 wrong_ca_file=spare_slapd.dir / "wrong-ca.pem")
    lookalike = "engineer\u017f"

    def b64(text: str) -> str:  # LDIF carries non-ASCII values in base64 (RFC 2849)
        return base64.b64encode(text.encode()).decode()

    ldapmodify(corp.ldap_url, f"dn:: {b64(f'cn={lookalike},ou=services,{SUFFIX}')}\nchangetype: add\n"
                              f"objectClass: groupOfNames\ncn:: {b64(lookalike)}\nmember: uid=bob,ou=people,{SUFFIX}\n")
    for admin_group, bob_admits in ((ADMIN_GROUP, False), ("STAFF", True)):
        server = LiveServer(make_settings, directories=(directory_config(corp, tmp_path),), admin_group=admin_group)
        try:
            bob = browser(server, "bob")
            assert bob.get(f"{server.url}/admin/", timeout=10).status_code == (200 if bob_admits else 403)
            if not bob_admits:
                with server.app.app_context():
                    # The directory did report the group: the refusal is the comparison's.
                    groups = db.session.scalar(select(User.external_groups).where(User.username == "bob"))
                    assert lookalike in (groups or [])
        finally:
            server.stop()
            with server.app.app_context():
                close_all()
                db.engine.dispose()
