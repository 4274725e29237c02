"""`idp demo`: a seeded demo directory, and the server started the way `idp serve` starts it."""

from __future__ import annotations

import os
from pathlib import Path

import requests
from flask import Flask
from flask.testing import FlaskCliRunner
from helpers import free_port, idp_process, login_http

from idp import audit, clock
from idp.access.decide import EVERYTHING, authorize
from idp.authn import directory
from idp.authn.principal import principal_from_user
from idp.cli import cli
from idp.demo import USERS, seed_demo


def test_seed_creates_users_groups_and_membership(app: Flask) -> None:
    users = seed_demo()
    assert [u.username for u in users] == ["alice", "bob", "carol"]
    assert {g.name: [m.username for m in g.members] for g in directory.list_groups()} == {
        "engineering": ["alice", "bob"], "finance": ["carol"], "idp-admins": ["alice"]}
    for user in users:
        principal = directory.authenticate(user.username, user.password)
        assert principal is not None and principal.email == f"{user.username}@example.com"
    assert directory.authenticate("alice", "alice-demo-pw") is not None


def test_seed_grants_demo_access(app: Flask) -> None:
    seed_demo()

    def roles(username: str) -> list[tuple[str, str]]:
        principal = principal_from_user(directory.require_user(username), clock.now())
        return [(r.account_name, r.permission_set) for r in authorize(principal, EVERYTHING, clock.now()).roles]

    assert roles("alice") == [("Demo production", "Administrator"), ("Demo production", "ReadOnly"),
                              ("Demo sandbox", "ReadOnly")]
    assert roles("bob") == [("Demo production", "ReadOnly"), ("Demo sandbox", "ReadOnly")]
    assert roles("carol") == []


def test_seeding_again_converges_without_errors(app: Flask) -> None:
    seed_demo()
    created = len(audit.events(limit=1000))
    # Someone changed a password, disabled a user and took one out of a group.
    directory.set_password("bob", "changed-password", actor="test")
    directory.disable_user("carol", actor="test")
    directory.remove_member("idp-admins", "alice", actor="test")
    seed_demo()
    assert len(directory.list_users()) == 3 and len(directory.list_groups()) == 3
    for user in USERS:
        assert directory.authenticate(user.username, user.password) is not None
    assert [g.name for g in directory.require_user("alice").groups] == ["engineering", "idp-admins"]
    seed_demo()  # a third run changes nothing
    assert len(audit.events(limit=1000)) == created + 3 + 3


def test_demo_command_is_registered(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(cli, ["demo", "--help"])
    assert result.exit_code == 0 and "--bind" in result.output


def test_idp_demo_serves_and_alice_signs_in(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(IDP_DATA_DIR=str(tmp_path), IDP_LOG_FORMAT="text", IDP_WORKERS="1")
    with idp_process(["demo", "--bind", f"127.0.0.1:{port}"], env, port, tmp_path / "out.log") as served:
        browser = requests.Session()
        resp = login_http(browser, served.url, "alice", "alice-demo-pw")
        assert resp.status_code == 302, resp.text
        home = browser.get(served.url + "/", timeout=10)
        assert "Alice Anderson" in home.text and "Demo sandbox" in home.text and "111111111111" in home.text
        assert home.headers["Server"].startswith("gunicorn")
    out = served.output()
    assert "alice" in out and "alice-demo-pw" in out
