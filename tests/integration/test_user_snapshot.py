"""The user as the hot paths read it (one Core statement with the groups) must say what the ORM row says."""

from __future__ import annotations

from datetime import UTC, datetime

import flask
import pytest
from flask import Flask
from helpers import make_user, sql_statements

from idp.authn import directory
from idp.authn import session as session_module
from idp.authn.principal import UserSnapshot, load_snapshot
from idp.authn.session import principal_for
from idp.extensions import db
from idp.state.sessions import SsoSession


def test_the_snapshot_matches_the_row_with_groups_and_directory_fields(app: Flask) -> None:
    user = make_user("alice", groups=["staff", "admins"], email="alice@example.test", given_name="Alice")
    user.source, user.external_id = "corp", "uid=alice"
    user.external_groups = ["engineering"]
    user.checked_at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    db.session.commit()
    db.session.expire_all()
    snapshot = load_snapshot(user.id)
    assert snapshot == UserSnapshot.of(db.session.get_one(type(user), user.id))
    assert snapshot is not None and sorted(snapshot.groups) == ["admins", "staff"]
    assert snapshot.principal(datetime(2030, 1, 1, tzinfo=UTC)).groups == ("admins", "engineering", "staff")
    assert load_snapshot(user.id + 1000) is None


def test_a_change_pending_in_the_session_is_seen(app: Flask) -> None:
    user = make_user("bob", groups=["staff"])
    user.enabled = False  # not flushed yet
    snapshot = load_snapshot(user.id)
    assert snapshot is not None and not snapshot.enabled


def test_principal_for_another_users_session_is_read_again(app: Flask) -> None:
    alice, bob = make_user("alice", groups=["staff"]), make_user("bob", groups=["ops"])
    db.session.commit()
    t = datetime(2030, 1, 1, tzinfo=UTC)

    def session_of(user_id: int) -> SsoSession:
        return SsoSession(id=f"s{user_id}", user_id=user_id, authn_at=t, created_at=t, last_seen_at=t,
                          expires_at=t, client_ip=None)

    with app.test_request_context("/"):
        # As _load leaves it: alice's snapshot kept for the request.
        flask.request.environ[session_module._USER] = load_snapshot(alice.id)
        assert principal_for(session_of(alice.id)).username == "alice"
        bob_principal = principal_for(session_of(bob.id))
        assert (bob_principal.username, bob_principal.groups) == ("bob", ("ops",))
    directory.delete_user("bob", actor="test")
    with app.test_request_context("/"), pytest.raises(LookupError):
        principal_for(session_of(bob.id))


def test_a_shadow_row_refreshed_by_a_directory_is_seen_by_the_user_object_already_held(app: Flask) -> None:
    """provision writes with Core statements: a User object of the row that the request holds (revalidation
    starts from one) must not keep the directory's old answer until a commit."""
    from idp.authn.connectors.ldap import DirectoryEntry
    from idp.authn.connectors.shadow import provision

    user = make_user("carol", email="old@example.test")
    user.source, user.external_id, user.external_groups = "corp", "uid=carol", ["old-team"]
    db.session.commit()
    held = db.session.get_one(type(user), user.id)
    assert held.external_groups == ["old-team"]
    entry = DirectoryEntry(dn="uid=carol,ou=people,dc=example,dc=test", external_id="uid=carol", username="carol",
                           email="carol@example.test", given_name="Carol", family_name=None, display_name=None,
                           member_of=())
    verdict = provision("corp", entry, ("new-team",))
    assert verdict.principal is not None and verdict.principal.groups == ("new-team",)
    assert held.external_groups == ["new-team"] and held.email == "carol@example.test"
    assert held.checked_at is not None


def test_provision_reads_the_user_with_their_local_groups_once_and_returns_both_kinds_of_groups(app: Flask) -> None:
    """A directory user whom an admin also put in local groups: the sign-in's Principal has those and the
    directory's, read with the statement that finds the row (not read again after writing it)."""
    from idp.authn.connectors.ldap import DirectoryEntry
    from idp.authn.connectors.shadow import provision

    dana = make_user("dana", groups=["oncall", "admins"])
    dana.source, dana.external_id = "corp", "uid=dana"
    db.session.commit()
    entry = DirectoryEntry(dn="uid=dana,ou=people,dc=example,dc=test", external_id="uid=dana", username="Dana",
                           email="dana@example.test", given_name="Dana", family_name="Doe", display_name=None,
                           member_of=())
    with sql_statements() as statements:
        verdict = provision("corp", entry, ("engineering",))
    principal = verdict.principal
    assert principal is not None and principal.user_id == dana.id
    assert principal.groups == ("admins", "engineering", "oncall")
    assert (principal.username, principal.email, principal.family_name) == ("dana", "dana@example.test", "Doe")
    reads = [s for s in statements if s.startswith("SELECT") and "FROM users" in s]
    assert len(reads) == 1 and "group_members" in reads[0], statements
    db.session.commit()
    stored = load_snapshot(dana.id)  # what the principal was made from is what was stored
    assert stored is not None and stored.checked_at is not None
    assert stored == UserSnapshot(
        id=dana.id, username="dana", email="dana@example.test", given_name="Dana", family_name="Doe",
        display_name=None, enabled=True, source="corp", external_id="uid=dana", external_groups=("engineering",),
        checked_at=stored.checked_at, groups=("admins", "oncall"))
    # A first sign-in: a new row, no local group.
    erin = DirectoryEntry(dn="uid=erin,ou=people,dc=example,dc=test", external_id="uid=erin", username="erin",
                          email=None, given_name=None, family_name=None, display_name="Erin", member_of=())
    first = provision("corp", erin, ("engineering",)).principal
    assert first is not None and first.groups == ("engineering",) and first.display_name == "Erin"
