"""`idp ou|account|permission-set|assign|unassign|app|access`: the access model as an admin drives it."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from access_rows import ou_removed_once_found
from conftest import Clock
from flask import Flask
from flask.testing import FlaskCliRunner
from helpers import make_user
from oidc_peers import register
from saml_peers import python3_saml_metadata
from sqlalchemy import func, select

from idp import audit
from idp.access.decide import AWS_ENTITY_ID
from idp.cli import cli
from idp.extensions import db
from idp.saml import providers
from idp.store import Account, Assignment, PermissionSet, User

ACTOR = "cli:" + getpass.getuser()
A1, A2 = "111122223333", "444455556666"


def arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:saml-provider/bridge"


def ok(runner: FlaskCliRunner, *args: str, input: str | None = None) -> str:
    result = runner.invoke(cli, list(args), input=input)
    assert result.exit_code == 0, (result.output, result.stderr)
    return str(result.stdout)


def refused(runner: FlaskCliRunner, *args: str) -> str:
    """The one-line error of a refused command (nothing stored is the caller's to check)."""
    result = runner.invoke(cli, list(args))
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return str(result.stderr)


def count(model: Any) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)))


def add_account(runner: FlaskCliRunner, account_id: str = A1, *extra: str) -> str:
    return ok(runner, "account", "add", account_id, "--name", f"acct-{account_id[:4]}", "--saml-provider-arn",
              arn(account_id), *extra)


# --- OUs ------------------------------------------------------------------------------------------------


def test_ou_tree_with_account_counts(runner: FlaskCliRunner) -> None:
    assert "organizational unit 'Production' added" in ok(runner, "ou", "add", "Production")
    assert "'Production/Payments' added" in ok(runner, "ou", "add", "Payments", "--parent", "Production")
    ok(runner, "ou", "add", "Sandbox")
    add_account(runner, A1, "--ou", "Payments")
    add_account(runner, A2)

    assert ok(runner, "ou", "list").splitlines() == [
        "(root)  1 account(s)",
        "  Production  0 account(s)",
        "    Payments  1 account(s)",
        "  Sandbox  0 account(s)",
    ]
    nodes = json.loads(ok(runner, "ou", "list", "--json"))
    assert nodes[1] == {"name": "Payments", "parent": "Production", "depth": 1, "accounts": 1}
    events = audit.events(type="access.ou.add")
    assert [(e.actor, e.details["ou"], e.details["parent"]) for e in reversed(events)] == [
        (ACTOR, "Production", None), (ACTOR, "Payments", "Production"), (ACTOR, "Sandbox", None)]


def test_ou_refusals(runner: FlaskCliRunner) -> None:
    ok(runner, "ou", "add", "Production")
    ok(runner, "ou", "add", "Payments", "--parent", "Production")
    ok(runner, "ou", "add", "Cards", "--parent", "Payments")
    assert "already exists" in refused(runner, "ou", "add", "Production")
    assert "no organizational unit 'Nowhere'" in refused(runner, "ou", "add", "X", "--parent", "Nowhere")
    assert "no '/'" in refused(runner, "ou", "add", "a/b")

    # A cycle: Production under its own grandchild, or under itself.
    err = refused(runner, "ou", "move", "Production", "--parent", "Cards")
    assert "cannot move 'Production' under 'Cards'" in err
    assert "cannot move" in refused(runner, "ou", "move", "Payments", "--parent", "Payments")
    assert audit.events(type="access.ou.move") == []

    ok(runner, "ou", "move", "Cards", "--root")
    assert "  Cards  0 account(s)" in ok(runner, "ou", "list").splitlines()
    (event,) = audit.events(type="access.ou.move")
    assert event.details == {"ou": "Cards", "from": "Production/Payments", "to": "(root)"}

    add_account(runner, A1, "--ou", "Cards")
    assert "still holds accounts" in refused(runner, "ou", "remove", "Cards", "--yes")
    ok(runner, "account", "move", A1, "--root")
    ok(runner, "permission-set", "add", "Admin", "--session-duration", "1")
    ok(runner, "assign", "group:payments", "Admin", "--ou", "Cards")
    assert "removed (1 assignment(s) with it)" in ok(runner, "ou", "remove", "Cards", "--yes")
    assert "Cards" not in ok(runner, "ou", "list")
    assert count(Assignment) == 0
    assert audit.events(type="access.ou.remove")[0].details == {"ou": "Cards", "assignments_removed": 1}


