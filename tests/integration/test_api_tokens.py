"""Admin API tokens: `idp admin token create|list|revoke`, shown once, stored hashed, scoped read or write,
and the API's refusals (401 without a live token, 403 for a read token that asks to change something)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from admin_api import bearer
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import make_user

from idp import audit
from idp.authn import directory
from idp.cli import cli
from idp.extensions import db


def create_token(runner: FlaskCliRunner, scope: str, name: str = "ticketing") -> dict[str, Any]:
    result = runner.invoke(cli, ["admin", "token", "create", "--scope", scope, "--name", name, "--json"])
    assert result.exit_code == 0, result.output
    created: dict[str, Any] = json.loads(result.stdout)
    return created


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def stored_values() -> str:
    """Every value of every row of every table, as one string."""
    return repr([tuple(row) for table in db.metadata.sorted_tables for row in db.session.execute(table.select())])


def test_a_token_is_shown_once_and_stored_hashed(app: Flask, runner: FlaskCliRunner, client: FlaskClient) -> None:
    created = create_token(runner, "write")
    token = created["token"]
    assert created["scope"] == "write" and created["name"] == "ticketing" and token.startswith("idpat_")
    assert len(token) > 40
    assert token not in stored_values()
    for args in (["admin", "token", "list"], ["admin", "token", "list", "--json"]):
        listed = runner.invoke(cli, args)
        assert listed.exit_code == 0 and "ticketing" in listed.output
        assert token not in listed.output
    assert client.get("/api/v1/users", headers=auth(token)).status_code == 200

    (event,) = audit.events(type="admin.token.create")
    assert event.actor is not None and event.actor.startswith("cli:")
    assert event.details == {"id": created["id"], "name": "ticketing", "scope": "write"}


def test_without_json_the_token_alone_goes_to_stdout(app: Flask, runner: FlaskCliRunner, client: FlaskClient) -> None:
    result = runner.invoke(cli, ["admin", "token", "create", "--scope", "read"])
    assert result.exit_code == 0
    token = result.stdout.strip()
    assert "\n" not in token and "not shown again" in result.stderr
    assert client.get("/api/v1/audit", headers=auth(token)).status_code == 200


def test_a_revoked_token_is_refused_at_once(app: Flask, runner: FlaskCliRunner, client: FlaskClient) -> None:
    created = create_token(runner, "write")
    assert client.get("/api/v1/users", headers=auth(created["token"])).status_code == 200
    result = runner.invoke(cli, ["admin", "token", "revoke", str(created["id"])])
    assert result.exit_code == 0, result.output

    refused = client.get("/api/v1/users", headers=auth(created["token"]))
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.json is not None and refused.json["code"] == 401 and refused.json["status"] == "Unauthorized"
    (event,) = audit.events(type="admin.token.revoke")
    assert event.details == {"id": created["id"], "name": "ticketing"}
    listed = json.loads(runner.invoke(cli, ["admin", "token", "list", "--json"]).output)
    assert listed[0]["revoked_at"] is not None
    assert audit.events(type="admin.api.denied") == []  # logged, not stored: see below


def test_revoking_an_unknown_token_fails(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(cli, ["admin", "token", "revoke", "99"])
    assert result.exit_code != 0 and "no admin token 99" in result.output


def test_an_unknown_token_is_refused(app: Flask, client: FlaskClient) -> None:
    bearer("write")
    resp = client.get("/api/v1/users", headers=auth("idpat_" + "x" * 43))
    assert resp.status_code == 401


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token {token}", "{token}", "Bearer{token}",
    "Bearer {token} extra", "Bearer {token}x",
])
def test_a_malformed_authorization_header_is_refused(app: Flask, client: FlaskClient, header: str | None) -> None:
    token = bearer("write")["Authorization"].removeprefix("Bearer ")
    headers = {} if header is None else {"Authorization": header.format(token=token)}
    resp = client.get("/api/v1/users", headers=headers)
    assert resp.status_code == 401, header
    assert resp.json is not None and "token is required" in resp.json["message"]


def test_refusals_without_a_live_token_are_logged_not_stored(app: Flask, client: FlaskClient,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    # Anyone can send these: as audit rows they would grow the table at a stranger's will.
    stored = len(audit.events(limit=1000))
    caplog.set_level(logging.INFO)
    for headers in ({}, auth("idpat_" + "x" * 43)):
        for _ in range(3):
            assert client.delete("/api/v1/users/alice", headers=headers,
                                 environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 401
    assert len(audit.events(limit=1000)) == stored
    lines = [r.getMessage() for r in caplog.records if r.name == "idp.admin.api.base"]
    assert lines == 3 * ["admin API refused DELETE '/api/v1/users/alice' from 203.0.113.9: no bearer token"] + 3 * [
        "admin API refused DELETE '/api/v1/users/alice' from 203.0.113.9: unknown or revoked token"]
    assert "x" * 43 not in caplog.text


def test_the_scheme_is_case_insensitive(app: Flask, client: FlaskClient) -> None:
    token = bearer("read")["Authorization"].removeprefix("Bearer ")
    assert client.get("/api/v1/users", headers={"Authorization": f"bearer {token}"}).status_code == 200


def test_a_read_token_reads_but_changes_nothing(app: Flask, client: FlaskClient) -> None:
    make_user("alice", groups=["staff"])
    read = bearer("read", name="dashboard")
    assert client.get("/api/v1/users/alice", headers=read).status_code == 200
    assert client.get("/api/v1/groups", headers=read).status_code == 200

    attempts = [
        client.post("/api/v1/users", json={"username": "mallory"}, headers=read),
        client.patch("/api/v1/users/alice", json={"enabled": False}, headers=read),
        client.delete("/api/v1/users/alice", headers=read),
        client.put("/api/v1/groups/staff/members/alice", headers=read),
        client.delete("/api/v1/groups/staff", headers=read),
    ]
    for resp in attempts:
        assert resp.status_code == 403, resp.request.path
        assert resp.json is not None and resp.json["message"] == "This token is read-only."
        assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]
    assert directory.get_user("mallory") is None
    alice = directory.require_user("alice")
    assert alice.enabled and [g.name for g in alice.groups] == ["staff"]
    assert directory.get_group("staff") is not None
    denied = audit.events(type="admin.api.denied")
    assert len(denied) == len(attempts)
    assert {e.actor for e in denied} == {"token:1:dashboard"} and {e.reason for e in denied} == {"read-only token"}


def test_a_write_token_writes_and_the_audit_log_names_it(app: Flask, client: FlaskClient) -> None:
    write = bearer("write", name="ticketing")
    assert client.post("/api/v1/users", json={"username": "bob"}, headers=write).status_code == 201
    (event,) = audit.events(type="user.create")
    assert event.actor == "token:1:ticketing" and event.username == "bob"


def test_each_use_updates_last_used_at(app: Flask, runner: FlaskCliRunner, client: FlaskClient,
                                       frozen_clock: Any) -> None:
    frozen_clock.current = frozen_clock.current.replace(microsecond=0)  # idp.clock.now() gives whole seconds
    created = create_token(runner, "read")

    def last_used() -> str | None:
        listed = json.loads(runner.invoke(cli, ["admin", "token", "list", "--json"]).output)
        value: str | None = listed[0]["last_used_at"]
        return value

    assert last_used() is None
    assert client.get("/api/v1/users", headers=auth(created["token"])).status_code == 200
    assert last_used() == frozen_clock().isoformat()
    frozen_clock.advance(hours=3)
    assert client.get("/api/v1/users", headers=auth(created["token"])).status_code == 200
    assert last_used() == frozen_clock().isoformat()
    # A refused write is still a use of the token, but not one that changes anything.
    frozen_clock.advance(hours=1)
    assert client.post("/api/v1/users", json={"username": "x"}, headers=auth(created["token"])).status_code == 403
    assert last_used() != frozen_clock().isoformat()
