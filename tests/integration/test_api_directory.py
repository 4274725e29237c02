"""/api/v1/users and /api/v1/groups: people, groups and membership through the admin API, with the same rules
(and audit events) as `idp user` and `idp group`; directory users' profiles and passwords read-only."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest
from admin_api import bearer
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import DEFAULT_PASSWORD, audit_insert_lost, committed_elsewhere, login, make_user
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from idp import audit
from idp.authn import directory
from idp.cli import cli
from idp.extensions import db
from idp.state import sessions as session_state
from idp.store import User

PASSWORD = "a-new-passw0rd-for-bob"


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> Any:
    """The client with a write token named "ticketing" (token 1) on every request."""
    headers = bearer("write", name="ticketing")

    class Api:
        def __getattr__(self, method: str) -> Any:
            return lambda path, **kw: getattr(client, method)("/api/v1" + path, headers=headers, **kw)

    return Api()


def directory_user(username: str = "dora") -> User:
    """The shadow row an LDAP directory named "corp" leaves after a sign-in."""
    user = User(username=username, source="corp", external_id=f"uid={username},ou=people",
                email=f"{username}@corp.test", display_name=username.title(), external_groups=["corp-staff"])
    db.session.add(user)
    db.session.commit()
    return user


def events(type: str) -> list[audit.AuditEvent]:
    """The events of this type the API recorded (not the test's own set-up), each naming the token."""
    found = [e for e in audit.events(type=type) if e.actor != "test"]
    assert found and {e.actor for e in found} == {"token:1:ticketing"}, found
    return found


# --- users ----------------------------------------------------------------------------------------------------


def test_create_a_user_who_can_then_sign_in(api: Any, client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    make_user("alice", groups=["staff", "ops"])
    caplog.set_level(logging.DEBUG)
    resp = api.post("/users", json={"username": "bob", "password": PASSWORD, "email": "bob@example.test",
                                    "given_name": "Bob", "family_name": "Builder", "display_name": "Bob B.",
                                    "groups": ["staff", "ops"]})
    assert resp.status_code == 201, resp.json
    body = resp.json
    assert body["username"] == "bob" and body["email"] == "bob@example.test" and body["display_name"] == "Bob B."
    assert body["groups"] == ["ops", "staff"] and body["enabled"] is True and body["source"] == "local"
    assert body["has_password"] is True and "password" not in body
    assert login(client, "bob", PASSWORD).status_code == 302

    (event,) = events("user.create")
    assert event.username == "bob" and event.details == {"groups": ["staff", "ops"]}
    stored = repr([tuple(r) for t in db.metadata.sorted_tables for r in db.session.execute(t.select())])
    assert PASSWORD not in caplog.text and PASSWORD not in stored


def test_a_user_without_a_password_cannot_sign_in_yet(api: Any, client: FlaskClient) -> None:
    resp = api.post("/users", json={"username": "carol"})
    assert resp.status_code == 201 and resp.json["has_password"] is False and resp.json["groups"] == []
    assert directory.authenticate("carol", "") is None


@pytest.mark.parametrize(("body", "field"), [
    ({"username": "Bad Name"}, "username"),
    ({"username": ""}, "username"),
    ({"username": "x" * 256}, "username"),
    ({}, "username"),
    ({"username": "bob", "email": "bob@"}, "email"),
    ({"username": "bob", "password": "short"}, "password"),
    ({"username": "bob", "groups": ["no spaces please"]}, "groups"),
    ({"username": "bob", "display_name": "x" * 256}, "display_name"),
    ({"username": "bob", "is_admin": True}, "is_admin"),
])
def test_a_refused_field_is_named_with_the_reason(api: Any, body: dict[str, Any], field: str) -> None:
    resp = api.post("/users", json=body)
    assert resp.status_code == 422
    assert resp.json["code"] == 422 and list(resp.json["errors"]["json"]) == [field]
    assert all(isinstance(reason, str) for reason in _flat(resp.json["errors"]["json"][field]))
    if "password" in body:
        assert body["password"] not in resp.get_data(as_text=True)
    assert directory.get_user("bob") is None


def _flat(reasons: Any) -> list[Any]:
    return [r for v in reasons.values() for r in v] if isinstance(reasons, dict) else reasons


def test_a_duplicate_user_is_a_conflict_and_an_unknown_group_not_found(api: Any) -> None:
    make_user("alice")
    resp = api.post("/users", json={"username": "alice"})
    assert resp.status_code == 409 and resp.json["message"] == "user 'alice' already exists"
    resp = api.post("/users", json={"username": "bob", "groups": ["nope"]})
    assert resp.status_code == 404 and resp.json["message"] == "no group 'nope'"
    assert directory.get_user("bob") is None


def test_list_users_paged_and_filtered(api: Any) -> None:
    for name in ("erin", "dave", "carol", "bob", "alice"):
        make_user(name, email=f"{name}@{'Example' if name in ('bob', 'dave') else 'other'}.test")
    make_user("under_score")
    directory_user("dora")

    page = api.get("/users", query_string={"per_page": 2, "page": 2}).json
    assert page["total"] == 7 and page["page"] == 2 and page["per_page"] == 2
    assert [u["username"] for u in page["items"]] == ["carol", "dave"]
    assert api.get("/users", query_string={"per_page": 2, "page": 9}).json["items"] == []

    def names(**query: str) -> list[str]:
        return [u["username"] for u in api.get("/users", query_string=query).json["items"]]

    assert names(q="EXAMPLE") == ["bob", "dave"]  # the email, any case
    assert names(q="ar") == ["carol"]
    assert names(q="_") == ["under_score"]  # a LIKE wildcard taken literally
    assert names(q="%") == []
    assert names(source="corp") == ["dora"]
    assert "dora" not in names(source="local")
    assert api.get("/users", query_string={"per_page": 0}).status_code == 422
    assert api.get("/users", query_string={"per_page": 201}).status_code == 422


def test_get_one_user(api: Any) -> None:
    make_user("alice", groups=["staff"], email="alice@example.test")
    body = api.get("/users/alice").json
    assert body["username"] == "alice" and body["groups"] == ["staff"] and body["directory_groups"] == []
    assert "password_hash" not in body
    assert api.get("/users/ALICE").json["username"] == "alice"
    dora = api.get(f"/users/{directory_user().username}").json
    assert dora["source"] == "corp" and dora["directory_groups"] == ["corp-staff"] and dora["has_password"] is False
    missing = api.get("/users/nobody")
    assert missing.status_code == 404
    assert missing.json == {"code": 404, "status": "Not found", "message": "no user 'nobody'"}


def test_patch_changes_only_what_is_given(api: Any, client: FlaskClient) -> None:
    make_user("bob", email="bob@example.test", given_name="Bob", display_name="Bob")
    resp = api.patch("/users/bob", json={"display_name": "Robert", "email": None})
    assert resp.status_code == 200
    assert resp.json["display_name"] == "Robert" and resp.json["email"] is None and resp.json["given_name"] == "Bob"
    (event,) = events("user.update")
    assert event.details == {"fields": ["display_name", "email"]}

    assert api.patch("/users/bob", json={"password": PASSWORD}).status_code == 200
    assert directory.authenticate("bob", DEFAULT_PASSWORD) is None
    assert directory.authenticate("bob", PASSWORD) is not None
    events("user.set_password")
    assert api.patch("/users/bob", json={}).status_code == 200
    assert len(audit.events(type="user.update")) == 1


def test_disabling_ends_sessions_and_enabling_lets_them_back(api: Any, client: FlaskClient) -> None:
    user = make_user("bob")
    assert login(client, "bob", DEFAULT_PASSWORD).status_code == 302

    def sessions() -> int:
        return len(session_state.user_session_ids(user.id))

    assert sessions() == 1
    resp = api.patch("/users/bob", json={"enabled": False})
    assert resp.status_code == 200 and resp.json["enabled"] is False
    assert sessions() == 0 and directory.authenticate("bob", DEFAULT_PASSWORD) is None
    assert events("user.disable")[0].details == {"sessions_ended": 1}
    assert api.patch("/users/bob", json={"enabled": True}).json["enabled"] is True
    assert directory.authenticate("bob", DEFAULT_PASSWORD) is not None
    events("user.enable")
    # A new password and a disable in one PATCH: the sessions end once, and both events say how many.
    assert login(client, "bob", DEFAULT_PASSWORD).status_code == 302
    assert api.patch("/users/bob", json={"enabled": False, "password": PASSWORD}).status_code == 200
    assert sessions() == 0
    assert [e.details for e in audit.events(type="user.set_password")] == [{"sessions_ended": 1}]
    assert audit.events(type="user.disable")[0].details == {"sessions_ended": 1}  # the newest first


def test_patch_is_all_or_nothing(api: Any) -> None:
    make_user("bob", display_name="Bob")
    resp = api.patch("/users/bob", json={"display_name": "Robert", "enabled": False, "password": "short"})
    assert resp.status_code == 422 and "password" in resp.json["errors"]["json"]
    resp = api.patch("/users/bob", json={"display_name": "Robert", "email": "not-an-email"})
    assert resp.status_code == 422 and list(resp.json["errors"]["json"]) == ["email"]
    bob = directory.require_user("bob")
    assert bob.display_name == "Bob" and bob.enabled
    assert audit.events(type="user.update") == [] and audit.events(type="user.disable") == []
    assert api.patch("/users/nobody", json={"enabled": False}).status_code == 404


def test_a_patch_needs_a_json_body(api: Any) -> None:
    make_user("bob")
    missing = api.patch("/users/bob")
    assert missing.status_code == 422 and missing.json["message"] == "A JSON body is required."
    other_type = api.patch("/users/bob", data='{"enabled": false}', content_type="text/plain")
    assert other_type.status_code == 415
    assert api.patch("/users/bob", json={"enabled": 0}).status_code == 422  # true or false, not 0 or 1
    assert directory.require_user("bob").enabled


def test_a_directory_user_is_read_only(api: Any, runner: FlaskCliRunner) -> None:
    directory_user("dora")
    for change in ({"display_name": "Dolores"}, {"password": PASSWORD}, {"email": None, "enabled": False},
                   {"enabled": False}, {}):
        resp = api.patch("/users/dora", json=change)
        assert resp.status_code == 409, change
        assert resp.json["message"] == "'dora' is managed by directory corp: change them there"
    resp = api.delete("/users/dora")
    assert resp.status_code == 409 and "managed by directory corp" in resp.json["message"]
    dora = directory.require_user("dora")
    assert dora.display_name == "Dora" and dora.email == "dora@corp.test" and dora.enabled
    assert [e.type for e in audit.events() if e.username == "dora"] == []
    # The CLI's local override stays: a directory user can be blocked here (and allowed again).
    assert runner.invoke(cli, ["user", "disable", "dora"]).exit_code == 0
    assert api.get("/users/dora").json["enabled"] is False
    assert runner.invoke(cli, ["user", "enable", "dora"]).exit_code == 0
    assert api.get("/users/dora").json["enabled"] is True


def test_delete_a_user(api: Any, client: FlaskClient) -> None:
    make_user("bob", groups=["staff"])
    assert api.delete("/users/bob").status_code == 204
    assert api.get("/users/bob").status_code == 404
    assert directory.require_group("staff").members == []
    assert events("user.delete")[0].username == "bob"
    assert api.delete("/users/bob").status_code == 404


# --- groups and membership ----------------------------------------------------------------------------------------


def test_create_list_and_get_groups(api: Any) -> None:
    resp = api.post("/groups", json={"name": "Engineering", "description": "Builders"})
    assert resp.status_code == 201
    assert resp.json["name"] == "Engineering" and resp.json["description"] == "Builders" and resp.json["members"] == []
    assert events("group.create")[0].details == {"group": "Engineering"}
    for name in ("ops", "staff", "sales"):
        assert api.post("/groups", json={"name": name}).status_code == 201

    page = api.get("/groups", query_string={"per_page": 2}).json
    assert page["total"] == 4 and [g["name"] for g in page["items"]] == ["Engineering", "ops"]
    assert [g["name"] for g in api.get("/groups", query_string={"q": "S"}).json["items"]] == ["ops", "sales", "staff"]
    assert api.get("/groups/ops").json["description"] is None
    assert api.get("/groups/nope").status_code == 404


def test_a_groups_description_is_changed_and_cleared(api: Any) -> None:
    api.post("/groups", json={"name": "staff", "description": "Everyone"})
    make_user("alice", groups=["staff"])
    changed = api.patch("/groups/staff", json={"description": "  Everyone employed  "})
    assert changed.status_code == 200
    assert (changed.json["description"], changed.json["members"]) == ("Everyone employed", ["alice"])
    assert api.get("/groups/staff").json == changed.json
    assert api.patch("/groups/staff", json={"description": None}).json["description"] is None
    assert api.patch("/groups/staff", json={"description": ""}).json["description"] is None  # no change: no event
    assert [e.details for e in reversed(events("group.update"))] == [
        {"group": "staff", "description": {"from": "Everyone", "to": "Everyone employed"}},
        {"group": "staff", "description": {"from": "Everyone employed", "to": None}}]

    assert api.patch("/groups/nope", json={"description": "x"}).status_code == 404
    for body in ({}, {"description": "x" * 1025}, {"description": 5}, {"name": "renamed"}):
        resp = api.patch("/groups/staff", json=body)
        assert resp.status_code == 422, body
    assert api.get("/groups/staff").json["description"] is None


def test_group_refusals(api: Any) -> None:
    api.post("/groups", json={"name": "ops"})
    resp = api.post("/groups", json={"name": "OPS"})
    assert resp.status_code == 409 and resp.json["message"] == "group 'OPS' already exists"
    for body, field in (({"name": "-ops"}, "name"), ({"name": "a b"}, "name"), ({}, "name"),
                        ({"name": "x", "description": "d" * 1025}, "description")):
        resp = api.post("/groups", json=body)
        assert resp.status_code == 422 and list(resp.json["errors"]["json"]) == [field], body
    assert [g.name for g in directory.list_groups()] == ["ops"]


def test_membership_is_idempotent_and_audited_once(api: Any) -> None:
    make_user("alice")
    api.post("/groups", json={"name": "staff"})
    assert api.put("/groups/staff/members/alice").status_code == 204
    assert api.put("/groups/staff/members/ALICE").status_code == 204
    assert api.get("/groups/staff").json["members"] == ["alice"]
    assert api.get("/users/alice").json["groups"] == ["staff"]
    (added,) = events("group.add_member")
    assert added.username == "alice" and added.details == {"group": "staff"}

    assert api.delete("/groups/staff/members/alice").status_code == 204
    assert api.get("/groups/staff").json["members"] == []
    assert events("group.remove_member")[0].username == "alice"
    gone = api.delete("/groups/staff/members/alice")
    assert gone.status_code == 404 and gone.json["message"] == "user 'alice' is not a member of group 'staff'"


def test_membership_of_unknown_users_or_groups_is_not_found(api: Any) -> None:
    make_user("alice")
    api.post("/groups", json={"name": "staff"})
    for path in ("/groups/staff/members/nobody", "/groups/nope/members/alice"):
        assert api.put(path).status_code == 404
        assert api.delete(path).status_code == 404
    assert audit.events(type="group.add_member") == []


def test_a_directory_user_can_join_a_local_group(api: Any) -> None:
    directory_user("dora")
    api.post("/groups", json={"name": "idp-admins"})
    assert api.put("/groups/idp-admins/members/dora").status_code == 204
    assert api.get("/users/dora").json["groups"] == ["idp-admins"]


def test_delete_a_group(api: Any) -> None:
    make_user("alice", groups=["staff"])
    assert api.delete("/groups/staff").status_code == 204
    assert api.get("/groups/staff").status_code == 404
    assert api.get("/users/alice").json["groups"] == []
    assert events("group.delete")[0].details == {"group": "staff", "members": ["alice"]}
    assert api.delete("/groups/staff").status_code == 404


@pytest.mark.parametrize("path", ["/users/a%00b", "/users?q=%00", "/groups/x%00"])
def test_nul_characters_are_refused_not_stored(api: Any, path: str) -> None:
    resp = api.get(path)
    assert resp.status_code == 422 and "NUL" in resp.json["message"]


def test_nul_characters_in_a_body_are_refused(api: Any) -> None:
    resp = api.post("/users", json={"username": "bob", "display_name": "Bob\x00"})
    assert resp.status_code == 422 and directory.get_user("bob") is None


@pytest.mark.parametrize("depth", [33, 1_000, 100_000])
def test_deeply_nested_bodies_are_refused_not_a_server_error(api: Any, depth: int) -> None:
    # As a JSON value where the schema takes any object (an inline policy), and as a whole body.
    policy = "[" * depth + "]" * depth
    for path, body in (("/permission-sets", f'{{"name": "Deep", "session_duration_hours": 1, '
                                            f'"inline_policy": {{"Statement": {policy}}}}}'),
                       ("/users", policy)):
        resp = api.post(path, data=body, content_type="application/json")
        assert resp.status_code == 422, (path, depth, resp.status_code)
        assert "more than 32 levels deep" in resp.json["message"]
    assert api.get("/permission-sets/Deep").status_code == 404


def test_a_number_too_long_to_read_is_refused_not_a_server_error(api: Any) -> None:
    # Python converts at most 4,300 digits: json.loads raises a plain ValueError, which is no JSONDecodeError.
    resp = api.post("/users", data='{"username": ' + "1" * 5000 + "}", content_type="application/json")
    assert resp.status_code == 400 and "number too long" in resp.json["message"]
    malformed = api.post("/users", data='{"username": ', content_type="application/json")
    assert malformed.status_code == 400 and malformed.json["errors"] == {"json": ["Invalid JSON body."]}


def test_a_control_character_in_a_profile_is_refused(api: Any) -> None:
    # A SAML assertion could not carry it: every sign-in to an app releasing the name would fail.
    resp = api.post("/users", json={"username": "bob", "display_name": "Bo\u0007b"})
    assert resp.status_code == 422 and "control character" in resp.json["message"]
    assert directory.get_user("bob") is None
    api.post("/users", json={"username": "bob"})
    resp = api.patch("/users/bob", json={"given_name": "B\ufffeob"})
    assert resp.status_code == 422 and directory.get_user("bob").given_name is None  # type: ignore[union-attr]
    assert api.patch("/users/bob", json={"display_name": "Bob\tB."}).status_code == 200  # a tab is text


def test_a_body_as_deep_as_allowed_is_taken(api: Any) -> None:
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*",
                                                       "Condition": {"StringEquals": {"aws:x": ["y"]}}}]}
    resp = api.post("/permission-sets", json={"name": "Nested", "session_duration_hours": 1,
                                              "inline_policy": policy})
    assert resp.status_code == 201 and resp.json["inline_policy"] == policy