# --- accounts -------------------------------------------------------------------------------------------


def test_account_add_list_show_move_remove(runner: FlaskCliRunner) -> None:
    ok(runner, "ou", "add", "Production")
    out = ok(runner, "account", "add", A1, "--name", "Payments prod", "--saml-provider-arn", arn(A1),
             "--ou", "Production", "--signin-url", "https://us-east-1.signin.aws.amazon.com/saml")
    assert out.strip() == f"account {A1} (Payments prod) added in Production"
    (event,) = audit.events(type="access.account.add")
    assert event.actor == ACTOR
    assert event.details["account"] == A1 and event.details["ou"] == "Production"

    assert ok(runner, "account", "list").strip() == f"{A1}\tPayments prod\tProduction\t{arn(A1)}"
    shown = json.loads(ok(runner, "account", "show", A1, "--json"))
    assert shown == {"account_id": A1, "name": "Payments prod", "ou": "Production", "saml_provider_arn": arn(A1),
                     "signin_url": "https://us-east-1.signin.aws.amazon.com/saml", "assignments": []}

    ok(runner, "account", "move", A1, "--root")
    assert "ou: (root)" in ok(runner, "account", "show", A1)
    (moved,) = audit.events(type="access.account.move")
    assert moved.details == {"account": A1, "from": "Production", "to": "(root)"}
    assert "give exactly one" in refused(runner, "account", "move", A1)
    assert "no organizational unit" in refused(runner, "account", "move", A1, "--ou", "Nowhere")

    ok(runner, "account", "remove", A1, "--yes")
    assert count(Account) == 0
    assert audit.events(type="access.account.remove")[0].details["account"] == A1
    assert f"no account '{A1}'" in refused(runner, "account", "show", A1)


@pytest.mark.parametrize(("args", "message"), [
    (["12345", "--saml-provider-arn", arn("12345")], "invalid AWS account id '12345': exactly 12 digits"),
    (["1111222233334", "--saml-provider-arn", arn(A1)], "exactly 12 digits"),
    (["11112222333x", "--saml-provider-arn", arn(A1)], "exactly 12 digits"),
    ([A1, "--saml-provider-arn", "arn:aws:iam::111122223333:role/bridge"], "invalid SAML provider ARN"),
    ([A1, "--saml-provider-arn", "bridge"], f"expected arn:aws:iam::{A1}:saml-provider/NAME"),
    ([A1, "--saml-provider-arn", arn(A2)], f"is in account {A2}, not {A1}"),
    ([A1, "--saml-provider-arn", arn(A1), "--signin-url", "http://signin.aws.amazon.com/saml"], "AWS sign-in SAML"),
    ([A1, "--saml-provider-arn", arn(A1), "--signin-url", "https://signin.aws.amazon.com.evil.test/saml"],
     "AWS sign-in SAML endpoint"),
    # Of AWS's form, but not an endpoint its metadata lists: every console launch would then fail.
    ([A1, "--saml-provider-arn", arn(A1), "--signin-url", "https://mx-central-9.signin.aws.amazon.com/saml"],
     "is not among the sign-in endpoints of AWS's SAML metadata"),
    ([A1, "--saml-provider-arn", arn(A1), "--ou", "Nowhere"], "no organizational unit 'Nowhere'"),
])
def test_account_refusals(runner: FlaskCliRunner, args: list[str], message: str) -> None:
    assert message in refused(runner, "account", "add", *args[:1], "--name", "x", *args[1:])
    assert count(Account) == 0
    assert audit.events(type="access.account.add") == []


def test_duplicate_account(runner: FlaskCliRunner) -> None:
    add_account(runner)
    assert f"account '{A1}' already exists" in refused(
        runner, "account", "add", A1, "--name", "again", "--saml-provider-arn", arn(A1))
    assert count(Account) == 1


# --- permission sets ------------------------------------------------------------------------------------


