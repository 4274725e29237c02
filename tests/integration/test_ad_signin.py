"""Sign-in against a real Samba AD domain controller (tests/samba_ad.py): the three sign-in name forms over
LDAPS and StartTLS with the DC's certificate verified, nested groups through the in-chain rule, AD's
account refusals (disabled, locked, expired, must change password) told apart from a wrong password, an account
that expires after signing in losing its session at revalidation, and ``idp directory add/test`` for an AD domain."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import ldap3
import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from helpers import login
from samba_ad import ADMIN_PW, NESTED, SambaAd, ad_config
from sqlalchemy import select

from idp import audit
from idp.authn.views import GENERIC_FAILURE
from idp.cli import cli
from idp.extensions import db
from idp.store import User


def sign_in(app: Flask, username: str, password: str) -> tuple[int, str]:
    resp = login(app.test_client(), username, password)
    return resp.status_code, resp.get_data(as_text=True)


def last_login() -> audit.AuditEvent:
    return audit.events(type="login", limit=1)[0]


@pytest.mark.parametrize("transport", ["ldaps", "starttls"])
@pytest.mark.parametrize("name", ["alice", "alice@example.test", "EXAMPLE\\alice"])
def test_an_ad_user_signs_in_by_each_name_form_with_nested_groups(
    samba_ad: SambaAd, tmp_path: Path, with_directories: Callable[..., Flask], transport: str, name: str
) -> None:
    tls: dict[str, object] = {"urls": [samba_ad.ldap_url], "start_tls": True} if transport == "starttls" else {}
    app = with_directories(ad_config(samba_ad, tmp_path, **tls))
    status, _ = sign_in(app, name, "alice-pw")
    assert status == 302
    event = last_login()
    assert event.outcome == "success" and event.username == "alice" and event.details == {"source": "dc"}
    shadow = db.session.scalar(select(User).where(User.username == "alice"))
    # The three levels (engineers in rnd in staff) from one in-chain search; the objectGUID is the key.
    assert tuple(sorted(shadow.external_groups)) == NESTED
    assert shadow.source == "dc" and uuid.UUID(shadow.external_id)
    assert shadow.email == "alice@example.test" and shadow.family_name == "Liddell"


def test_every_name_form_is_the_same_shadow_user(
    samba_ad: SambaAd, tmp_path: Path, with_directories: Callable[..., Flask]
) -> None:
    app = with_directories(ad_config(samba_ad, tmp_path))
    for name in ("alice", "ALICE@EXAMPLE.TEST", "example\\Alice"):
        assert sign_in(app, name, "alice-pw")[0] == 302
    assert len(db.session.scalars(select(User).where(User.source == "dc")).all()) == 1


@pytest.mark.parametrize("server_name", [None, "dc2.example.test"])
def test_the_dc_certificate_must_carry_the_expected_name(
    samba_ad: SambaAd, tmp_path: Path, with_directories: Callable[..., Flask], server_name: str | None
) -> None:
    # Without tls_server_name the name checked is 127.0.0.1, which the DC's certificate does not carry.
    app = with_directories(ad_config(samba_ad, tmp_path, tls_server_name=server_name))
    status, page = sign_in(app, "alice", "alice-pw")
    assert status == 503 and "directory is unavailable" in page
    assert "certificate verify failed" in (last_login().reason or "")


@pytest.mark.parametrize(("user", "told", "reason"), [
    ("dave", "Your account is disabled.", "account disabled (AD data 533)"),
    ("erin", "You must change your password before you can sign in.", "password must be changed (AD data 773)"),
    ("frank", "Your account has expired.", "account expired (AD data 701)"),
    ("gina", "Your account is locked after too many failed sign-ins.", "account locked out (AD data 775)"),
])
def test_an_account_the_dc_refuses_gets_its_own_message_and_audit_reason(
    samba_ad: SambaAd, tmp_path: Path, with_directories: Callable[..., Flask], user: str, told: str, reason: str
) -> None:
    app = with_directories(ad_config(samba_ad, tmp_path))
    status, page = sign_in(app, user, f"{user}-pw")
    assert status == 200 and told in page and GENERIC_FAILURE not in page
    event = last_login()
    # The audit names the source (the built-in directory was asked first and did not know the name).
    assert event.outcome == "failure" and event.username == user and event.reason == f"dc: {reason}"


@pytest.mark.parametrize(("user", "password", "reason"), [
    ("bob", "wrong", "dc: bad password (AD data 52e)"),
    # A disabled account with a wrong password: the DC says 52e, so nobody learns it is disabled.
    ("dave", "wrong", "dc: bad password (AD data 52e)"),
    ("nobody", "whatever", "local: unknown user; dc: unknown user"),
    ("OTHER\\bob", "bob-pw", "local: unknown user; dc: unknown user"),  # a domain the directory does not claim
    ("*)(sAMAccountName=*", "bob-pw", "local: unknown user; dc: unknown user"),
    ("*", "bob-pw", "local: unknown user; dc: unknown user"),
])
def test_wrong_password_and_unknown_names_get_the_generic_message(
    samba_ad: SambaAd, tmp_path: Path, with_directories: Callable[..., Flask], user: str, password: str,
    reason: str
) -> None:
    # Nothing here routes by domain: the chain asks the built-in directory, then the DC, which knows none of these.
    app = with_directories(ad_config(samba_ad, tmp_path, domains=["EXAMPLE"]))
    status, page = sign_in(app, user, password)
    assert status == 200 and GENERIC_FAILURE in page
    assert last_login().reason == reason


def test_directory_add_and_test_against_the_dc(app: Flask, runner: FlaskCliRunner, samba_ad: SambaAd) -> None:
    args = ["directory", "add", "dc", "--type", "ad", "--url", samba_ad.ldaps_url, "--base-dn", samba_ad.base_dn,
            "--bind-dn", samba_ad.service_dn, "--bind-password-stdin", "--ca-file", str(samba_ad.ca_file),
            "--tls-server-name", samba_ad.server_name, "--domain", samba_ad.domain]
    added = runner.invoke(cli, args, input=samba_ad.service_password + "\n")
    assert added.exit_code == 0, added.output
    shown = runner.invoke(cli, ["directory", "show", "dc"]).output
    assert "type: ad" in shown and samba_ad.service_password not in shown

    tested = runner.invoke(cli, ["directory", "test", "dc", "--user", "EXAMPLE\\alice"])
    lines = tested.output.splitlines()
    assert tested.exit_code == 0, tested.output
    assert lines[1] == f"ok    connect   {samba_ad.ldaps_url}: ok, service bind as {samba_ad.service_dn}"
    assert lines[2].startswith(f"ok    user      alice: CN=Alice Liddell,CN=Users,{samba_ad.base_dn} (objectGUID ")
    assert lines[3] == "ok    groups    engineers, rnd, staff (in-chain search)"

    disabled = runner.invoke(cli, ["directory", "test", "dc", "--user", "dave"])
    assert disabled.exit_code == 1
    assert "FAIL  account   disabled" in disabled.output.splitlines()
    other = runner.invoke(cli, ["directory", "test", "dc", "--user", "OTHER\\alice"])
    assert other.exit_code == 1
    assert "FAIL  user      OTHER\\alice: unknown user (not a sign-in name this directory accepts)" in other.output

    assert login(app.test_client(), "alice@example.test", "alice-pw").status_code == 302
    assert db.session.scalar(select(User).where(User.username == "alice")).source == "dc"


def test_an_account_that_expires_after_signing_in_loses_its_session_at_revalidation(
    samba_ad: SambaAd, tmp_path: Path, with_directories: Callable[..., Flask], frozen_clock: Any
) -> None:
    """An expiry date is how AD lets a contractor go: the sessions of an account expired since its sign-in end at
    the next revalidation, as a disabled one's do."""
    app = with_directories(ad_config(samba_ad, tmp_path, revalidate_seconds=60))
    browser = app.test_client()
    assert login(browser, "hank", "hank-pw").status_code == 302
    assert browser.get("/portal").status_code == 200

    # The admin sets the account to expire an hour ago (accountExpires: 100 ns intervals since 1601).
    ago = int((frozen_clock() - timedelta(hours=1)).timestamp() + 11_644_473_600) * 10_000_000
    # (The admin's own tool, as the fixture's: the DC's certificate names DC1, not 127.0.0.1.)
    tls = ldap3.Tls(ca_certs_file=str(samba_ad.ca_file), validate=ssl.CERT_NONE)
    server = ldap3.Server(samba_ad.ldaps_url, tls=tls, get_info=ldap3.NONE)
    admin = ldap3.Connection(server, f"CN=Administrator,CN=Users,{samba_ad.base_dn}", ADMIN_PW, auto_bind=True)
    try:  # (not `with`: on a connection bound already, ldap3 leaves it open at the block's end)
        assert admin.modify(f"CN=hank,CN=Users,{samba_ad.base_dn}",
                            {"accountExpires": [(ldap3.MODIFY_REPLACE, [str(ago)])]}), admin.result
    finally:
        admin.unbind()

    frozen_clock.advance(seconds=61)
    resp = browser.get("/portal")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    [event] = [e for e in audit.events(type="user.revalidate") if e.username == "hank"]
    assert event.outcome == "failure" and event.reason == "account expired in the directory"
    status, page = sign_in(app, "hank", "hank-pw")
    assert status == 200 and "Your account has expired" in page