def test_an_answer_whose_closing_commit_fails_is_a_503_not_a_500(
        app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    """The API keeps a successful view's changes with a commit after the view: the database lost just then
    (a failover, an admin's shutdown) makes that answer a 503 to retry, as anywhere else, not a 500."""
    make_user("alice")
    headers = bearer("read")
    commits: list[int] = []
    fail_at: list[int] = []

    def lost(_conn: object) -> None:
        commits.append(1)
        if len(commits) in fail_at:
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    event.listen(db.engine, "commit", lost)
    try:
        assert client.get("/api/v1/users", headers=headers).status_code == 200
        fail_at.append(2 * len(commits))  # the same request's last commit
        resp = client.get("/api/v1/users", headers=headers)
    finally:
        event.remove(db.engine, "commit", lost)
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.headers["Retry-After"].isdigit()
    assert resp.get_json()["code"] == 503 and "briefly unavailable" in resp.get_json()["message"]
    assert "dependency unavailable on GET /api/v1/users" in caplog.text and "Traceback" not in caplog.text
    assert [u["username"] for u in client.get("/api/v1/users", headers=headers).get_json()["items"]] == ["alice"]


def _done_elsewhere_first(app: Flask, monkeypatch: pytest.MonkeyPatch, work: Callable[[], object]) -> None:
    """``work`` committed by a concurrent request (a retry on another instance) right after this request's
    service read the membership, before it writes: the next user lookup is the last read before the write."""
    lookup = directory.require_user

    def then_elsewhere(username: str) -> User:
        monkeypatch.setattr(directory, "require_user", lookup)
        user = lookup(username)
        user.groups  # noqa: B018 (read now, as the service reads it next)
        committed_elsewhere(app, work)
        return user

    monkeypatch.setattr(directory, "require_user", then_elsewhere)


def test_a_membership_put_or_deleted_twice_at_once_answers_as_if_one_came_second(
        app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    make_user("alice")
    directory.create_group("staff", actor="test")
    db.session.commit()
    headers = bearer("write")
    path = "/api/v1/groups/staff/members/alice"

    _done_elsewhere_first(app, monkeypatch, lambda: directory.add_member("staff", "alice", actor="retry"))
    resp = client.put(path, headers=headers)
    assert resp.status_code == 204, resp.get_data(as_text=True)  # PUT: nothing to change
    assert client.get("/api/v1/groups/staff", headers=headers).get_json()["members"] == ["alice"]
    assert [e.actor for e in audit.events(type="group.add_member")] == ["retry"]

    _done_elsewhere_first(app, monkeypatch, lambda: directory.remove_member("staff", "alice", actor="retry"))
    resp = client.delete(path, headers=headers)
    assert resp.status_code == 404, resp.get_data(as_text=True)
    assert resp.get_json()["message"] == "user 'alice' is not a member of group 'staff'"
    assert client.get("/api/v1/groups/staff", headers=headers).get_json()["members"] == []
    assert [e.actor for e in audit.events(type="group.remove_member")] == ["retry"]


def test_a_change_whose_row_is_deleted_before_it_is_shown_is_a_409(
        app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The change is committed (with its audit event); another admin deletes the group before this answer
    reads it back to show it: a conflict to reload, not a 500."""
    directory.create_group("staff", actor="test")
    db.session.commit()
    headers = bearer("write")
    record = audit.record

    def deleted_meanwhile(recorded: audit.AuditEvent, **kwargs: Any) -> None:
        monkeypatch.setattr(audit, "record", record)
        record(recorded, **kwargs)
        committed_elsewhere(app, lambda: directory.delete_group("staff", actor="other"))

    monkeypatch.setattr(audit, "record", deleted_meanwhile)
    resp = client.patch("/api/v1/groups/staff", headers=headers, json={"description": "Everyone"})
    assert resp.status_code == 409, resp.get_data(as_text=True)
    assert "Reload to see the current state" in resp.get_json()["message"]
    assert "a concurrent change: ObjectDeletedError" in caplog.text and "Traceback" not in caplog.text
    assert client.get("/api/v1/groups/staff", headers=headers).status_code == 404


def test_groups_whose_names_differ_only_in_case_cannot_both_be_made_at_once(app: Flask, client: FlaskClient) -> None:
    headers = bearer("write")
    main, other = threading.get_ident(), [lambda: directory.create_group("Staff", actor="other")]

    def after_the_check(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # This request has looked for a group of that name in any case; another admin makes one just then.
        if threading.get_ident() == main and "lower(groups.name)" in statement and other:
            committed_elsewhere(app, other.pop())

    event.listen(db.engine, "after_cursor_execute", after_the_check)
    try:
        resp = client.post("/api/v1/groups", headers=headers, json={"name": "staff"})
    finally:
        event.remove(db.engine, "after_cursor_execute", after_the_check)
    assert not other, "the other admin's group was never made"
    assert resp.status_code == 409, resp.get_data(as_text=True)
    assert resp.get_json()["message"] == "group 'staff' already exists"
    assert [g["name"] for g in client.get("/api/v1/groups", headers=headers).get_json()["items"]] == ["Staff"]


def test_a_user_patch_that_fails_midway_keeps_none_of_it(api: Any, client: FlaskClient) -> None:
    """A PATCH that changes the profile, the password and the state is one change: the database lost while its
    second audit event is written leaves the user as they were, not half updated and partly unaudited."""
    make_user("bob")
    with audit_insert_lost(nth=2):
        resp = api.patch("/users/bob", json={"email": "new@example.com", "password": "a-new-password-1",
                                             "enabled": False})
    assert resp.status_code == 503, resp.get_data(as_text=True)
    db.session.expire_all()
    bob = api.get("/users/bob").json
    assert bob["email"] != "new@example.com" and bob["enabled"] is True
    assert not audit.events(type="user.update") and not audit.events(type="user.set_password")
    assert login(client, "bob", DEFAULT_PASSWORD).status_code == 302