def test_permission_set_add_show_update_list(runner: FlaskCliRunner, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    out = ok(runner, "permission-set", "add", "ReadOnly", "--session-duration", "4", "--description", "Look only",
             "--managed-policy", "arn:aws:iam::aws:policy/ReadOnlyAccess", "--inline-policy", str(policy),
             "--relay-state", "https://console.aws.amazon.com/s3/")
    assert out.strip() == "permission set 'ReadOnly' added (role ReadOnly, 4h sessions)"
    pset = db.session.scalar(select(PermissionSet))
    assert (pset.session_duration_seconds, pset.role_name, pset.mfa_required) == (14400, "ReadOnly", False)
    (added,) = audit.events(type="access.permission_set.add")
    assert added.actor == ACTOR and added.details["inline_policy"] is True  # not the policy itself

    shown = ok(runner, "permission-set", "show", "ReadOnly")
    assert "session_duration_hours: 4" in shown
    assert "managed_policy_arns: arn:aws:iam::aws:policy/ReadOnlyAccess" in shown
    assert 'inline_policy: {"Statement": [{"Action": "s3:GetObject"' in shown

    out = ok(runner, "permission-set", "update", "ReadOnly", "--session-duration", "8", "--role-name",
             "AWSReadOnly", "--mfa-required", "--description", "Look only")
    assert out.splitlines() == ["session_duration_seconds: 14400 -> 28800", "role_name: ReadOnly -> AWSReadOnly",
                                "mfa_required: False -> True"]
    db.session.expire_all()
    pset = db.session.scalar(select(PermissionSet))
    assert (pset.session_duration_seconds, pset.role_name, pset.description) == (28800, "AWSReadOnly", "Look only")
    assert pset.relay_state == "https://console.aws.amazon.com/s3/"  # not given: unchanged
    (updated,) = audit.events(type="access.permission_set.update")
    assert updated.details["fields"] == ["mfa_required", "role_name", "session_duration_seconds"]
    assert updated.details["changed"]["role_name"] == {"from": "ReadOnly", "to": "AWSReadOnly"}

    assert ok(runner, "permission-set", "update", "ReadOnly", "--session-duration", "8").strip() == "nothing changed"
    assert len(audit.events(type="access.permission_set.update")) == 1

    ok(runner, "permission-set", "update", "ReadOnly", "--no-inline-policy", "--no-managed-policies",
       "--relay-state", "")
    db.session.expire_all()
    pset = db.session.scalar(select(PermissionSet))
    assert (pset.inline_policy, pset.managed_policy_arns, pset.relay_state) == (None, [], None)

    ok(runner, "permission-set", "add", "Admin", "--session-duration", "1")
    assert ok(runner, "permission-set", "list").splitlines() == [
        "Admin\t1h\tAdmin", "ReadOnly\t8h\tAWSReadOnly\tmfa\tLook only"]


@pytest.mark.parametrize(("args", "message"), [
    (["--session-duration", "0"], "the session duration is 1 to 12 hours, not 0"),
    (["--session-duration", "13"], "the session duration is 1 to 12 hours, not 13"),
    (["--session-duration", "1.5"], "'1.5' is not a valid integer"),
    ([], "needs a session duration"),
    (["--session-duration", "1", "--role-name", "has space"], "invalid IAM role name 'has space'"),
    (["--session-duration", "1", "--role-name", "r" * 65], "invalid IAM role name"),
    (["--session-duration", "1", "--managed-policy", "ReadOnlyAccess"], "invalid managed policy ARN"),
    (["--session-duration", "1", "--relay-state", "http://console.aws.amazon.com/"], "https URL"),
])
def test_permission_set_refusals(runner: FlaskCliRunner, args: list[str], message: str) -> None:
    assert message in refused(runner, "permission-set", "add", "Admin", *args)
    assert count(PermissionSet) == 0


def test_inline_policy_must_be_a_json_object(runner: FlaskCliRunner, tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text('["s3:*"]')
    (tmp_path / "broken.json").write_text('{"Version": ')
    add = ("permission-set", "add", "Admin", "--session-duration", "1", "--inline-policy")
    assert "holds JSON but not an object" in refused(runner, *add, str(tmp_path / "list.json"))
    assert "is not JSON" in refused(runner, *add, str(tmp_path / "broken.json"))
    assert "cannot read" in refused(runner, *add, str(tmp_path / "missing.json"))
    assert count(PermissionSet) == 0


def test_duplicate_permission_set_and_invalid_name(runner: FlaskCliRunner) -> None:
    ok(runner, "permission-set", "add", "Admin", "--session-duration", "1")
    assert "permission set 'Admin' already exists" in refused(
        runner, "permission-set", "add", "Admin", "--session-duration", "2")
    for bad in ("x" * 33, "..", "-", "Admin Role"):  # "..": a path segment in the portal's console link
        assert "invalid permission set name" in refused(runner, "permission-set", "add", bad, "--session-duration", "1")
    assert "no permission set 'Nope'" in refused(runner, "permission-set", "update", "Nope",
                                                 "--session-duration", "2")


def test_deleting_a_permission_set_in_use(runner: FlaskCliRunner) -> None:
    make_user("alice")
    add_account(runner)
    ok(runner, "permission-set", "add", "Admin", "--session-duration", "1")
    ok(runner, "assign", "alice", "Admin", "--account", A1)

    err = refused(runner, "permission-set", "delete", "Admin", "--yes")
    assert "permission set 'Admin' is used by 1 assignment(s) (user alice: Admin in account 111122223333)" in err
    assert "--force" in err
    assert count(PermissionSet) == 1 and count(Assignment) == 1

    out = ok(runner, "permission-set", "delete", "Admin", "--force", "--yes")
    assert "deleted (1 assignment(s) with it)" in out
    assert count(PermissionSet) == 0 and count(Assignment) == 0
    (event,) = audit.events(type="access.permission_set.delete")
    assert event.actor == ACTOR
    assert event.details["assignments_removed"] == [f"user alice: Admin in account {A1}"]

    ok(runner, "permission-set", "add", "Unused", "--session-duration", "1")
    ok(runner, "permission-set", "delete", "Unused", input="y\n")
    assert count(PermissionSet) == 0


# --- assignments ----------------------------------------------------------------------------------------


@pytest.fixture
def world(runner: FlaskCliRunner) -> None:
    ok(runner, "ou", "add", "Production")
    add_account(runner, A1, "--ou", "Production")
    ok(runner, "permission-set", "add", "Admin", "--session-duration", "1")
    make_user("alice", groups=["engineers"])


@pytest.mark.usefixtures("world")
def test_assign_and_unassign(runner: FlaskCliRunner) -> None:
    assert ok(runner, "assign", "alice", "Admin", "--account", A1).strip() == \
        f"assigned Admin to user alice in account {A1}"
    assert ok(runner, "assign", "engineers", "Admin", "--ou", "Production").strip() == \
        "assigned Admin to group engineers in ou Production"
    assert count(Assignment) == 2
    shown = ok(runner, "account", "show", A1)
    assert f"assignments: user alice: Admin in account {A1}" in shown
    assert "assignments: group engineers: Admin in ou Production" in shown

    events = audit.events(type="access.assign")
    assert [(e.actor, e.username, e.details["principal"], e.details["scope"]) for e in reversed(events)] == [
        (ACTOR, "alice", "user alice", f"account {A1}"), (ACTOR, None, "group engineers", "ou Production")]

    err = refused(runner, "assign", "user:alice", "Admin", "--account", A1)
    assert f"user alice already has Admin in account {A1}" in err
    assert count(Assignment) == 2

    assert "give exactly one of --account" in refused(runner, "assign", "alice", "Admin")
    assert "give exactly one of --account" in refused(runner, "assign", "alice", "Admin", "--account", A1,
                                                      "--ou", "Production")
    assert "no account '999999999999'" in refused(runner, "assign", "alice", "Admin", "--account", "999999999999")
    assert "no organizational unit" in refused(runner, "assign", "alice", "Admin", "--ou", "Staging")
    assert "no permission set 'Root'" in refused(runner, "assign", "alice", "Root", "--account", A1)

    assert ok(runner, "unassign", "group:engineers", "Admin", "--ou", "Production").strip() == \
        "unassigned Admin from group engineers in ou Production"
    assert "group engineers has no assignment of Admin in ou Production" in refused(
        runner, "unassign", "engineers", "Admin", "--ou", "Production")
    (event,) = audit.events(type="access.unassign")
    assert event.details == {"principal": "group engineers", "permission_set": "Admin", "scope": "ou Production"}
    assert count(Assignment) == 1


@pytest.mark.usefixtures("world")
def test_who_is_user_or_group(runner: FlaskCliRunner) -> None:
    make_user("ops", groups=["ops"])  # a user and a group of the same name
    err = refused(runner, "assign", "ops", "Admin", "--account", A1)
    assert "'ops' is both a user and a group: write user:ops or group:ops" in err
    ok(runner, "assign", "group:ops", "Admin", "--account", A1)
    ok(runner, "assign", "user:ops", "Admin", "--account", A1)
    assert {(a.user_id is not None, a.group_name) for a in db.session.scalars(select(Assignment))} == {
        (False, "ops"), (True, None)}

    err = refused(runner, "assign", "contractors", "Admin", "--account", A1)
    assert "no user or group 'contractors'" in err and "write group:contractors" in err
    # A directory group nobody has signed in with: only by its prefix.
    assert "group contractors" in ok(runner, "assign", "group:contractors", "Admin", "--account", A1)
    assert "no user 'bob'" in refused(runner, "assign", "user:bob", "Admin", "--account", A1)

    # A directory group somebody has signed in with resolves without the prefix (from their shadow row).
    db.session.add(User(username="dora", source="corp", external_id="x1", external_groups=["Domain Admins"]))
    db.session.commit()
    assert "group Domain Admins" in ok(runner, "assign", "Domain Admins", "Admin", "--account", A1)


@pytest.mark.usefixtures("world")
def test_until(runner: FlaskCliRunner, frozen_clock: Clock) -> None:
    frozen_clock.current = datetime(2027, 3, 10, 15, 0, tzinfo=UTC)
    out = ok(runner, "assign", "alice", "Admin", "--account", A1, "--until", "2027-03-31")
    # A date: the assignment works through that whole day (UTC).
    assert out.strip().endswith("until 2027-04-01T00:00:00+00:00")
    ok(runner, "assign", "engineers", "Admin", "--account", A1, "--until", "2027-03-10T18:00:00+02:00")
    ends = {a.group_name: a.until for a in db.session.scalars(select(Assignment))}
    assert ends == {None: datetime(2027, 4, 1, tzinfo=UTC), "engineers": datetime(2027, 3, 10, 16, tzinfo=UTC)}
    assert (audit.events(type="access.assign")[-1].details["until"]) == "2027-04-01T00:00:00+00:00"

    ok(runner, "unassign", "alice", "Admin", "--account", A1)
    # The basic format and an ISO week date are dates too: the end of that day, as 2027-03-31 is.
    for day in ("20270331", "2027-W13-3"):
        assert ok(runner, "assign", "alice", "Admin", "--account", A1, "--until", day).strip().endswith(
            "until 2027-04-01T00:00:00+00:00")
        ok(runner, "unassign", "alice", "Admin", "--account", A1)
    for past in ("2027-03-09", "2027-03-10T14:59:59", "2027-03-10T15:00:00Z"):
        assert "is already past" in refused(runner, "assign", "alice", "Admin", "--account", A1, "--until", past)
    assert "neither an ISO date" in refused(runner, "assign", "alice", "Admin", "--account", A1,
                                            "--until", "next friday")
    assert count(Assignment) == 1
    assert "an ISO date, meaning the end of that day in UTC" in " ".join(ok(runner, "assign", "--help").split())

    # An ended assignment is no duplicate: assigning again gives it a new end.
    frozen_clock.advance(hours=2)
    assert "(ended 2027-03-10T16:00:00+00:00)" in ok(runner, "account", "show", A1)
    ok(runner, "assign", "engineers", "Admin", "--account", A1, "--until", "2027-04-30")
    assert [a.until for a in db.session.scalars(select(Assignment))] == [datetime(2027, 5, 1, tzinfo=UTC)]


# --- applications ---------------------------------------------------------------------------------------


def _sp(entity_id: str, name: str, acs_url: str | None = None) -> None:
    xml = python3_saml_metadata(entity_id=entity_id, acs_url=acs_url or entity_id.rstrip("/") + "/acs")
    providers.add(xml, None, providers.SpOptions(name=name), actor="test")


def test_app_assignments(runner: FlaskCliRunner) -> None:
    make_user("alice", groups=["engineers"])
    _sp("https://wiki.example.test/sp", "Wiki")
    grafana = register(name="Grafana", open_to_all=False).client_id
    assert ok(runner, "app", "list").splitlines() == [
        f"oidc\t{grafana}\tGrafana\tnobody", "saml\thttps://wiki.example.test/sp\tWiki\tnobody"]

    assert ok(runner, "app", "assign", "https://wiki.example.test/sp", "engineers").strip() == \
        "assigned Wiki to group engineers in saml https://wiki.example.test/sp"
    ok(runner, "app", "assign", grafana, "alice", "--until", "2099-01-01")
    ok(runner, "app", "assign", "Grafana", "group:sre")  # by name
    assert "already assigned to group engineers" in refused(runner, "app", "assign", "Wiki", "engineers")
    apps = {a["name"]: a for a in json.loads(ok(runner, "app", "list", "--json"))}
    assert apps["Grafana"]["assigned"] == ["group sre", "user alice (until 2099-01-02T00:00:00+00:00)"]
    assert apps["Wiki"] == {"kind": "saml", "key": "https://wiki.example.test/sp", "name": "Wiki",
                            "open_to_all": False, "assigned": ["group engineers"]}
    (event, *_) = audit.events(type="access.app.assign")
    assert (event.actor, event.sp, event.details["principal"]) == (ACTOR, grafana, "group sre")

    ok(runner, "app", "unassign", "Grafana", "sre")
    assert "is not assigned to group sre" in refused(runner, "app", "unassign", "Grafana", "group:sre")
    assert audit.events(type="access.app.unassign")[0].details["principal"] == "group sre"

    assert "open to all" in ok(runner, "app", "open-to-all", "Wiki")
    assert "(already)" in ok(runner, "app", "open-to-all", "Wiki")
    assert "saml\thttps://wiki.example.test/sp\tWiki\topen to all" in ok(runner, "app", "list")
    ok(runner, "app", "open-to-all", "Wiki", "--off")
    assert [e.details["open_to_all"] for e in audit.events(type="access.app.open_to_all")] == [False, True]


def test_app_refusals(runner: FlaskCliRunner) -> None:
    make_user("alice")
    _sp("https://one.example.test/sp", "Tracker")
    register(name="Tracker", open_to_all=False)
    _sp(AWS_ENTITY_ID, "AWS", acs_url="https://signin.aws.amazon.com/saml")

    err = refused(runner, "app", "assign", "Tracker", "alice")
    assert "'Tracker' names several applications" in err and "saml https://one.example.test/sp" in err
    assert "no application 'Nope'" in refused(runner, "app", "assign", "Nope", "alice")
    for args in (("assign", AWS_ENTITY_ID, "alice"), ("assign", "AWS", "alice"), ("open-to-all", "AWS")):
        assert "account assignments" in refused(runner, "app", *args)
    assert "AWS" not in ok(runner, "app", "list")
    assert audit.events(type="access.app.assign") == audit.events(type="access.app.open_to_all") == []


# --- effective access -----------------------------------------------------------------------------------


def test_access_show_names_the_sources(runner: FlaskCliRunner, frozen_clock: Clock) -> None:
    frozen_clock.current = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
    make_user("alice", groups=["engineers"])
    ok(runner, "ou", "add", "Production")
    add_account(runner, A1, "--ou", "Production")
    ok(runner, "permission-set", "add", "Admin", "--session-duration", "4")
    ok(runner, "permission-set", "add", "Break-glass", "--session-duration", "1", "--mfa-required")
    ok(runner, "assign", "engineers", "Admin", "--ou", "Production")
    ok(runner, "assign", "alice", "Admin", "--account", A1, "--until", "2027-03-10T13:30:00Z")
    ok(runner, "assign", "alice", "Break-glass", "--account", A1)
    _sp("https://wiki.example.test/sp", "Wiki")
    ok(runner, "app", "open-to-all", "Wiki")

    out = ok(runner, "access", "show", "alice")
    assert out.splitlines() == [
        "user alice (local); groups: engineers",
        "accounts:",
        f"  acct-1111 ({A1})  Admin  arn:aws:iam::{A1}:role/Admin  session 4h",
        "    from group engineers via ou Production",
        f"    from user alice via account {A1} until 2027-03-10T13:30:00+00:00",
        "apps:",
        "  Wiki (saml https://wiki.example.test/sp)",
        "    from open to all",
        "only after signing in with MFA:",
        f"  acct-1111 ({A1})  Break-glass  arn:aws:iam::{A1}:role/Break-glass  session 1h",
        f"    from user alice via account {A1}",
    ]
    data = json.loads(ok(runner, "access", "show", "alice", "--json"))
    (role,) = data["roles"]
    assert (role["permission_set"], role["session_seconds"], role["until"]) == ("Admin", 14400, None)
    assert role["sources"][0] == {"via": "group engineers", "scope": "ou Production", "until": None}
    assert [r["permission_set"] for r in data["with_mfa_only"]] == ["Break-glass"]

    # Once the group's assignment is gone, the rest of alice's own assignment cuts her session.
    ok(runner, "unassign", "engineers", "Admin", "--ou", "Production")
    frozen_clock.advance(minutes=30)
    assert "session 1h until 2027-03-10T13:30:00+00:00" in ok(runner, "access", "show", "alice")
    assert "no user 'nobody'" in refused(runner, "access", "show", "nobody")
    assert audit.events(type="access.denied") == []  # a read-out is no refusal


def test_access_show_for_nothing(runner: FlaskCliRunner) -> None:
    make_user("bob")
    assert ok(runner, "access", "show", "bob").splitlines() == [
        "user bob (local); groups: -", "accounts: none", "apps: none"]
    ok(runner, "user", "disable", "bob")
    assert "disabled: signs in nowhere" in ok(runner, "access", "show", "bob")


def test_an_account_added_into_an_ou_removed_meanwhile_is_one_line(
        app: Flask, runner: FlaskCliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    ok(runner, "ou", "add", "Sandbox")
    ou_removed_once_found(app, monkeypatch)
    error = refused(runner, "account", "add", A1, "--name", "Payments", "--saml-provider-arn", arn(A1),
                    "--ou", "Sandbox")
    assert error.strip() == ("Error: this conflicts with a change made at the same time (by another command or "
                             "an admin): look again, then run it again")
    assert count(Account) == 0


@pytest.mark.usefixtures("world")
def test_group_names_are_matched_in_any_case(runner: FlaskCliRunner) -> None:
    """An assignment to group:Engineers was stored, audited and then gave nobody anything: alice is in engineers
    (as Active Directory, which is case-insensitive, may spell it another way than the admin)."""
    ok(runner, "assign", "group:Engineers", "Admin", "--account", A1)
    assert f"Admin  arn:aws:iam::{A1}:role/Admin" in ok(runner, "access", "show", "alice")
    # The same grant in another case is the same grant, and it is taken back in any case.
    assert "already has Admin" in refused(runner, "assign", "group:ENGINEERS", "Admin", "--account", A1)
    ok(runner, "unassign", "group:engineers", "Admin", "--account", A1)
    assert count(Assignment) == 0
    # Rows of one group in two cases, as the unique index (exact in case) let in before: both are taken back.
    for spelling in ("Engineers", "engineers"):
        db.session.add(Assignment(permission_set_id=db.session.scalar(select(PermissionSet.id)), group_name=spelling,
                                  account_id=db.session.scalar(select(Account.id)), created_by="test"))
    db.session.commit()
    ok(runner, "unassign", "group:ENGINEERS", "Admin", "--account", A1)
    assert count(Assignment) == 0 and "Admin" not in ok(runner, "access", "show", "alice")
    # In any case in ASCII only: a directory's group whose name Unicode folds to engineers (a Kelvin sign for k
    # in another assignment's group, a long s) is another group.
    ok(runner, "group", "add", "kube-admins")
    ok(runner, "assign", "group:kube-admins", "Admin", "--account", A1)
    mallory = make_user("mallory")
    for groups, admin in ((["\u212aube-admins"], False), (["kube-admin\u017f"], False), (["KUBE-ADMINS"], True)):
        mallory.external_groups = groups  # as a directory reported them at sign-in
        db.session.commit()
        assert ("Admin" in ok(runner, "access", "show", "mallory")) is admin, groups
    ok(runner, "unassign", "group:kube-admins", "Admin", "--account", A1)
    # A local group is found in any case too (it was "exists" to group add and "no group" to add-member).
    make_user("bob")
    ok(runner, "group", "add-member", "ENGINEERS", "bob")
    assert "groups: engineers" in ok(runner, "access", "show", "bob")
