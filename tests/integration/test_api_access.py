"""/api/v1 for the access model: OUs, accounts, permission sets, assignments and a user's effective access,
driven with real admin tokens, as a ticketing system would."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from access_rows import ou_removed_once_found, removed_once_found
from admin_api import bearer
from conftest import Clock
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import committed_elsewhere, make_user
from saml_peers import SP_ENTITY_ID, python3_saml_metadata
from sqlalchemy import event, func, select
from sqlalchemy import false as sql_false
from werkzeug.test import TestResponse

from idp import audit
from idp.access import accounts, assignments, permission_sets
from idp.access.decide import AccessDenied, AccountTarget, authorize
from idp.admin import tokens
from idp.authn import directory
from idp.authn.principal import principal_from_user
from idp.cli import cli
from idp.errors import BadRequest, concurrent_change
from idp.extensions import db
from idp.store import Account, Assignment, OrganizationalUnit, PermissionSet

A1, A2 = "111122223333", "444455556666"


class Api:
    """The test client with an admin token, under /api/v1."""

    def __init__(self, client: FlaskClient, scope: str, name: str = "ticketing") -> None:
        self.client, self.headers = client, bearer(scope, name)
        self.actor = tokens.actor_of(tokens.all_tokens()[-1])  # how the audit log names this caller

    def call(self, method: str, path: str, **kwargs: Any) -> TestResponse:
        return self.client.open("/api/v1" + path, method=method, headers=self.headers, **kwargs)

    def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        resp = self.call(method, path, **kwargs)
        assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
        return resp.get_json() if resp.data else None

    def refused(self, method: str, path: str, status: int, **kwargs: Any) -> dict[str, Any]:
        resp = self.call(method, path, **kwargs)
        assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
        body: dict[str, Any] = resp.get_json()
        assert body["code"] == status
        return body


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client, "write")


def arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:saml-provider/bridge"


def new_account(api: Api, account_id: str = A1, **fields: Any) -> Any:
    body = {"account_id": account_id, "name": f"acct-{account_id[:4]}", "saml_provider_arn": arn(account_id),
            **fields}
    return api.ok("POST", "/accounts", 201, json=body)


def count(model: Any) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)))


def field_errors(body: dict[str, Any]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = body["errors"]["json"]
    return errors


# --- OUs --------------------------------------------------------------------------------------------------


def test_ous_create_read_move_delete(api: Api) -> None:
    assert api.ok("POST", "/ous", 201, json={"name": "Production"}) == {
        "name": "Production", "parent": None, "path": "Production", "depth": 0, "accounts": 0}
    payments = api.ok("POST", "/ous", 201, json={"name": "Payments", "parent": "Production"})
    assert (payments["parent"], payments["path"], payments["depth"]) == ("Production", "Production/Payments", 1)
    api.ok("POST", "/ous", 201, json={"name": "Sandbox"})
    new_account(api, A1, ou="Payments")

    listed = api.ok("GET", "/ous")
    assert (listed["total"], listed["page"], listed["per_page"]) == (3, 1, 50)
    assert [(o["name"], o["parent"], o["path"], o["accounts"]) for o in listed["items"]] == [
        ("Production", None, "Production", 0),
        ("Payments", "Production", "Production/Payments", 1),
        ("Sandbox", None, "Sandbox", 0)]
    # Paged like every list, in the tree's order.
    second = api.ok("GET", "/ous", query_string={"per_page": 2, "page": 2})
    assert (second["total"], [o["path"] for o in second["items"]]) == (3, ["Sandbox"])
    assert api.ok("GET", "/ous", query_string={"page": 3, "per_page": 2})["items"] == []
    assert "per_page" in api.refused("GET", "/ous", 422, query_string={"per_page": 500})["errors"]["query"]
    assert api.ok("GET", "/ous/Payments")["accounts"] == 1

    moved = api.ok("PATCH", "/ous/Payments", json={"parent": "Sandbox"})
    assert (moved["parent"], moved["path"]) == ("Sandbox", "Sandbox/Payments")
    assert api.ok("PATCH", "/ous/Payments", json={"parent": None})["path"] == "Payments"
    events = audit.events(type="access.ou.move")
    assert [(e.actor, e.details["to"]) for e in reversed(events)] == [(api.actor, "Sandbox"), (api.actor, "(root)")]

    api.ok("DELETE", "/ous/Production", 204)
    api.refused("GET", "/ous/Production", 404)
    assert [o["name"] for o in api.ok("GET", "/ous")["items"]] == ["Payments", "Sandbox"]
    assert audit.events(type="access.ou.remove")[0].actor == api.actor


def test_ou_refusals(api: Api) -> None:
    api.ok("POST", "/ous", 201, json={"name": "Production"})
    api.ok("POST", "/ous", 201, json={"name": "Payments", "parent": "Production"})
    new_account(api, A1, ou="Payments")

    assert "already exists" in api.refused("POST", "/ous", 409, json={"name": "Production"})["message"]
    assert "no organizational unit 'Nowhere'" in api.refused(
        "POST", "/ous", 404, json={"name": "Cards", "parent": "Nowhere"})["message"]
    assert "name" in field_errors(api.refused("POST", "/ous", 422, json={"name": ""}))
    assert "no '/'" in api.refused("POST", "/ous", 422, json={"name": "a/b"})["message"]
    # Paths name the top (root): an OU of that name would make its accounts look like the root's.
    assert "not (root)" in api.refused("POST", "/ous", 422, json={"name": "(root)"})["message"]
    assert "cannot move 'Production' under 'Payments'" in api.refused(
        "PATCH", "/ous/Production", 422, json={"parent": "Payments"})["message"]
    api.refused("PATCH", "/ous/Nowhere", 404, json={"parent": None})
    assert "still holds accounts" in api.refused("DELETE", "/ous/Payments", 409)["message"]
    api.refused("DELETE", "/ous/Nowhere", 404)
    assert count(OrganizationalUnit) == 2
    assert audit.events(type="access.ou.move") == []


# --- accounts ---------------------------------------------------------------------------------------------


def test_accounts_create_read_update_delete(api: Api) -> None:
    api.ok("POST", "/ous", 201, json={"name": "Production"})
    api.ok("POST", "/ous", 201, json={"name": "Payments", "parent": "Production"})
    created = new_account(api, A1, name="Payments prod", ou="Payments",
                          signin_url="https://us-east-1.signin.aws.amazon.com/saml")
    assert created == {"account_id": A1, "name": "Payments prod", "ou": "Payments",
                       "ou_path": "Production/Payments", "saml_provider_arn": arn(A1),
                       "signin_url": "https://us-east-1.signin.aws.amazon.com/saml"}
    new_account(api, A2, name="Sandbox")
    assert api.ok("GET", f"/accounts/{A1}") == created

    page = api.ok("GET", "/accounts", query_string={"per_page": 1})
    assert (page["total"], page["page"], [a["name"] for a in page["items"]]) == (2, 1, ["Payments prod"])
    assert [a["name"] for a in api.ok("GET", "/accounts", query_string={"page": 2, "per_page": 1})["items"]] == [
        "Sandbox"]
    # An OU's accounts include those of the OUs inside it, as an assignment in it reaches them.
    assert [a["account_id"] for a in api.ok("GET", "/accounts", query_string={"ou": "Production"})["items"]] == [A1]
    api.refused("GET", "/accounts", 404, query_string={"ou": "Nowhere"})

    updated = api.ok("PATCH", f"/accounts/{A1}", json={"name": "Payments", "signin_url": None, "ou": None})
    assert (updated["name"], updated["signin_url"], updated["ou"], updated["ou_path"]) == (
        "Payments", None, None, "(root)")
    (update,) = audit.events(type="access.account.update")
    assert update.actor == api.actor
    assert update.details["changed"] == {
        "name": {"from": "Payments prod", "to": "Payments"},
        "signin_url": {"from": "https://us-east-1.signin.aws.amazon.com/saml", "to": None}}
    (move,) = audit.events(type="access.account.move")
    assert (move.actor, move.details["from"], move.details["to"]) == (api.actor, "Production/Payments", "(root)")
    api.ok("PATCH", f"/accounts/{A1}", json={"ou": "Production", "name": "Payments"})
    assert db.session.scalar(select(Account.ou_id).where(Account.account_id == A1)) is not None
    assert len(audit.events(type="access.account.update")) == 1  # the same name is no change

    api.ok("DELETE", f"/accounts/{A1}", 204)
    api.refused("GET", f"/accounts/{A1}", 404)
    assert audit.events(type="access.account.remove")[0].actor == api.actor
    assert [a["account_id"] for a in api.ok("GET", "/accounts")["items"]] == [A2]


def test_account_refusals(api: Api) -> None:
    body = field_errors(api.refused("POST", "/accounts", 422, json={
        "account_id": "12345", "name": "", "saml_provider_arn": arn(A1)}))
    assert body["account_id"] == ["an AWS account id is exactly 12 digits"]
    assert "name" in body
    assert "saml_provider_arn" in field_errors(api.refused("POST", "/accounts", 422, json={
        "account_id": A1, "name": "x"}))
    assert "is in account 444455556666, not 111122223333" in api.refused("POST", "/accounts", 422, json={
        "account_id": A1, "name": "x", "saml_provider_arn": arn(A2)})["message"]
    assert "AWS sign-in SAML endpoint" in api.refused("POST", "/accounts", 422, json={
        "account_id": A1, "name": "x", "saml_provider_arn": arn(A1),
        "signin_url": "https://evil.example/saml"})["message"]
    api.refused("POST", "/accounts", 404, json={"account_id": A1, "name": "x", "saml_provider_arn": arn(A1),
                                                "ou": "Nowhere"})
    assert count(Account) == 0

    new_account(api, A1)
    assert "already exists" in api.refused("POST", "/accounts", 409, json={
        "account_id": A1, "name": "again", "saml_provider_arn": arn(A1)})["message"]
    # A refused change changes nothing, not even the parts that were fine.
    api.refused("PATCH", f"/accounts/{A1}", 422, json={"name": "Renamed", "saml_provider_arn": arn(A2)})
    api.refused("PATCH", f"/accounts/{A1}", 404, json={"name": "Renamed", "ou": "Nowhere"})
    assert api.ok("GET", f"/accounts/{A1}")["name"] == "acct-1111"
    assert "name" in field_errors(api.refused("PATCH", f"/accounts/{A1}", 422, json={"name": None}))
    api.refused("PATCH", f"/accounts/{A2}", 404, json={"name": "x"})
    api.refused("DELETE", f"/accounts/{A2}", 404)
    assert audit.events(type="access.account.update") == []


# --- permission sets --------------------------------------------------------------------------------------

POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:Get*", "Resource": "*"}]}


def test_permission_sets_create_read_update_delete(api: Api) -> None:
    created = api.ok("POST", "/permission-sets", 201, json={
        "name": "Admin", "session_duration_hours": 4, "description": "break glass",
        "managed_policy_arns": ["arn:aws:iam::aws:policy/AdministratorAccess"], "inline_policy": POLICY,
        "relay_state": "https://console.aws.amazon.com/ec2/", "mfa_required": True})
    assert created == {
        "name": "Admin", "description": "break glass", "session_duration_hours": 4, "role_name": "Admin",
        "managed_policy_arns": ["arn:aws:iam::aws:policy/AdministratorAccess"], "inline_policy": POLICY,
        "relay_state": "https://console.aws.amazon.com/ec2/", "mfa_required": True}
    api.ok("POST", "/permission-sets", 201, json={"name": "ReadOnly", "session_duration_hours": 1,
                                                  "role_name": "ro-role"})
    assert api.ok("GET", "/permission-sets/Admin") == created
    page = api.ok("GET", "/permission-sets")
    assert (page["total"], [(p["name"], p["role_name"]) for p in page["items"]]) == (
        2, [("Admin", "Admin"), ("ReadOnly", "ro-role")])

    updated = api.ok("PATCH", "/permission-sets/Admin", json={
        "session_duration_hours": 8, "description": None, "inline_policy": None, "managed_policy_arns": []})
    assert {k: updated[k] for k in ("session_duration_hours", "description", "inline_policy",
                                    "managed_policy_arns", "relay_state", "mfa_required")} == {
        "session_duration_hours": 8, "description": None, "inline_policy": None, "managed_policy_arns": [],
        "relay_state": "https://console.aws.amazon.com/ec2/", "mfa_required": True}
    (event,) = audit.events(type="access.permission_set.update")
    assert event.actor == api.actor
    assert event.details["fields"] == ["description", "inline_policy", "managed_policy_arns",
                                       "session_duration_seconds"]

    api.ok("DELETE", "/permission-sets/ReadOnly", 204)
    api.refused("GET", "/permission-sets/ReadOnly", 404)
    assert audit.events(type="access.permission_set.delete")[0].actor == api.actor


def test_permission_set_refusals(api: Api) -> None:
    errors = field_errors(api.refused("POST", "/permission-sets", 422, json={
        "name": "Admin", "session_duration_hours": 13}))
    assert list(errors) == ["session_duration_hours"]
    assert "session_duration_hours" in field_errors(api.refused("POST", "/permission-sets", 422,
                                                                json={"name": "Admin"}))
    assert "name" in field_errors(api.refused("POST", "/permission-sets", 422, json={
        "name": "x" * 33, "session_duration_hours": 1}))
    assert "inline_policy" in field_errors(api.refused("POST", "/permission-sets", 422, json={
        "name": "Admin", "session_duration_hours": 1, "inline_policy": "{}"}))
    # Python's JSON reads NaN and 1e400 (infinity); stored, they would make every listing unreadable as JSON.
    for number in ("NaN", "1e400"):
        body = api.refused("POST", "/permission-sets", 422, data='{"name": "Admin", "session_duration_hours": 1, '
                           f'"inline_policy": {{"Version": {number}}}}}', content_type="application/json")
        assert refused_field(body) == "inline_policy" and "NaN or Infinity" in body["message"]
    assert "invalid managed policy ARN" in api.refused("POST", "/permission-sets", 422, json={
        "name": "Admin", "session_duration_hours": 1, "managed_policy_arns": ["AdministratorAccess"]})["message"]
    assert "relay state must be an https URL" in api.refused("POST", "/permission-sets", 422, json={
        "name": "Admin", "session_duration_hours": 1, "relay_state": "http://console.aws.amazon.com/"})["message"]
    assert "relay state must be an https URL" in api.refused("POST", "/permission-sets", 422, json={
        "name": "Admin", "session_duration_hours": 1, "relay_state": "https://[console]/"})["message"]
    assert count(PermissionSet) == 0

    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 1})
    api.refused("POST", "/permission-sets", 409, json={"name": "Admin", "session_duration_hours": 2})
    assert "session_duration_hours" in field_errors(api.refused(
        "PATCH", "/permission-sets/Admin", 422, json={"session_duration_hours": 0}))
    assert "name" in field_errors(api.refused("PATCH", "/permission-sets/Admin", 422, json={"name": "Other"}))
    api.refused("PATCH", "/permission-sets/Nope", 404, json={"session_duration_hours": 2})
    api.refused("DELETE", "/permission-sets/Nope", 404)
    assert api.ok("GET", "/permission-sets/Admin")["session_duration_hours"] == 1


def refused_field(body: dict[str, Any], location: str = "json") -> str:
    """The one field a service's refusal names, as a schema's refusal would (its reason the message)."""
    ((field, reasons),) = body["errors"][location].items()
    assert reasons == [body["message"]]
    return str(field)


def test_a_services_refusal_names_the_field_it_is_about(api: Api) -> None:
    # The schemas pass these on (they look like an ARN, a URL, a name); the services refuse them, and the
    # answer names the field as the schemas' refusals do.
    body = api.refused("POST", "/accounts", 422, json={"account_id": A1, "name": "x", "saml_provider_arn": arn(A2)})
    assert refused_field(body) == "saml_provider_arn" and "is in account 444455556666" in body["message"]
    body = api.refused("POST", "/accounts", 422, json={"account_id": A1, "name": "x", "saml_provider_arn": arn(A1),
                                                       "signin_url": "https://evil.example/saml"})
    assert refused_field(body) == "signin_url" and "AWS sign-in SAML endpoint" in body["message"]
    new_account(api)
    body = api.refused("PATCH", f"/accounts/{A1}", 422, json={"signin_url": "https://evil.example/saml"})
    assert refused_field(body) == "signin_url"

    body = api.refused("POST", "/permission-sets", 422, json={"name": "..", "session_duration_hours": 1})
    assert refused_field(body) == "name" and "invalid permission set name '..'" in body["message"]
    for field, value in (("role_name", "no spaces"), ("managed_policy_arns", ["AdministratorAccess"]),
                         ("relay_state", "http://console.aws.amazon.com/")):
        body = api.refused("POST", "/permission-sets", 422, json={"name": "Admin", "session_duration_hours": 1,
                                                                   field: value})
        assert refused_field(body) == field, body

    api.ok("POST", "/ous", 201, json={"name": "Production"})
    api.ok("POST", "/ous", 201, json={"name": "Payments", "parent": "Production"})
    body = api.refused("POST", "/ous", 422, json={"name": "a/b"})
    assert refused_field(body) == "name" and "no '/'" in body["message"]
    body = api.refused("PATCH", "/ous/Production", 422, json={"parent": "Payments"})
    assert refused_field(body) == "parent" and "cannot move 'Production' under 'Payments'" in body["message"]

    # A principal that is both a user and a group, in a body and in a query string.
    make_user("ops", groups=["ops"])
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 1})
    body = api.refused("POST", "/assignments", 422, json={"principal": "ops", "permission_set": "Admin",
                                                          "account": A1})
    assert refused_field(body) == "principal" and "both a user and a group" in body["message"]
    body = api.refused("GET", "/assignments", 422, query_string={"principal": "ops"})
    assert refused_field(body, "query") == "principal"

    # About no one field of the request: the message alone.
    assert "errors" not in api.refused("DELETE", "/ous/Production", 409)
    assert count(Assignment) == 0 and count(PermissionSet) == 1


def test_a_permission_set_in_use_is_deleted_only_with_force(api: Api) -> None:
    make_user("alice")
    new_account(api)
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 1})
    api.ok("POST", "/assignments", 201, json={"principal": "alice", "permission_set": "Admin", "account": A1})

    body = api.refused("DELETE", "/permission-sets/Admin", 409)
    assert f"used by 1 assignment(s) (user alice: Admin in account {A1})" in body["message"]
    assert count(PermissionSet) == 1
    api.ok("DELETE", "/permission-sets/Admin", 204, query_string={"force": "true"})
    assert (count(PermissionSet), count(Assignment)) == (0, 0)
    (event,) = audit.events(type="access.permission_set.delete")
    assert (event.actor, event.details["assignments_removed"]) == (
        api.actor, [f"user alice: Admin in account {A1}"])


# --- assignments and effective access ---------------------------------------------------------------------


def _can_open(username: str, account_id: str, permission_set: str) -> bool:
    user = directory.require_user(username)
    now = datetime.now(UTC)
    try:
        authorize(principal_from_user(user, now), AccountTarget(account_id, permission_set), now)
    except AccessDenied:
        return False
    return True


def test_an_assignment_made_through_the_api_grants_access_until_deleted(api: Api, runner: FlaskCliRunner) -> None:
    make_user("alice", groups=["engineers"])
    new_account(api, A1, name="Prod")
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 2})
    assert not _can_open("alice", A1, "Admin")
    assert api.ok("GET", "/access/alice")["roles"] == []

    created = api.ok("POST", "/assignments", 201, json={
        "principal": "group:engineers", "permission_set": "Admin", "account": A1})
    assert {k: v for k, v in created.items() if k not in ("id", "created_at")} == {
        "principal": "group:engineers", "permission_set": "Admin", "account": A1, "ou": None, "until": None,
        "active": True, "created_by": api.actor}
    assert api.ok("GET", f"/assignments/{created['id']}") == created
    (assigned,) = audit.events(type="access.assign")
    assert (assigned.actor, assigned.details["principal"]) == (api.actor, "group engineers")

    assert _can_open("alice", A1, "Admin")
    access = api.ok("GET", "/access/alice")
    (role,) = access["roles"]
    assert (role["account_id"], role["role_arn"], role["session_seconds"], role["sources"]) == (
        A1, f"arn:aws:iam::{A1}:role/Admin", 7200,
        [{"via": "group engineers", "scope": f"account {A1}", "until": None}])
    # The API and the CLI read the same decision.
    shown = runner.invoke(cli, ["access", "show", "alice", "--json"])
    assert shown.exit_code == 0, shown.output
    assert access == json.loads(shown.stdout)

    api.ok("DELETE", f"/assignments/{created['id']}", 204)
    assert not _can_open("alice", A1, "Admin")
    assert api.ok("GET", "/access/alice")["roles"] == []
    api.refused("GET", f"/assignments/{created['id']}", 404)
    api.refused("DELETE", f"/assignments/{created['id']}", 404)
    (unassigned,) = audit.events(type="access.unassign")
    assert (unassigned.actor, unassigned.details) == (api.actor, {
        "principal": "group engineers", "permission_set": "Admin", "scope": f"account {A1}"})
    assert "no user 'nobody'" in api.refused("GET", "/access/nobody", 404)["message"]


def test_assignment_refusals(api: Api, frozen_clock: Clock) -> None:
    frozen_clock.current = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
    make_user("alice")
    new_account(api)
    api.ok("POST", "/ous", 201, json={"name": "Production"})
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 1})
    base = {"principal": "alice", "permission_set": "Admin"}

    for target in ({}, {"account": A1, "ou": "Production"}):
        errors = field_errors(api.refused("POST", "/assignments", 422, json={**base, **target}))
        assert errors == {"account": ["give exactly one of account and ou"],
                          "ou": ["give exactly one of account and ou"]}
    assert "account" in field_errors(api.refused("POST", "/assignments", 422, json={**base, "account": "1"}))
    for until, reason in (("2027-03-10T18:00:00", "needs a zone"), ("2027-03-10T11:00:00Z", "already past"),
                          ("next week", "neither an ISO date")):
        errors = field_errors(api.refused("POST", "/assignments", 422, json={**base, "account": A1, "until": until}))
        assert reason in errors["until"][0]
    assert "no user or group 'bob'" in api.refused("POST", "/assignments", 404, json={
        **base, "principal": "bob", "account": A1})["message"]
    api.refused("POST", "/assignments", 404, json={**base, "permission_set": "Nope", "account": A1})
    api.refused("POST", "/assignments", 404, json={**base, "account": A2})
    api.refused("POST", "/assignments", 404, json={**base, "ou": "Nowhere"})
    assert count(Assignment) == 0

    api.ok("POST", "/assignments", 201, json={**base, "account": A1})
    assert "already has Admin in account" in api.refused("POST", "/assignments", 409, json={
        **base, "principal": "user:alice", "account": A1})["message"]
    for missing in ("999", "99999999999999999999999"):
        api.refused("GET", f"/assignments/{missing}", 404)
        api.refused("DELETE", f"/assignments/{missing}", 404)


def test_assignments_with_an_end_and_filters(api: Api, frozen_clock: Clock) -> None:
    frozen_clock.current = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
    make_user("alice", groups=["engineers"])
    make_user("bob")
    api.ok("POST", "/ous", 201, json={"name": "Production"})
    new_account(api, A1, ou="Production")
    new_account(api, A2)
    for name in ("Admin", "ReadOnly"):
        api.ok("POST", "/permission-sets", 201, json={"name": name, "session_duration_hours": 1})

    contractor = api.ok("POST", "/assignments", 201, json={
        "principal": "bob", "permission_set": "Admin", "account": A2, "until": "2027-03-10"})
    assert contractor["until"] == "2027-03-11T00:00:00+00:00"  # works through that day, UTC
    timed = api.ok("POST", "/assignments", 201, json={
        "principal": "alice", "permission_set": "ReadOnly", "account": A2, "until": "2027-03-10T15:00:00+02:00"})
    assert timed["until"] == "2027-03-10T13:00:00+00:00"
    in_ou = api.ok("POST", "/assignments", 201, json={
        "principal": "engineers", "permission_set": "ReadOnly", "ou": "Production"})
    assert (in_ou["principal"], in_ou["ou"], in_ou["account"]) == ("group:engineers", "Production", None)

    def ids(**query: str) -> list[int]:
        return [a["id"] for a in api.ok("GET", "/assignments", query_string=query)["items"]]

    assert ids() == [contractor["id"], timed["id"], in_ou["id"]]
    assert ids(principal="bob") == [contractor["id"]]
    assert ids(principal="group:engineers") == [in_ou["id"]]
    assert ids(permission_set="ReadOnly") == [timed["id"], in_ou["id"]]
    assert ids(account=A2) == [contractor["id"], timed["id"]]
    assert ids(ou="Production") == [in_ou["id"]]
    assert ids(principal="alice", account=A2) == [timed["id"]]
    assert ids(active="true") == [contractor["id"], timed["id"], in_ou["id"]]
    api.refused("GET", "/assignments", 404, query_string={"permission_set": "Nope"})
    assert "active" in api.refused("GET", "/assignments", 422, query_string={"active": "maybe"})["errors"]["query"]

    frozen_clock.advance(hours=2)  # 14:00: alice's ReadOnly in A2 has ended
    assert ids(active="true") == [contractor["id"], in_ou["id"]]
    assert ids(active="false") == [timed["id"]]
    assert api.ok("GET", f"/assignments/{timed['id']}")["active"] is False
    assert [(r["account_id"], r["permission_set"]) for r in api.ok("GET", "/access/alice")["roles"]] == [
        (A1, "ReadOnly")]
    page = api.ok("GET", "/assignments", query_string={"per_page": 2, "page": 2})
    assert (page["total"], [a["id"] for a in page["items"]]) == (3, [in_ou["id"]])


def test_until_is_read_alike_for_assignments_and_app_assignments(api: Api, frozen_clock: Clock) -> None:
    frozen_clock.current = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
    make_user("alice")
    new_account(api)
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 1})
    api.ok("POST", "/service-providers", 201, json={"metadata_xml": python3_saml_metadata().decode()})
    endpoints = {"/assignments": {"principal": "alice", "permission_set": "Admin", "account": A1},
                 "/app-assignments": {"principal": "alice", "app": SP_ENTITY_ID}}

    for path, body in endpoints.items():
        for until, reason in (("2027-03-10T18:00:00", "needs a zone"),
                              ("0001-01-01T00:00:00+05:00", "outside the years 1 to 9999"),
                              ("9999-12-31T23:59:59-05:00", "outside the years 1 to 9999"),
                              ("9999-12-31", "before year 10000"),
                              ("2027-03-09", "already past"),
                              ("soon", "neither an ISO date")):
            errors = field_errors(api.refused("POST", path, 422, json={**body, "until": until}))
            assert reason in errors["until"][0], (path, until, errors)
        # A date: through that day, UTC; the latest end UTC can hold is fine.
        made = api.ok("POST", path, 201, json={**body, "until": "2027-03-31"})
        assert made["until"] == "2027-04-01T00:00:00+00:00", path
        again = api.ok("PATCH", f"{path}/{made['id']}", json={"until": "9999-12-31T23:59:59Z"})
        assert again["until"] == "9999-12-31T23:59:59+00:00", path
    assert count(Assignment) == 1


def test_an_assignments_end_is_set_and_cleared(api: Api, frozen_clock: Clock) -> None:
    frozen_clock.current = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
    make_user("alice")
    new_account(api)
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 1})
    made = api.ok("POST", "/assignments", 201, json={"principal": "alice", "permission_set": "Admin",
                                                     "account": A1, "until": "2027-03-10T13:00:00Z"})
    path = f"/assignments/{made['id']}"

    frozen_clock.advance(hours=2)  # ended
    assert api.ok("GET", "/access/alice")["roles"] == []
    extended = api.ok("PATCH", path, json={"until": "2027-03-20"})
    assert (extended["until"], extended["active"]) == ("2027-03-21T00:00:00+00:00", True)
    assert {k: v for k, v in extended.items() if k not in ("until", "active")} == {
        k: v for k, v in made.items() if k not in ("until", "active")}
    assert [r["account_id"] for r in api.ok("GET", "/access/alice")["roles"]] == [A1]
    cleared = api.ok("PATCH", path, json={"until": None})
    assert cleared["until"] is None and api.ok("GET", path) == cleared
    api.ok("PATCH", path, json={"until": None})  # no change: nothing recorded

    events = audit.events(type="access.assign.update")
    assert [e.details["until"] for e in reversed(events)] == [
        {"from": "2027-03-10T13:00:00+00:00", "to": "2027-03-21T00:00:00+00:00"},
        {"from": "2027-03-21T00:00:00+00:00", "to": None}]
    assert {e.actor for e in events} == {api.actor} and {e.username for e in events} == {"alice"}
    assert events[0].details["scope"] == f"account {A1}" and events[0].details["permission_set"] == "Admin"

    assert "until" in field_errors(api.refused("PATCH", path, 422, json={}))
    assert "already past" in field_errors(api.refused("PATCH", path, 422, json={"until": "2027-03-01"}))["until"][0]
    assert "until" in field_errors(api.refused("PATCH", path, 422, json={"until": 5}))
    api.refused("PATCH", "/assignments/999", 404, json={"until": None})
    assert api.ok("GET", path)["until"] is None


# --- scopes -----------------------------------------------------------------------------------------------


def test_a_read_only_token_reads_but_changes_nothing(api: Api, client: FlaskClient) -> None:
    make_user("alice")
    api.ok("POST", "/ous", 201, json={"name": "Production"})
    new_account(api)
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 1})
    assignment = api.ok("POST", "/assignments", 201, json={"principal": "alice", "permission_set": "Admin",
                                                            "account": A1})
    reader = Api(client, "read", name="dashboard")
    for path in ("/ous", "/ous/Production", "/accounts", f"/accounts/{A1}", "/permission-sets",
                 "/permission-sets/Admin", "/assignments", f"/assignments/{assignment['id']}", "/access/alice"):
        reader.ok("GET", path)

    writes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/ous", {"name": "Sandbox"}), ("PATCH", "/ous/Production", {"parent": None}),
        ("DELETE", "/ous/Production", None),
        ("POST", "/accounts", {"account_id": A2, "name": "x", "saml_provider_arn": arn(A2)}),
        ("PATCH", f"/accounts/{A1}", {"name": "renamed"}), ("DELETE", f"/accounts/{A1}", None),
        ("POST", "/permission-sets", {"name": "Other", "session_duration_hours": 1}),
        ("PATCH", "/permission-sets/Admin", {"session_duration_hours": 2}),
        ("DELETE", "/permission-sets/Admin", None),
        ("POST", "/assignments", {"principal": "alice", "permission_set": "Admin", "ou": "Production"}),
        ("PATCH", f"/assignments/{assignment['id']}", {"until": "2030-01-01"}),
        ("DELETE", f"/assignments/{assignment['id']}", None),
    ]
    for method, path, body in writes:
        assert reader.refused(method, path, 403, json=body)["message"] == "This token is read-only."
    assert (count(OrganizationalUnit), count(Account), count(PermissionSet), count(Assignment)) == (1, 1, 1, 1)
    assert api.ok("GET", f"/accounts/{A1}")["name"] == "acct-1111"
    denied = audit.events(type="admin.api.denied")
    assert len(denied) == len(writes)
    assert {e.actor for e in denied} == {reader.actor}


def test_the_same_assignment_posted_twice_at_once_is_made_once(
        app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    make_user("alice", groups=["engineers"])
    new_account(api, A1, name="Prod")
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 2})
    check = assignments._assignment_query

    def retried_elsewhere_meanwhile(*args: Any) -> Any:
        # A client's retry of the same POST reached another instance, and commits right after this one checked.
        monkeypatch.setattr(assignments, "_assignment_query", check)
        query = check(*args)
        db.session.scalar(query)
        committed_elsewhere(app, lambda: assignments.assign("group:engineers", "Admin", account=A1, actor="retry"))
        return query.where(sql_false())  # what this request read before the other committed: nothing

    monkeypatch.setattr(assignments, "_assignment_query", retried_elsewhere_meanwhile)
    body = api.refused("POST", "/assignments", 409, json={
        "principal": "group:engineers", "permission_set": "Admin", "account": A1})
    assert body["message"] == f"group engineers already has Admin in account {A1}"

    (made,) = api.ok("GET", "/assignments")["items"]
    assert made["created_by"] == "retry"
    assert _can_open("alice", A1, "Admin")
    # One row: taking it back takes the access back.
    api.ok("DELETE", f"/assignments/{made['id']}", 204)
    assert not _can_open("alice", A1, "Admin")


def test_two_ou_moves_at_once_cannot_make_a_cycle(app: Flask, api: Api) -> None:
    """A under B and B under A, asked at the same moment (two admins, perhaps on two instances): each checked
    the tree before the other's move and both went in, leaving A and B in a cycle, out of the tree and every
    inherited assignment. One move now waits for the other and is refused."""
    api.ok("POST", "/ous", 201, json={"name": "A"})
    api.ok("POST", "/ous", 201, json={"name": "B"})
    db.session.close()
    main, outcome = threading.get_ident(), []

    def other_admin() -> None:
        with app.app_context():
            try:
                accounts.move_ou("B", parent="A", actor="other")
                db.session.commit()
                outcome.append("moved")
            except BadRequest as exc:
                outcome.append(exc.message)

    other = threading.Thread(target=other_admin)

    def after_reading_the_tree(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # This move has read the tree; the other admin's move starts now, and may finish before this one writes.
        started = other.ident is not None
        whole_tree = "FROM organizational_units" in statement and "WHERE" not in statement
        if threading.get_ident() == main and whole_tree and not started:
            other.start()
            other.join(1.0)

    event.listen(db.engine, "after_cursor_execute", after_reading_the_tree)
    try:
        accounts.move_ou("A", parent="B", actor="one")
        db.session.commit()
    finally:
        event.remove(db.engine, "after_cursor_execute", after_reading_the_tree)
    other.join(15)
    assert outcome == ["cannot move 'B' under 'A': 'A' is 'B' or inside it"]
    assert [(ou["name"], ou["path"]) for ou in api.ok("GET", "/ous")["items"]] == [("B", "B"), ("A", "B/A")]


def _assigned_during(app: Flask, removal: Callable[[], object], **target: str) -> list[str]:
    """``removal`` run and committed while another admin (another instance, say) gives group engineers Admin in
    ``target``, right after the removal has read the assignments it takes: what that admin was told."""
    main, told, writing = threading.get_ident(), [], threading.Event()

    def other_admin() -> None:
        with app.app_context():
            try:
                assignments.assign("group:engineers", "Admin", actor="other", **target)
                db.session.commit()
                told.append("assigned")
            except Exception as exc:
                told.append("refused" if concurrent_change(exc) else repr(exc))

    other = threading.Thread(target=other_admin)

    def other_writes(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == other.ident and statement.startswith(("INSERT", "UPDATE")):
            writing.set()  # its first write: on SQLite it waits here for the removal's write lock

    def after_reading_the_assignments(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if threading.get_ident() == main and "FROM assignments" in statement and other.ident is None:
            other.start()  # the other admin's assignment commits now, unless it waits on this removal
            assert writing.wait(10)
            other.join(0.5)

    event.listen(db.engine, "before_cursor_execute", other_writes)
    event.listen(db.engine, "after_cursor_execute", after_reading_the_assignments)
    try:
        removal()
        db.session.commit()
    finally:
        event.remove(db.engine, "before_cursor_execute", other_writes)
        event.remove(db.engine, "after_cursor_execute", after_reading_the_assignments)
    other.join(15)
    return told


@pytest.mark.parametrize("force", [False, True])
def test_a_permission_set_deleted_while_another_admin_assigns_it_takes_no_assignment_unsaid(
        app: Flask, api: Api, force: bool) -> None:
    """Deleting a permission set read its assignments, then deleted them: one made in between went too, without
    --force and unlisted in the audit event, while the other admin had been told it was made."""
    make_user("alice", groups=["engineers"])
    new_account(api, A1, name="Prod")
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 2})
    db.session.close()
    told = _assigned_during(
        app, lambda: permission_sets.delete_permission_set("Admin", force=force, actor="one"), account=A1)
    assert told == ["refused"]
    (deleted,) = audit.events(type="access.permission_set.delete")
    assert deleted.details["assignments_removed"] == []
    assert audit.events(type="access.assign") == []


@pytest.mark.parametrize("target", ["account", "ou"])
def test_an_account_or_ou_removed_while_another_admin_assigns_to_it_counts_what_went(
        app: Flask, api: Api, target: str) -> None:
    make_user("alice", groups=["engineers"])
    api.ok("POST", "/ous", 201, json={"name": "Sandbox"})
    new_account(api, A1, name="Prod")
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 2})
    db.session.close()
    if target == "account":
        told = _assigned_during(app, lambda: accounts.remove_account(A1, actor="one"), account=A1)
        (removed,) = audit.events(type="access.account.remove")
    else:
        told = _assigned_during(app, lambda: accounts.remove_ou("Sandbox", actor="one"), ou="Sandbox")
        (removed,) = audit.events(type="access.ou.remove")
    assert told == ["refused"]
    assert removed.details["assignments_removed"] == 0
    assert audit.events(type="access.assign") == []


def test_an_account_removed_while_another_admin_grants_its_ended_assignment_again_counts_it(
        app: Flask, api: Api, frozen_clock: Clock) -> None:
    """Granting an ended assignment again updates its row: no key check waits on the account's lock, so the
    removal holds the assignments it is about to take too."""
    make_user("alice", groups=["engineers"])
    new_account(api, A1, name="Prod")
    api.ok("POST", "/permission-sets", 201, json={"name": "Admin", "session_duration_hours": 2})
    until = (frozen_clock() + timedelta(hours=1)).isoformat()
    api.ok("POST", "/assignments", 201, json={"principal": "group:engineers", "permission_set": "Admin",
                                               "account": A1, "until": until})
    frozen_clock.advance(seconds=7200)  # ended: granting it again updates the row
    db.session.close()
    told = _assigned_during(app, lambda: accounts.remove_account(A1, actor="one"), account=A1)
    assert told == ["refused"]
    (removed,) = audit.events(type="access.account.remove")
    assert removed.details["assignments_removed"] == 1
    assert len(audit.events(type="access.assign")) == 1  # the first grant's: the other admin's went back


def test_an_account_removed_twice_at_once_is_removed_once(
        app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    new_account(api, A1, name="Prod")
    removed_once_found(app, monkeypatch, "require_account", lambda key: accounts.remove_account(key, actor="other"))
    api.refused("DELETE", f"/accounts/{A1}", 409)
    assert [e.actor for e in audit.events(type="access.account.remove")] == ["other"]


def test_an_account_change_whose_ou_goes_meanwhile_changes_nothing(
        app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    new_account(api, A1, name="Payments")
    api.ok("POST", "/ous", 201, json={"name": "Sandbox"})
    ou_removed_once_found(app, monkeypatch)
    api.refused("PATCH", f"/accounts/{A1}", 409, json={"name": "Payments EU", "ou": "Sandbox"})
    # All or nothing: the new name did not go in without the move.
    shown = api.ok("GET", f"/accounts/{A1}")
    assert (shown["name"], shown["ou"]) == ("Payments", None)
    assert audit.events(type="access.account.update") == []


def test_an_account_added_to_an_ou_removed_meanwhile_is_a_conflict_that_says_so(
        app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api.ok("POST", "/ous", 201, json={"name": "Sandbox"})
    ou_removed_once_found(app, monkeypatch)
    body = api.refused("POST", "/accounts", 409, json={
        "account_id": A1, "name": "Payments", "saml_provider_arn": arn(A1), "ou": "Sandbox"})
    # Not "already exists": the account does not; the OU it was to go in went.
    assert "already exists" not in body["message"] and "Reload to see the current state" in body["message"]
    api.refused("GET", f"/accounts/{A1}", 404)
