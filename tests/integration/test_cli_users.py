"""`idp user ...`, `idp group ...` and `idp audit list`: the directory from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask.testing import FlaskCliRunner
from helpers import login, make_user, sql_statements

from idp import audit
from idp.authn import directory
from idp.cli import cli
from idp.extensions import db
from idp.store import User

IDP = str(Path(sys.executable).with_name("idp"))
PASSWORD = "s3cret-passw0rd"


def add_alice(runner: FlaskCliRunner, *extra: str) -> None:
    result = runner.invoke(cli, ["user", "add", "alice", "--password-stdin", *extra], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output


def test_user_add_from_stdin_then_list_and_show(app: Flask, runner: FlaskCliRunner) -> None:
    assert runner.invoke(cli, ["group", "add", "engineering", "--description", "Builders"]).exit_code == 0
    add_alice(runner, "--email", "alice@example.com", "--given-name", "Alice", "--family-name", "Anderson",
              "--display-name", "Alice Anderson", "--group", "engineering")
    listed = runner.invoke(cli, ["user", "list"])
    assert listed.exit_code == 0
    assert "alice" in listed.output and "alice@example.com" in listed.output and "engineering" in listed.output
    shown = json.loads(runner.invoke(cli, ["user", "show", "ALICE", "--json"]).output)
    assert shown["username"] == "alice"
    assert shown["email"] == "alice@example.com"
    assert shown["display_name"] == "Alice Anderson"
    assert shown["groups"] == ["engineering"] and shown["enabled"] is True
    assert [u["username"] for u in json.loads(runner.invoke(cli, ["user", "list", "--json"]).output)] == ["alice"]
    assert directory.authenticate("alice", PASSWORD) is not None
    (event,) = audit.events(type="user.create")
    assert event.username == "alice" and (event.actor or "").startswith("cli:")
    assert PASSWORD not in listed.output


def test_user_add_prompts_twice_and_never_echoes(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(cli, ["user", "add", "bob"], input="short\n" + PASSWORD + "\n" + PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "at least 8 characters" in result.output  # the short one was refused and asked again
    assert "Repeat for confirmation" in result.output
    assert PASSWORD not in result.output
    principal = directory.authenticate("bob", PASSWORD)
    assert principal is not None and principal.username == "bob"


def test_password_is_never_an_argument(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(cli, ["user", "add", "bob", "--password", PASSWORD])
    assert result.exit_code == 2 and "No such option" in result.output
    assert directory.get_user("bob") is None


def test_user_add_errors(app: Flask, runner: FlaskCliRunner) -> None:
    add_alice(runner)
    dup = runner.invoke(cli, ["user", "add", "Alice", "--password-stdin"], input=PASSWORD + "\n")
    assert dup.exit_code == 1 and "user 'alice' already exists" in dup.output
    short = runner.invoke(cli, ["user", "add", "bob", "--password-stdin"], input="1234567\n")
    assert short.exit_code == 1 and "at least 8 characters" in short.output
    email = runner.invoke(cli, ["user", "add", "bob", "--email", "not-an-email", "--password-stdin"],
                          input=PASSWORD + "\n")
    assert email.exit_code == 1 and "invalid email address 'not-an-email'" in email.output
    group = runner.invoke(cli, ["user", "add", "bob", "--group", "nope", "--password-stdin"], input=PASSWORD + "\n")
    assert group.exit_code == 1 and "no group 'nope'" in group.output
    bad_name = runner.invoke(cli, ["user", "add", "bob smith", "--password-stdin"], input=PASSWORD + "\n")
    assert bad_name.exit_code == 1 and "invalid username" in bad_name.output
    empty = runner.invoke(cli, ["user", "add", "bob", "--password-stdin"], input="")
    assert empty.exit_code == 1 and "no password on stdin" in empty.output
    assert directory.get_user("bob") is None
    assert "Traceback" not in dup.output + short.output + email.output + group.output
    # Asked interactively, a password is asked for only once what comes with it would be taken.
    for args, said in ((["bob smith"], "invalid username"), (["bob", "--email", "x"], "invalid email address"),
                       (["alice"], "already exists"), (["bob", "--group", "nope"], "no group 'nope'")):
        result = runner.invoke(cli, ["user", "add", *args], input="")
        assert result.exit_code == 1 and said in result.output and "assword" not in result.output, result.output
    for cmd in (["user", "show", "ghost"], ["user", "disable", "ghost"], ["user", "delete", "ghost", "--yes"]):
        result = runner.invoke(cli, cmd)
        assert result.exit_code == 1 and "no user 'ghost'" in result.output


def test_disable_ends_the_live_session_and_enable_restores_sign_in(app: Flask, runner: FlaskCliRunner) -> None:
    add_alice(runner)
    browser = app.test_client()
    assert login(browser, "alice", PASSWORD).status_code == 302
    result = runner.invoke(cli, ["user", "disable", "alice"])
    assert result.exit_code == 0 and "1 session(s) ended" in result.output
    assert browser.get("/").status_code == 302
    assert directory.authenticate("alice", PASSWORD) is None
    assert runner.invoke(cli, ["user", "enable", "alice"]).exit_code == 0
    assert login(app.test_client(), "alice", PASSWORD).status_code == 302
    assert [e.type for e in audit.events(username="alice") if e.type.startswith("user.")] == [
        "user.enable", "user.disable", "user.create"]


def test_set_password(app: Flask, runner: FlaskCliRunner) -> None:
    add_alice(runner)
    new = "another-passw0rd"
    result = runner.invoke(cli, ["user", "set-password", "alice", "--password-stdin"], input=new + "\n")
    assert result.exit_code == 0 and new not in result.output
    assert directory.authenticate("alice", PASSWORD) is None
    assert directory.authenticate("alice", new) is not None
    prompted = runner.invoke(cli, ["user", "set-password", "alice"], input=PASSWORD + "\n" + PASSWORD + "\n")
    assert prompted.exit_code == 0
    assert directory.authenticate("alice", PASSWORD) is not None
    assert len(audit.events(type="user.set_password")) == 2


def test_delete_asks_unless_yes(app: Flask, runner: FlaskCliRunner) -> None:
    add_alice(runner)
    declined = runner.invoke(cli, ["user", "delete", "alice"], input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert directory.get_user("alice") is not None
    assert runner.invoke(cli, ["user", "delete", "alice"], input="y\n").exit_code == 0
    assert directory.get_user("alice") is None
    (event,) = audit.events(type="user.delete")
    assert event.username == "alice" and (event.actor or "").startswith("cli:")


def test_a_directory_user_is_disabled_here_but_not_deleted(app: Flask, runner: FlaskCliRunner) -> None:
    db.session.add(User(username="dora", source="corp", external_id="uid=dora"))
    db.session.commit()
    refused = runner.invoke(cli, ["user", "delete", "dora", "--yes"])
    assert refused.exit_code != 0 and "'dora' is managed by directory corp" in refused.output
    assert directory.get_user("dora") is not None and audit.events(type="user.delete") == []
    # The local override: a directory user can be blocked here, and allowed again.
    assert runner.invoke(cli, ["user", "disable", "dora"]).exit_code == 0
    assert not directory.require_user("dora").enabled
    assert runner.invoke(cli, ["user", "enable", "dora"]).exit_code == 0
    assert directory.require_user("dora").enabled


def test_groups_and_membership(app: Flask, runner: FlaskCliRunner) -> None:
    add_alice(runner)
    assert runner.invoke(cli, ["group", "add", "finance", "--description", "Pays the bills"]).exit_code == 0
    dup = runner.invoke(cli, ["group", "add", "Finance"])
    assert dup.exit_code == 1 and "group 'Finance' already exists" in dup.output
    assert runner.invoke(cli, ["group", "add-member", "finance", "Alice"]).exit_code == 0
    again = runner.invoke(cli, ["group", "add-member", "finance", "alice"])
    assert again.exit_code == 0 and "already a member" in again.output
    (finance,) = json.loads(runner.invoke(cli, ["group", "list", "--json"]).output)
    assert finance == {"name": "finance", "description": "Pays the bills", "members": ["alice"]}
    table = runner.invoke(cli, ["group", "list"]).output
    assert "finance" in table and "Pays the bills" in table

    unknown_user = runner.invoke(cli, ["group", "add-member", "finance", "ghost"])
    assert unknown_user.exit_code == 1 and "no user 'ghost'" in unknown_user.output
    unknown_group = runner.invoke(cli, ["group", "add-member", "nope", "alice"])
    assert unknown_group.exit_code == 1 and "no group 'nope'" in unknown_group.output

    assert runner.invoke(cli, ["group", "remove-member", "finance", "alice"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["user", "show", "alice", "--json"]).output)["groups"] == []
    not_member = runner.invoke(cli, ["group", "remove-member", "finance", "alice"])
    assert not_member.exit_code == 1 and "not a member" in not_member.output
    assert [e.type for e in audit.events() if e.type.startswith("group.")] == [
        "group.remove_member", "group.add_member", "group.create"]


def test_audit_list_filters_and_json(app: Flask, runner: FlaskCliRunner, frozen_clock: object) -> None:
    make_user("alice", PASSWORD)
    make_user("bob", PASSWORD)
    frozen_clock.advance(hours=3)  # type: ignore[attr-defined]
    login(app.test_client(), "alice", "wrong password")

    everything = runner.invoke(cli, ["audit", "list"])
    assert everything.exit_code == 0
    lines = everything.output.splitlines()
    assert len(lines) == 3 and "login" in lines[0] and "reason=bad password" in lines[0]

    mine = json.loads(runner.invoke(cli, ["audit", "list", "--user", "alice", "--json"]).output)
    assert [(e["type"], e["outcome"]) for e in mine] == [("login", "failure"), ("user.create", "success")]
    assert mine[0]["client_ip"] == "127.0.0.1" and mine[0]["reason"] == "bad password"

    recent = json.loads(runner.invoke(cli, ["audit", "list", "--since", "2h", "--json"]).output)
    assert [e["type"] for e in recent] == ["login"]
    created = json.loads(runner.invoke(cli, ["audit", "list", "--type", "user.create", "--limit", "1",
                                             "--json"]).output)
    assert len(created) == 1 and created[0]["type"] == "user.create"
    iso = runner.invoke(cli, ["audit", "list", "--since", "2000-01-01T00:00:00Z", "--json"])
    assert len(json.loads(iso.output)) == 3

    bad = runner.invoke(cli, ["audit", "list", "--since", "yesterday-ish"])
    assert bad.exit_code == 2 and "--since" in bad.output and "30m, 2h, 7d" in bad.output


def test_audit_prune_deletes_what_is_older_than_asked_in_batches_and_says_so(
        app: Flask, runner: FlaskCliRunner, frozen_clock: object) -> None:
    for name in ("old-1", "old-2", "old-3"):
        make_user(name, PASSWORD)
    frozen_clock.advance(days=400)  # type: ignore[attr-defined]
    make_user("recent", PASSWORD)

    with sql_statements() as statements:
        pruned = audit.prune(audit.events(type="user.create", limit=1)[0].at - timedelta(days=1), actor="test",
                             batch=2)
    assert pruned == 3
    assert len([s for s in statements if s.startswith("DELETE FROM audit_events")]) == 2  # batches of two
    assert [e.username for e in audit.events(type="user.create")] == ["recent"]
    [event] = audit.events(type="audit.prune")
    assert event.actor == "test" and event.details["deleted"] == 3

    frozen_clock.advance(days=400)  # type: ignore[attr-defined]
    result = runner.invoke(cli, ["audit", "prune", "--before", "365d"])
    assert result.exit_code == 0 and result.output == "2 audit event(s) deleted\n", result.output
    [event] = audit.events()
    assert event.type == "audit.prune" and event.actor is not None and event.details["deleted"] == 2
    assert runner.invoke(cli, ["audit", "prune"]).exit_code == 2  # no default: nothing is deleted by surprise
    for bad_value in ("a year", "99999999d"):
        bad = runner.invoke(cli, ["audit", "prune", "--before", bad_value])
        assert bad.exit_code == 2 and "--before" in bad.output and "Traceback" not in bad.output, bad.output
    # A time that would empty the trail (0s, a future date) is a mistake unless forced.
    for recent in ("0s", "2999-01-01"):
        refused = runner.invoke(cli, ["audit", "prune", "--before", recent])
        assert refused.exit_code == 2 and "would delete events of the last 1 day(s)" in refused.output
    assert len(audit.events()) == 1
    forced = runner.invoke(cli, ["audit", "prune", "--before", "2999-01-01", "--force"])
    assert forced.output == "1 audit event(s) deleted\n" and [e.type for e in audit.events()] == ["audit.prune"]


def test_the_idp_command_shares_the_instance_with_the_server(tmp_path: Path) -> None:
    """The real console script, twice, with only IDP_DATA_DIR in common: the second run sees the first's user."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env.update(IDP_DATA_DIR=str(tmp_path / "instance"), IDP_LOG_FORMAT="text")
    added = subprocess.run([IDP, "user", "add", "dave", "--email", "dave@example.com", "--password-stdin"],
                           input=PASSWORD + "\n", env=env, capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([IDP, "user", "list", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [u["email"] for u in json.loads(listed.stdout)] == ["dave@example.com"]
    assert PASSWORD not in added.stdout + added.stderr
