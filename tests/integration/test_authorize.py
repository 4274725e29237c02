"""authorize(): the one decision, over a world built with the admin services (the same ones the CLI calls)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from conftest import Clock
from flask import Flask
from helpers import make_user
from oidc_peers import register
from saml_peers import python3_saml_metadata

from idp import audit, clock
from idp.access import accounts, assignments, permission_sets
from idp.access.decide import ENDS_TOO_SOON, EVERYTHING, AccessDenied, AccountTarget, AppTarget, Grant, authorize
from idp.access.permission_sets import PermissionSetSpec
from idp.authn import directory
from idp.authn.principal import Principal, principal_from_user
from idp.extensions import db
from idp.saml import providers
from idp.store import User

PROD, STAGE, SANDBOX = "111111111111", "222222222222", "333333333333"
WIKI = "https://wiki.example.test/sp"


def principal(username: str) -> Principal:
    user = directory.require_user(username)
    return principal_from_user(user, clock.now())


def account(account_id: str, ou: str | None = None) -> None:
    accounts.add_account(account_id, name=f"acct {account_id[:1]}", ou=ou, actor="test",
                         saml_provider_arn=f"arn:aws:iam::{account_id}:saml-provider/bridge")


def pset(name: str, hours: int = 1, **options: Any) -> None:
    permission_sets.add_permission_set(name, PermissionSetSpec(session_hours=hours, **options), actor="test")


def roles(grant: Grant) -> set[tuple[str, str]]:
    return {(r.account_id, r.permission_set) for r in grant.roles}


def denied(who: Principal, target: AccountTarget | AppTarget) -> str:
    with pytest.raises(AccessDenied) as info:
        authorize(who, target, clock.now())
    return info.value.reason


@pytest.fixture(autouse=True)
def _people(app: Flask, frozen_clock: Clock) -> None:
    make_user("alice", groups=["engineers"])
    make_user("bob")


def test_union_of_user_and_group_assignments() -> None:
    account(PROD)
    pset("ReadOnly")
    pset("Admin", hours=4)
    assignments.assign("alice", "ReadOnly", account=PROD, actor="test")
    assignments.assign("engineers", "Admin", account=PROD, actor="test")
    assignments.assign("engineers", "ReadOnly", account=PROD, actor="test")

    grant = authorize(principal("alice"), AccountTarget(PROD), clock.now())
    assert roles(grant) == {(PROD, "Admin"), (PROD, "ReadOnly")}  # one role per set, whatever the paths
    read_only = next(r for r in grant.roles if r.permission_set == "ReadOnly")
    assert [s.via for s in read_only.sources] == ["user alice", "group engineers"]
    admin = next(r for r in grant.roles if r.permission_set == "Admin")
    assert admin.role_arn == f"arn:aws:iam::{PROD}:role/Admin"
    assert admin.provider_arn == f"arn:aws:iam::{PROD}:saml-provider/bridge"
    assert admin.session_seconds == 4 * 3600 and admin.until is None

    # One set asked for: only that one. Bob, in no group and with no assignment: refused.
    assert roles(authorize(principal("alice"), AccountTarget(PROD, "Admin"), clock.now())) == {(PROD, "Admin")}
    assert denied(principal("bob"), AccountTarget(PROD)) == "no assignment for this account"
    assert denied(principal("alice"), AccountTarget(STAGE)) == "unknown account"


def test_an_ou_assignment_reaches_accounts_added_later_and_sub_ous() -> None:
    accounts.add_ou("Workloads", actor="test")
    accounts.add_ou("Payments", parent="Workloads", actor="test")
    pset("Admin")
    assignments.assign("engineers", "Admin", ou="Workloads", actor="test")
    assert authorize(principal("alice"), EVERYTHING, clock.now()).roles == ()

    account(PROD, ou="Workloads")  # after the assignment
    account(STAGE, ou="Payments")  # in a sub-OU
    account(SANDBOX)  # elsewhere
    assert roles(authorize(principal("alice"), EVERYTHING, clock.now())) == {(PROD, "Admin"), (STAGE, "Admin")}
    (role,) = authorize(principal("alice"), AccountTarget(STAGE), clock.now()).roles
    assert [(s.via, s.scope) for s in role.sources] == [("group engineers", "ou Workloads")]

    # Moved out of the OU, the account is out of reach; moved back in (another way: its OU moves), it returns.
    accounts.move_account(STAGE, ou=None, actor="test")
    assert denied(principal("alice"), AccountTarget(STAGE)) == "no assignment for this account"
    accounts.add_ou("Elsewhere", actor="test")
    accounts.move_account(STAGE, ou="Payments", actor="test")
    accounts.move_ou("Payments", parent="Elsewhere", actor="test")
    assert denied(principal("alice"), AccountTarget(STAGE)) == "no assignment for this account"
    accounts.move_ou("Payments", parent="Workloads", actor="test")
    assert roles(authorize(principal("alice"), AccountTarget(STAGE), clock.now())) == {(STAGE, "Admin")}


def test_an_assignment_stops_at_its_end_and_cuts_the_session(frozen_clock: Clock) -> None:
    account(PROD)
    pset("Admin", hours=4)
    end = clock.now() + timedelta(hours=2)
    assignments.assign("alice", "Admin", account=PROD, until=end, actor="test")

    (role,) = authorize(principal("alice"), AccountTarget(PROD), clock.now()).roles
    assert role.until == end
    assert role.session_seconds == 2 * 3600  # not the set's 4 hours: what is left of the assignment

    frozen_clock.advance(hours=1, minutes=30)
    (role,) = authorize(principal("alice"), AccountTarget(PROD), clock.now()).roles
    assert role.session_seconds == 30 * 60
    frozen_clock.advance(minutes=15)
    (role,) = authorize(principal("alice"), AccountTarget(PROD), clock.now()).roles
    assert role.session_seconds == 900  # AWS's shortest session, and exactly what is left
    # Less than AWS's shortest session left: not offered, since the session would outlive the assignment.
    frozen_clock.advance(seconds=1)
    assert denied(principal("alice"), AccountTarget(PROD)) == ENDS_TOO_SOON
    assert authorize(principal("alice"), EVERYTHING, clock.now()) == Grant()

    frozen_clock.advance(minutes=15)
    assert denied(principal("alice"), AccountTarget(PROD)) == "no assignment for this account"
    assert authorize(principal("alice"), EVERYTHING, clock.now()) == Grant()

    # The same set through the group, without an end: granted again, for the set's full duration.
    assignments.assign("engineers", "Admin", account=PROD, actor="test")
    (role,) = authorize(principal("alice"), AccountTarget(PROD), clock.now()).roles
    assert (role.session_seconds, role.until, len(role.sources)) == (4 * 3600, None, 1)


def test_mfa_required_is_not_granted_without_mfa() -> None:
    account(PROD)
    pset("BreakGlass", mfa_required=True)
    pset("ReadOnly")
    assignments.assign("alice", "BreakGlass", account=PROD, actor="test")
    assignments.assign("alice", "ReadOnly", account=PROD, actor="test")
    alice = principal("alice")
    assert not alice.mfa

    assert roles(authorize(alice, AccountTarget(PROD), clock.now())) == {(PROD, "ReadOnly")}
    assert denied(alice, AccountTarget(PROD, "BreakGlass")) == "permission set requires MFA"
    with_mfa = replace(alice, mfa=True)
    assert roles(authorize(with_mfa, AccountTarget(PROD), clock.now())) == {(PROD, "BreakGlass"), (PROD, "ReadOnly")}


def _wiki() -> None:
    providers.add(python3_saml_metadata(entity_id=WIKI, acs_url=WIKI + "/acs"), None,
                  providers.SpOptions(name="Wiki"), actor="test")


def test_an_app_nobody_was_given_is_refused_and_audited() -> None:
    _wiki()
    err = denied(principal("alice"), AppTarget("saml", WIKI))
    assert err == "not assigned to this application"
    (event,) = audit.events(type="access.denied")
    assert (event.outcome, event.username, event.sp, event.reason) == ("failure", "alice", WIKI, err)
    assert event.details == {"app_kind": "saml", "app": WIKI}

    assert denied(principal("alice"), AppTarget("saml", "https://unknown.example.test")) == \
        "unknown service provider"
    assert len(audit.events(type="access.denied")) == 2


def test_apps_by_group_user_and_open_to_all(frozen_clock: Clock) -> None:
    _wiki()
    grafana = register(name="Grafana", open_to_all=False).client_id
    chat = register(name="Chat", open_to_all=False).client_id
    assignments.assign_app("Wiki", "engineers", actor="test")
    assignments.assign_app(grafana, "bob", until=clock.now() + timedelta(hours=1), actor="test")

    (app,) = authorize(principal("alice"), AppTarget("saml", WIKI), clock.now()).apps
    assert (app.name, [s.via for s in app.sources]) == ("Wiki", ["group engineers"])
    assert denied(principal("bob"), AppTarget("saml", WIKI)) == "not assigned to this application"
    (app,) = authorize(principal("bob"), AppTarget("oidc", grafana), clock.now()).apps
    assert app.until == clock.now() + timedelta(hours=1)

    assignments.set_open_to_all(chat, True, actor="test")
    (app,) = authorize(principal("bob"), AppTarget("oidc", chat), clock.now()).apps
    assert [(s.via, s.scope) for s in app.sources] == [("everyone", "open to all")]

    frozen_clock.advance(hours=1)
    assert denied(principal("bob"), AppTarget("oidc", grafana)) == "not assigned to this application"
    assignments.set_open_to_all(chat, False, actor="test")
    assert denied(principal("bob"), AppTarget("oidc", chat)) == "not assigned to this application"


def test_a_directory_group_is_matched_by_name() -> None:
    """A group of an LDAP/AD directory has no row: the assignment names it, the principal carries it."""
    account(PROD)
    pset("Admin")
    assignments.assign("group:Domain Admins", "Admin", account=PROD, actor="test")
    dora = User(username="dora", source="corp", external_id="1", external_groups=["Domain Admins"])
    db.session.add(dora)
    db.session.commit()
    assert roles(authorize(principal_from_user(dora, clock.now()), AccountTarget(PROD), clock.now())) == {
        (PROD, "Admin")}


def test_everything_is_exactly_what_is_granted(frozen_clock: Clock) -> None:
    accounts.add_ou("Workloads", actor="test")
    account(PROD, ou="Workloads")
    account(STAGE)
    account(SANDBOX)
    pset("Admin")
    pset("ReadOnly")
    pset("BreakGlass", mfa_required=True)
    assignments.assign("engineers", "Admin", ou="Workloads", actor="test")
    assignments.assign("alice", "ReadOnly", account=STAGE, actor="test")
    assignments.assign("alice", "ReadOnly", account=SANDBOX, until=clock.now() + timedelta(minutes=5),
                       actor="test")
    assignments.assign("alice", "BreakGlass", account=STAGE, actor="test")  # needs MFA alice lacks
    assignments.assign("bob", "Admin", account=SANDBOX, actor="test")  # someone else's
    _wiki()
    grafana = register(name="Grafana", open_to_all=False).client_id
    chat = register(name="Chat", open_to_all=False).client_id
    register(name="Payroll", open_to_all=False)  # nobody's
    register(name="Nightly job", open_to_all=True, grant_types=("client_credentials",))  # no person's app
    assignments.assign_app(grafana, "alice", actor="test")
    assignments.set_open_to_all(chat, True, actor="test")
    frozen_clock.advance(minutes=10)  # the Sandbox assignment has ended

    grant = authorize(principal("alice"), EVERYTHING, clock.now())
    assert [(r.account_id, r.permission_set) for r in grant.roles] == [(PROD, "Admin"), (STAGE, "ReadOnly")]
    assert [(a.kind, a.key) for a in grant.apps] == [("oidc", chat), ("oidc", grafana)]
    assert audit.events(type="access.denied") == []  # a listing refuses nothing
