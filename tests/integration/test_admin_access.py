"""The admin pages for the access model: accounts in their OU tree (/admin/accounts), permission sets
(/admin/permission-sets) and assignments (/admin/assignments), driven with the test client as a browser would.
Each change lands through the access services, audited naming the admin; each refusal is shown next to its field
and changes nothing."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from admin_ui import by_admin, events, field_errors, flashed, form_errors, post_form, sign_in_admin, text
from conftest import Clock
from flask.testing import FlaskClient
from helpers import DEFAULT_PASSWORD, csrf_token, login, make_user

from idp.access import accounts, assignments, permission_sets
from idp.access.permission_sets import PermissionSetSpec
from idp.extensions import db
from idp.store import Assignment

PROD, DEV = "111122223333", "444455556666"


def arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:saml-provider/bridge"


@pytest.fixture
def admin(client: FlaskClient) -> FlaskClient:
    return sign_in_admin(client)


def world() -> None:
    """An OU tree with two accounts, a permission set, and a user and a group to assign it to."""
    accounts.add_ou("Workloads", actor="test")
    accounts.add_ou("Production", parent="Workloads", actor="test")
    accounts.add_account(PROD, name="Prod", saml_provider_arn=arn(PROD), ou="Production", actor="test")
    accounts.add_account(DEV, name="Dev", saml_provider_arn=arn(DEV), actor="test")
    permission_sets.add_permission_set("ReadOnly", PermissionSetSpec(session_hours=1), actor="test")
    make_user("alice", groups=["engineers"])


def count_assignments() -> int:
    return len(db.session.scalars(db.select(Assignment.id)).all())


def test_every_page_renders_for_an_admin(admin: FlaskClient) -> None:
    world()
    done = assignments.assign("group:engineers", "ReadOnly", ou="Workloads", actor="test")
    for path in ("/admin/accounts", f"/admin/accounts/{PROD}", f"/admin/accounts/{PROD}/remove",
                 "/admin/accounts/ous/Production", "/admin/accounts/ous/Production/remove", "/admin/permission-sets",
                 "/admin/permission-sets/new", "/admin/permission-sets/ReadOnly",
                 "/admin/permission-sets/ReadOnly/delete", "/admin/assignments", "/admin/assignments/new",
                 f"/admin/assignments/{done.id}/remove"):
        assert admin.get(path).status_code == 200, path
    assert admin.get("/admin/accounts/999999999999").status_code == 404
    assert admin.get("/admin/permission-sets/Nope").status_code == 404
    assert admin.get("/admin/assignments/424242/remove").status_code == 404


# --- accounts and OUs -------------------------------------------------------------------------------------


def test_ou_tree_with_accounts(admin: FlaskClient) -> None:
    world()
    page = text(admin.get("/admin/accounts"))
    # Parents before children, each account under its OU; Dev directly under the root.
    assert page.index("(root)") < page.index("Dev") < page.index("Workloads") < page.index("Production") \
        < page.index("Prod</a>")
    assert 'href="/admin/accounts/ous/Production"' in page and f'href="/admin/accounts/{PROD}"' in page


def test_add_an_ou_under_a_parent(admin: FlaskClient) -> None:
    world()
    resp = post_form(admin, "/admin/accounts", "/admin/accounts/ous", {"ou_name": "Payments", "parent": "Production"})
    assert resp.status_code == 303
    assert accounts.ou_path(accounts.require_ou("Payments").id) == "Workloads/Production/Payments"
    assert "Added the OU Workloads/Production/Payments." in flashed(admin.get(resp.headers["Location"]))
    assert by_admin("access.ou.add")[0].details == {"ou": "Payments", "parent": "Production"}

    taken = post_form(admin, "/admin/accounts", "/admin/accounts/ous", {"ou_name": "Payments", "parent": ""})
    assert taken.status_code == 422 and "already exists" in field_errors(taken, "ou_name")
    slash = post_form(admin, "/admin/accounts", "/admin/accounts/ous", {"ou_name": "a/b", "parent": ""})
    assert slash.status_code == 422 and "no '/'" in field_errors(slash, "ou_name")
    assert len(by_admin("access.ou.add")) == 1


def test_add_an_account(admin: FlaskClient) -> None:
    world()
    resp = post_form(admin, "/admin/accounts", "/admin/accounts/new", {
        "account_id": "777788889999", "account_name": "Sandbox", "saml_provider_arn": arn("777788889999"),
        "ou": "Workloads", "signin_url": "https://eu-west-1.signin.aws.amazon.com/saml"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin/accounts/777788889999")
    sandbox = accounts.require_account("777788889999")
    assert (sandbox.name, accounts.ou_path(sandbox.ou_id), sandbox.signin_url) == (
        "Sandbox", "Workloads", "https://eu-west-1.signin.aws.amazon.com/saml")
    assert by_admin("access.account.add")[0].details["account"] == "777788889999"


@pytest.mark.parametrize(("values", "field", "reason"), [
    ({"account_id": "1234"}, "account_id", "exactly 12 digits"),
    ({"account_id": PROD}, "account_id", "already exists"),
    ({"saml_provider_arn": arn(DEV)}, "saml_provider_arn", f"is in account {DEV}"),
    ({"saml_provider_arn": "bridge"}, "saml_provider_arn", "invalid SAML provider ARN"),
    ({"signin_url": "https://evil.example/saml"}, "signin_url", "AWS sign-in SAML endpoint"),
    ({"account_name": ""}, "account_name", "An account needs a name."),
])
def test_account_refusals_are_shown_next_to_the_field(admin: FlaskClient, values: dict[str, str], field: str,
                                                      reason: str) -> None:
    world()
    data = {"account_id": "777788889999", "account_name": "Sandbox", "saml_provider_arn": arn("777788889999"),
            "ou": "", "signin_url": "", **values}
    if values.get("account_id") == PROD and "saml_provider_arn" not in values:
        data["saml_provider_arn"] = arn(PROD)
    resp = post_form(admin, "/admin/accounts", "/admin/accounts/new", data)
    assert resp.status_code == 422 and reason in field_errors(resp, field)
    assert accounts.get_account("777788889999") is None and not by_admin("access.account.add")


def test_edit_and_move_an_account(admin: FlaskClient) -> None:
    world()
    page = f"/admin/accounts/{DEV}"
    resp = post_form(admin, page, page, {"account_name": "Development", "saml_provider_arn": arn(DEV),
                                         "ou": "Production", "signin_url": ""})
    assert resp.status_code == 303
    dev = accounts.require_account(DEV)
    assert dev.name == "Development" and accounts.ou_path(dev.ou_id) == "Workloads/Production"
    assert by_admin("access.account.update")[0].details["fields"] == ["name"]
    assert by_admin("access.account.move")[0].details == {"account": DEV, "from": "(root)",
                                                          "to": "Workloads/Production"}

    bad = post_form(admin, page, page, {"account_name": "Development", "saml_provider_arn": arn(PROD), "ou": ""})
    assert bad.status_code == 422 and f"is in account {PROD}" in field_errors(bad, "saml_provider_arn")
    assert accounts.ou_path(accounts.require_account(DEV).ou_id) == "Workloads/Production"


def test_remove_an_account_after_confirming(admin: FlaskClient) -> None:
    world()
    assignments.assign("alice", "ReadOnly", account=DEV, actor="test")
    confirm = f"/admin/accounts/{DEV}/remove"
    unconfirmed = post_form(admin, confirm, confirm)
    assert unconfirmed.status_code == 422 and "Tick the box" in field_errors(unconfirmed, "confirm")
    assert accounts.get_account(DEV) is not None

    assert post_form(admin, confirm, confirm, {"confirm": "y"}).status_code == 303
    assert accounts.get_account(DEV) is None and count_assignments() == 0
    assert by_admin("access.account.remove")[0].details["assignments_removed"] == 1


def test_move_and_remove_an_ou(admin: FlaskClient) -> None:
    world()
    page = "/admin/accounts/ous/Production"
    inside = post_form(admin, page, f"{page}/move", {"parent": "Production"})
    assert inside.status_code == 422 and "is 'Production' or inside it" in field_errors(inside, "parent")
    assert post_form(admin, page, f"{page}/move", {"parent": ""}).status_code == 303
    assert accounts.ou_path(accounts.require_ou("Production").id) == "Production"
    assert by_admin("access.ou.move")[0].details == {"ou": "Production", "from": "Workloads", "to": "(root)"}

    confirm = f"{page}/remove"
    holding = post_form(admin, confirm, confirm, {"confirm": "y"})
    assert holding.status_code == 422 and "still holds accounts" in form_errors(holding)
    accounts.move_account(PROD, ou=None, actor="test")
    assert post_form(admin, confirm, confirm, {"confirm": "y"}).status_code == 303
    assert accounts.get_ou("Production") is None
    assert by_admin("access.ou.remove")[0].details["ou"] == "Production"


# --- permission sets ----------------------------------------------------------------------------------------

POLICY = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]}'


def pset_form(**values: str) -> dict[str, str]:
    # The description as a browser posts a textarea: lines end with CR LF.
    return {"session_hours": "4", "role_name": "", "description": "Looks,\r\ndoes not touch",
            "managed_policy_arns": "arn:aws:iam::aws:policy/ReadOnlyAccess\n\narn:aws:iam::111122223333:policy/Extra\n",
            "inline_policy": POLICY, "relay_state": "https://console.aws.amazon.com/s3/", "mfa_required": "y",
            **values}


def test_add_a_permission_set(admin: FlaskClient) -> None:
    resp = post_form(admin, "/admin/permission-sets/new", "/admin/permission-sets/new", pset_form(name="Auditor"))
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin/permission-sets/Auditor")
    pset = permission_sets.require_permission_set("Auditor")
    assert (pset.session_duration_seconds, pset.role_name, pset.managed_policy_arns, pset.mfa_required) == (
        4 * 3600, "Auditor", ["arn:aws:iam::aws:policy/ReadOnlyAccess", "arn:aws:iam::111122223333:policy/Extra"],
        True)
    assert pset.inline_policy["Statement"][0]["Action"] == "s3:Get*"
    assert pset.relay_state == "https://console.aws.amazon.com/s3/"
    assert by_admin("access.permission_set.add")[0].details["permission_set"] == "Auditor"
    assert pset.description == "Looks,\r\ndoes not touch"
    listed = text(admin.get("/admin/permission-sets"))
    assert "Auditor" in listed and "Looks," in listed


@pytest.mark.parametrize(("values", "field", "reason"), [
    ({"session_hours": "13"}, "session_hours", "From 1 to 12 hours."),
    ({"session_hours": "0"}, "session_hours", "From 1 to 12 hours."),
    ({"session_hours": ""}, "session_hours", "Give the session duration."),
    ({"inline_policy": '{"Version": '}, "inline_policy", "Not valid JSON"),
    ({"inline_policy": '["not", "an", "object"]'}, "inline_policy", "is a JSON object"),
    ({"inline_policy": '{"Statement": ' + "[" * 40 + "]" * 40 + "}"}, "inline_policy", "more than 32 levels deep"),
    ({"managed_policy_arns": "ReadOnlyAccess"}, "managed_policy_arns", "invalid managed policy ARN"),
    ({"relay_state": "http://console.aws.amazon.com/"}, "relay_state", "must be an https URL"),
    ({"role_name": "has space"}, "role_name", "invalid IAM role name"),
    ({"name": "no/slash"}, "name", "invalid permission set name"),
    ({"name": "ReadOnly"}, "name", "already exists"),
    ({"description": "Looks\x1b[31m"}, "description", "may not contain a control character"),
])
def test_permission_set_refusals_are_shown_next_to_the_field(admin: FlaskClient, values: dict[str, str], field: str,
                                                             reason: str) -> None:
    permission_sets.add_permission_set("ReadOnly", PermissionSetSpec(session_hours=1), actor="test")
    resp = post_form(admin, "/admin/permission-sets/new", "/admin/permission-sets/new",
                     pset_form(**{"name": "Auditor", **values}))
    assert resp.status_code == 422 and reason in field_errors(resp, field)
    assert permission_sets.get_permission_set("Auditor") is None and not by_admin("access.permission_set.add")


def test_edit_a_permission_set(admin: FlaskClient) -> None:
    permission_sets.add_permission_set("Ops", PermissionSetSpec(
        session_hours=1, description="Operators", inline_policy={"Version": "2012-10-17", "Statement": []},
        relay_state="https://console.aws.amazon.com/ec2/"), actor="test")
    page = "/admin/permission-sets/Ops"
    shown = text(admin.get(page))
    assert "Operators" in shown and '"Version": "2012-10-17"' in shown  # the policy, pretty-printed, to edit

    resp = post_form(admin, page, page, {"session_hours": "8", "role_name": "OpsRole", "description": "",
                                         "managed_policy_arns": "arn:aws:iam::aws:policy/PowerUserAccess",
                                         "inline_policy": "", "relay_state": ""})
    assert resp.status_code == 303
    pset = permission_sets.require_permission_set("Ops")
    assert (pset.session_duration_seconds, pset.role_name, pset.description, pset.inline_policy, pset.relay_state,
            pset.managed_policy_arns) == (8 * 3600, "OpsRole", None, None, None,
                                          ["arn:aws:iam::aws:policy/PowerUserAccess"])
    assert by_admin("access.permission_set.update")[0].details["fields"] == [
        "description", "inline_policy", "managed_policy_arns", "relay_state", "role_name",
        "session_duration_seconds"]

    bad = post_form(admin, page, page, {"session_hours": "20", "role_name": "OpsRole"})
    assert bad.status_code == 422 and "From 1 to 12 hours." in field_errors(bad, "session_hours")
    assert permission_sets.require_permission_set("Ops").session_duration_seconds == 8 * 3600


def test_delete_a_permission_set_in_use_needs_force(admin: FlaskClient) -> None:
    world()
    assignments.assign("group:engineers", "ReadOnly", account=PROD, actor="test")
    confirm = "/admin/permission-sets/ReadOnly/delete"
    assert "1 assignment(s) use it" in text(admin.get(confirm))

    unconfirmed = post_form(admin, confirm, confirm, {"force": "y"})
    assert unconfirmed.status_code == 422 and permission_sets.get_permission_set("ReadOnly") is not None
    in_use = post_form(admin, confirm, confirm, {"confirm": "y"})
    assert in_use.status_code == 422 and "is used by 1 assignment(s)" in field_errors(in_use, "force")
    assert permission_sets.get_permission_set("ReadOnly") is not None and count_assignments() == 1

    assert post_form(admin, confirm, confirm, {"confirm": "y", "force": "y"}).status_code == 303
    assert permission_sets.get_permission_set("ReadOnly") is None and count_assignments() == 0
    [deleted] = by_admin("access.permission_set.delete")
    assert deleted.details["assignments_removed"] == [f"group engineers: ReadOnly in account {PROD}"]


# --- assignments --------------------------------------------------------------------------------------------


def test_assign_with_an_end_date(admin: FlaskClient) -> None:
    world()
    end = date.today() + timedelta(days=30)
    resp = post_form(admin, "/admin/assignments/new", "/admin/assignments/new", {
        "principal": "group:engineers", "permission_set": "ReadOnly", "target": f"account:{PROD}",
        "until": end.isoformat()})
    assert resp.status_code == 303
    listed = admin.get(resp.headers["Location"])
    assert f"Assigned ReadOnly to group engineers in account {PROD}" in flashed(listed)
    [row] = db.session.scalars(db.select(Assignment)).all()
    # The date is the last day it works: the end is the next midnight, UTC.
    assert row.until == datetime.combine(end + timedelta(days=1), datetime.min.time(), UTC)
    assert row.created_by == "admin:root"
    [event] = by_admin("access.assign")
    assert event.details["principal"] == "group engineers" and event.details["scope"] == f"account {PROD}"
    assert "engineers" in text(listed) and "ReadOnly" in text(listed)

    # Bare names work as on the command line; an OU reaches every account in it.
    assert post_form(admin, "/admin/assignments/new", "/admin/assignments/new", {
        "principal": "alice", "permission_set": "ReadOnly", "target": "ou:Workloads"}).status_code == 303
    assert by_admin("access.assign")[0].details["scope"] == "ou Workloads"
    assert "ReadOnly" in text(admin.get("/admin/people/alice/access"))


@pytest.mark.parametrize(("values", "field", "reason"), [
    ({"principal": "nobody"}, "principal", "no user or group 'nobody'"),
    ({"principal": "user:nobody"}, "principal", "no user 'nobody'"),
    ({"principal": ""}, "principal", "Name a user or a group."),
    ({"until": "2001-01-01"}, "until", "already past"),
    ({"until": "tomorrow"}, "until", "Not a valid date value."),
    ({"permission_set": ""}, "permission_set", "Choose a permission set."),
    ({"target": ""}, "target", "Choose an account or an OU."),
])
def test_assignment_refusals_are_shown_next_to_the_field(admin: FlaskClient, values: dict[str, str], field: str,
                                                         reason: str) -> None:
    world()
    resp = post_form(admin, "/admin/assignments/new", "/admin/assignments/new", {
        "principal": "group:engineers", "permission_set": "ReadOnly", "target": f"account:{PROD}", **values})
    assert resp.status_code == 422 and reason in field_errors(resp, field)
    assert count_assignments() == 0


def test_a_running_duplicate_is_refused_above_the_form(admin: FlaskClient) -> None:
    world()
    assignments.assign("group:engineers", "ReadOnly", account=PROD, actor="test")
    resp = post_form(admin, "/admin/assignments/new", "/admin/assignments/new", {
        "principal": "group:engineers", "permission_set": "ReadOnly", "target": f"account:{PROD}"})
    assert resp.status_code == 422 and "already has ReadOnly" in form_errors(resp)
    assert count_assignments() == 1


def test_assignment_filters(admin: FlaskClient, frozen_clock: Clock) -> None:
    world()
    permission_sets.add_permission_set("Admin", PermissionSetSpec(session_hours=1), actor="test")
    soon = frozen_clock() + timedelta(minutes=10)
    assignments.assign("group:engineers", "ReadOnly", account=PROD, actor="test")
    assignments.assign("alice", "Admin", account=DEV, until=soon, actor="test")
    assignments.assign("alice", "ReadOnly", ou="Workloads", actor="test")

    def rows(query: str) -> list[str]:
        resp = admin.get(f"/admin/assignments?{query}")
        assert resp.status_code == 200, query
        return sorted(re.findall(r'/admin/permission-sets/(\w+)">\w+</a></td>\s*<td>(account|OU) <a[^>]*>([^<]+)',
                                 resp.get_data(as_text=True)))  # type: ignore[arg-type]

    assert len(rows("")) == 3
    assert rows("principal=alice") == [("Admin", "account", DEV), ("ReadOnly", "OU", "Workloads")]
    assert rows("principal=group:engineers") == [("ReadOnly", "account", PROD)]
    assert rows("permission_set=Admin") == [("Admin", "account", DEV)]
    assert rows("target=ou:Workloads") == [("ReadOnly", "OU", "Workloads")]
    assert len(rows("status=active")) == 3 and rows("status=ended") == []
    frozen_clock.advance(minutes=11)  # within the admin's idle timeout
    assert rows("status=ended") == [("Admin", "account", DEV)]
    assert "(ended)" in text(admin.get("/admin/assignments?status=ended"))

    unknown = admin.get("/admin/assignments?principal=user:nobody")
    assert unknown.status_code == 422 and "no user 'nobody'" in field_errors(unknown, "principal")


def test_change_when_an_assignment_ends(admin: FlaskClient, frozen_clock: Clock) -> None:
    world()
    soon = frozen_clock() + timedelta(hours=1)
    done = assignments.assign("group:engineers", "ReadOnly", account=PROD, until=soon, actor="test")
    page = f"/admin/assignments/{done.id}"
    assert f'href="{page}"' in text(admin.get("/admin/assignments"))
    shown = text(admin.get(page))
    assert f"End of ReadOnly for group engineers in account {PROD}" in shown and soon.isoformat() in shown

    for value, reason in (("2001-01-01", "is already past"), ("soon", "neither an ISO date")):
        refused = post_form(admin, page, page, {"until": value})
        assert refused.status_code == 422 and reason in field_errors(refused, "until"), value
    assert not by_admin("access.assign.update")

    moved = post_form(admin, page, page, {"until": "2099-12-31"})
    assert moved.status_code == 303
    assert (f"ReadOnly is assigned to group engineers in account {PROD} until 2100-01-01 00:00 UTC."
            in flashed(admin.get(moved.headers["Location"])))
    assert db.session.get(Assignment, done.id).until == datetime(2100, 1, 1, tzinfo=UTC)
    [event] = by_admin("access.assign.update")
    assert event.details["until"] == {"from": soon.isoformat(), "to": "2100-01-01T00:00:00+00:00"}

    assert post_form(admin, page, page, {"until": ""}).status_code == 303
    db.session.expire_all()
    assert db.session.get(Assignment, done.id).until is None
    assert "It has no end." in text(admin.get(page))
    assert admin.get("/admin/assignments/999999").status_code == 404


def test_remove_an_assignment_after_confirming(admin: FlaskClient) -> None:
    world()
    done = assignments.assign("group:engineers", "ReadOnly", account=PROD, actor="test")
    confirm = f"/admin/assignments/{done.id}/remove"
    assert f"ReadOnly for group engineers in account {PROD}" in text(admin.get(confirm))
    assert f'href="{confirm}"' in text(admin.get("/admin/assignments"))

    unconfirmed = post_form(admin, confirm, confirm)
    assert unconfirmed.status_code == 422 and count_assignments() == 1
    assert post_form(admin, confirm, confirm, {"confirm": "y"}).status_code == 303
    assert count_assignments() == 0
    assert by_admin("access.unassign")[0].details == {"principal": "group engineers", "permission_set": "ReadOnly",
                                                      "scope": f"account {PROD}"}


# --- refusals of the request itself -------------------------------------------------------------------------


def test_missing_csrf_token_is_refused(admin: FlaskClient) -> None:
    world()
    assert admin.post("/admin/accounts/ous", data={"ou_name": "Nope"}).status_code == 400
    assert admin.post("/admin/permission-sets/ReadOnly/delete", data={"confirm": "y"}).status_code == 400
    assert admin.post("/admin/assignments/new", data={
        "principal": "alice", "permission_set": "ReadOnly", "target": f"account:{PROD}"}).status_code == 400
    assert accounts.get_ou("Nope") is None and permission_sets.get_permission_set("ReadOnly") is not None
    assert count_assignments() == 0


def test_non_admins_are_refused(client: FlaskClient) -> None:
    world()
    assert login(client, "alice", DEFAULT_PASSWORD).status_code == 302
    token = csrf_token(text(client.get("/login?force=1")))
    for path in ("/admin/accounts", f"/admin/accounts/{PROD}", "/admin/permission-sets", "/admin/assignments",
                 "/admin/assignments/new"):
        assert client.get(path).status_code == 403, path
    for path, data in (("/admin/accounts/ous", {"ou_name": "Mine"}),
                       ("/admin/permission-sets/ReadOnly/delete", {"confirm": "y", "force": "y"}),
                       ("/admin/assignments/new", {"principal": "alice", "permission_set": "ReadOnly",
                                                   "target": f"account:{PROD}"})):
        assert client.post(path, data={"csrf_token": token, **data}).status_code == 403, path
    assert accounts.get_ou("Mine") is None and permission_sets.get_permission_set("ReadOnly") is not None
    assert count_assignments() == 0
    assert len([e for e in events("admin.denied") if e.username == "alice"]) == 8
