"""``idp directory``: add (password from stdin, stored encrypted), list, show, test and remove, against the
session's slapd; and the IDP_CONFIG file's problems reported together at start-up."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from helpers import login, make_user
from ldap_server import Slapd, SlapdProcess, closed_port_url
from sqlalchemy import delete, select

from idp import audit
from idp.authn.connectors import chain
from idp.cli import cli
from idp.extensions import db
from idp.store import Directory, User


def add(runner: FlaskCliRunner, slapd: Slapd, name: str, *urls: str, extra: tuple[str, ...] = ()) -> str:
    args = ["directory", "add", name, "--base-dn", slapd.base_dn, "--bind-dn", slapd.service_dn,
            "--bind-password-stdin", "--ca-file", str(slapd.ca_file), "--start-tls", "--timeout", "2", *extra]
    for url in urls:
        args += ["--url", url]
    result = runner.invoke(cli, args, input=slapd.service_password + "\n")
    assert result.exit_code == 0, result.output
    return result.output


def test_add_list_show_test_and_sign_in(app: Flask, runner: FlaskCliRunner, client: FlaskClient,
                                        slapd: Slapd) -> None:
    add(runner, slapd, "corp", closed_port_url(), slapd.ldap_url, extra=("--domain", "corp.example"))
    # The password is stored encrypted, and shown nowhere.
    row = db.session.scalar(select(Directory).where(Directory.name == "corp"))
    assert row.bind_password_encrypted and slapd.service_password not in row.bind_password_encrypted
    assert slapd.service_password not in json.dumps(row.settings)
    shown = runner.invoke(cli, ["directory", "show", "corp"]).output
    assert "bind password: stored encrypted" in shown and slapd.service_password not in shown
    listed = runner.invoke(cli, ["directory", "list"]).output.splitlines()
    assert listed[0].startswith("1. local  local") and listed[1].startswith("2. corp  ldap  (database)")
    add_event = audit.events(type="directory.add")[0]
    assert slapd.service_password not in json.dumps(add_event.details)

    tested = runner.invoke(cli, ["directory", "test", "corp", "--user", "alice"])
    lines = tested.output.splitlines()
    # The dead first URL is reported (and makes the exit code 1); lookups still work through the second.
    assert tested.exit_code == 1
    assert lines[1].startswith("FAIL  connect   ldap://127.0.0.1:") and "refused" in lines[1].lower()
    assert lines[2] == f"ok    connect   {slapd.ldap_url}: ok, service bind as {slapd.service_dn}"
    assert lines[3].startswith("ok    user      alice: uid=alice,ou=people,dc=example,dc=test (entryUUID ")
    assert lines[4] == "ok    groups    engineers, rnd, staff (3 level(s))"

    assert login(client, "alice@corp.example", "alice-pw").status_code == 302
    assert db.session.scalar(select(User).where(User.username == "alice")).source == "corp"

    assert runner.invoke(cli, ["directory", "remove", "corp"]).exit_code == 0
    assert "corp" not in runner.invoke(cli, ["directory", "list"]).output


def test_add_probes_first_and_refuses_a_directory_no_server_of_which_answers(
        app: Flask, runner: FlaskCliRunner, client: FlaskClient, slapd: Slapd, tmp_path: Path) -> None:
    # /readyz counts every configured directory: one stored with a wrong password or URL would take every
    # instance out of its load balancer. Refused instead, with each server's answer, and nothing stored.
    args = ["directory", "add", "corp", "--url", slapd.ldap_url, "--url", closed_port_url(), "--base-dn",
            slapd.base_dn, "--bind-dn", slapd.service_dn, "--bind-password-stdin", "--ca-file", str(slapd.ca_file),
            "--start-tls", "--timeout", "2"]
    refused = runner.invoke(cli, args, input="not-the-password\n")
    assert refused.exit_code == 1, refused.output
    lines = refused.output.splitlines()
    assert lines[0].startswith("Error: directory 'corp' not added: no server of it answered"), refused.output
    assert lines[1].startswith(f"  - {slapd.ldap_url}: ") and lines[1].endswith("refused: invalidCredentials"), lines
    assert lines[2].startswith("  - ldap://127.0.0.1:") and "refused" in lines[2].lower(), lines
    assert "--no-probe" in lines[3] and "not-the-password" not in refused.output
    assert "corp" not in runner.invoke(cli, ["directory", "list"]).output
    assert not audit.events(type="directory.add")
    assert client.get("/readyz").status_code == 200

    # One server answering is what readiness asks: added, with a warning for the other.
    added = runner.invoke(cli, args, input=slapd.service_password + "\n")
    assert added.exit_code == 0, added.output
    assert "warning: ldap://127.0.0.1:" in added.output and "directory 'corp' added" in added.output
    assert client.get("/readyz").status_code == 200

    # --no-probe stores what nothing answers from here (say, an address only the servers reach); /readyz then
    # says so, which is what the probe spared the other two.
    assert runner.invoke(cli, ["directory", "add", "far", "--url", closed_port_url(), "--base-dn", slapd.base_dn,
                               "--no-probe"]).exit_code == 0
    assert client.get("/readyz").status_code == 503
    # Or stores it not to count for readiness: shown there, and its outage is its own users' only.
    assert runner.invoke(cli, ["directory", "remove", "far"]).exit_code == 0
    ca = tmp_path / "far-ca.pem"
    ca.write_bytes(slapd.ca_file.read_bytes())
    assert runner.invoke(cli, ["directory", "add", "far", "--url", closed_port_url(), "--base-dn", slapd.base_dn,
                               "--ca-file", str(ca), "--no-probe", "--no-readiness"]).exit_code == 0
    assert "readiness: False" in runner.invoke(cli, ["directory", "show", "far"]).output
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["not_counted"] == ["far"]
    # Still not counted once its settings no longer check out (its CA file gone).
    ca.unlink()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["directories"]["far"] == "error"


def test_test_reports_every_failure_and_exits_non_zero(app: Flask, runner: FlaskCliRunner, slapd: Slapd) -> None:
    add(runner, slapd, "good", slapd.ldap_url)
    ok = runner.invoke(cli, ["directory", "test", "good", "--user", "carol"])
    assert ok.exit_code == 0, ok.output
    assert "ok    groups    cycle-a, cycle-b" in ok.output
    missing = runner.invoke(cli, ["directory", "test", "good", "--user", "*)(uid=*"])
    assert missing.exit_code == 1
    assert "FAIL  user      *)(uid=*: unknown user (filter (&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a)))" \
        in missing.output
    add(runner, slapd, "down", closed_port_url(), closed_port_url(), extra=("--no-probe",))
    down = runner.invoke(cli, ["directory", "test", "down", "--user", "alice"])
    assert down.exit_code == 1
    assert down.output.count("FAIL  connect") == 2 and "FAIL  user" in down.output


def test_add_refuses_bad_input_with_every_problem(app: Flask, runner: FlaskCliRunner) -> None:
    result = runner.invoke(cli, ["directory", "add", "Bad Name", "--url", "http://x", "--base-dn", "not a dn",
                                 "--ca-file", "/nonexistent/ca.pem"])
    assert result.exit_code == 1
    for problem in ("name must be", "must be ldap://HOST", "base_dn: 'not a dn' is not a valid DN",
                    "ca_file: /nonexistent/ca.pem is not a readable file"):
        assert problem in result.output
    assert runner.invoke(cli, ["directory", "remove", "local"]).exit_code == 1


def test_add_refuses_passwords_in_clear_across_a_network_unless_told(app: Flask, runner: FlaskCliRunner) -> None:
    args = ["directory", "add", "corp", "--url", "ldap://ldap.corp.example", "--base-dn", "dc=corp,dc=example",
            "--no-probe"]
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 1 and "would carry passwords in clear" in refused.output, refused.output
    for secured in (["--start-tls"], ["--allow-plaintext"]):  # the admin's choice, for a network they trust
        added = runner.invoke(cli, [*args, *secured])
        assert added.exit_code == 0, added.output
        assert runner.invoke(cli, ["directory", "remove", "corp"]).exit_code == 0
    # This machine (a directory beside the bridge): nothing crosses a network.
    assert runner.invoke(cli, [*args[:4], "ldap://127.0.0.1:1", *args[5:]]).exit_code == 0


def test_add_sets_the_group_cache_seconds(app: Flask, runner: FlaskCliRunner, slapd: Slapd) -> None:
    add(runner, slapd, "corp", slapd.ldap_url, extra=("--group-cache-seconds", "5"))
    shown = json.loads(runner.invoke(cli, ["directory", "show", "corp", "--json"]).output)
    assert shown["group_cache_seconds"] == 5
    item = next(i for i in chain.configured() if i.name == "corp")
    assert item.cfg is not None and item.cfg.group_cache_seconds == 5
    refused = runner.invoke(cli, ["directory", "add", "other", "--url", slapd.ldap_url, "--base-dn", slapd.base_dn,
                                  "--group-cache-seconds", "-1"])
    assert refused.exit_code == 2 and "--group-cache-seconds" in refused.output


def established_to(port: int) -> int:
    """TCP connections of this host to ``port`` (from the kernel's tables, as ss would count them)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                count += int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01"  # ESTABLISHED
    return count


def test_a_removed_directory_lets_go_of_its_connections(
        app: Flask, runner: FlaskCliRunner, spare_slapd: SlapdProcess) -> None:
    corp = Slapd(ldap_url=spare_slapd.ldap_url, ldaps_url=spare_slapd.ldaps_url, ca_file=spare_slapd.dir / "ca.pem",
                 wrong_ca_file=spare_slapd.dir / "wrong-ca.pem")
    port = urlsplit(corp.ldap_url).port or 389
    add(runner, corp, "corp", corp.ldap_url)
    assert login(app.test_client(), "alice", "alice-pw").status_code == 302
    assert established_to(port) > 0  # the connector keeps its pool, bound as the service account
    # Removed (through another instance, say: nothing tells this process), the next sign-in here lets go.
    db.session.execute(delete(Directory).where(Directory.name == "corp"))
    db.session.commit()
    make_user("dave", "dave's own password")
    assert login(app.test_client(), "dave", "dave's own password").status_code == 302
    deadline = time.monotonic() + 5
    while established_to(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert established_to(port) == 0
