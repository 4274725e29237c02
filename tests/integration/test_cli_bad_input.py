"""What the command line is given that it cannot use gets one line and a non-zero exit, never a traceback, a
process that fills the memory, or something stored half-checked (found by fuzzing the CLI)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from click.testing import Result
from flask import Flask
from flask.testing import FlaskCliRunner
from helpers import IDP
from sqlalchemy import func, select

from idp.cli import cli
from idp.extensions import db
from idp.oidc import clients
from idp.store import Directory, ServiceProvider


def refused(runner: FlaskCliRunner, *args: str, input: str | None = None, code: int = 1) -> Result:
    result = runner.invoke(cli, list(args), input=input)
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # a refusal, not a crash
    return result


def test_arguments_that_are_not_utf8_are_named_not_a_traceback(tmp_path: Path) -> None:
    """A real process: bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape)."""
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path / "inst"), "IDP_LOG_FORMAT": "text"}
    for args in ([b"user", b"show", b"\xff"], [b"audit", b"list", b"--user", b"al\xfeice"]):
        done = subprocess.run([IDP.encode(), *args], env=env, capture_output=True, timeout=60, check=False)
        assert done.returncode == 2, done.stderr
        assert b"is not valid UTF-8 text" in done.stderr and b"Traceback" not in done.stderr
    # Under a UTF-8 locale a text stdin decodes strictly, and raised before anyone could say what was wrong.
    for io_encoding in ("utf-8", "ascii"):
        done = subprocess.run([IDP, "user", "add", "ubin", "--password-stdin"], capture_output=True,
                              env={**env, "PYTHONIOENCODING": io_encoding}, input=b"\xff\xfe-password-long\n",
                              timeout=60, check=False)
        assert done.returncode == 1 and b"password must be text" in done.stderr, done.stderr
        assert b"Traceback" not in done.stderr


def test_files_are_read_no_further_than_their_limit(app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    # /dev/zero never ends and says it is empty: read whole, it filled the memory at 1.3 GB a second.
    assert "/dev/zero is larger than 1048576 bytes" in refused(runner, "sp", "add", "--metadata", "/dev/zero").output
    assert db.session.scalar(select(func.count()).select_from(ServiceProvider)) == 0
    jwks = ["oidc-client", "add", "--name", "x", "--grant", "client_credentials", "--auth-method", "private_key_jwt",
            "--jwks-file"]
    assert "/dev/zero is larger than 1048576 bytes" in refused(runner, *jwks, "/dev/zero").output
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert f"{deep} is not JSON: nested too deeply" in refused(runner, *jwks, str(deep)).output
    assert clients.all_clients() == []


def test_a_token_number_no_database_holds_is_a_usage_error(app: Flask, runner: FlaskCliRunner) -> None:
    result = refused(runner, "admin", "token", "revoke", "99999999999999999999", code=2)
    assert "is not in the range" in result.output


def test_a_bind_password_file_that_is_empty_or_not_text_is_refused_at_add(
        app: Flask, runner: FlaskCliRunner, tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xf5\x00\xff")
    add = ["directory", "add", "corp", "--base-dn", "dc=example,dc=com", "--bind-dn", "cn=bridge",
           "--url", "ldap://127.0.0.1:1", "--bind-password-file"]  # (with --no-probe, the pods' file to read)
    # An empty password makes a simple bind anonymous (RFC 4513 5.1.2).
    assert f"bind_password_file {tmp_path / 'empty'} is empty" in refused(runner, *add, str(tmp_path / "empty")).output
    assert f"bind_password_file {tmp_path / 'binary'} is not UTF-8 text" in refused(
        runner, *add, str(tmp_path / "binary")).output
    assert db.session.scalar(select(func.count()).select_from(Directory)) == 0


def test_names_and_descriptions_with_control_characters_are_refused(app: Flask, runner: FlaskCliRunner) -> None:
    """An escape sequence in a name reaches the admin's terminal as a command, and a newline breaks the one-row-
    per-line listings; a description may hold newlines, not the rest."""
    esc = "Ops\x1b[31m"
    refused(runner, "group", "add", "ops", "--description", esc)
    refused(runner, "oidc-client", "add", "--name", esc, "--redirect-uri", "https://c.example.test/cb")
    refused(runner, "account", "add", "111122223333", "--name", "Prod\nx",
            "--saml-provider-arn", "arn:aws:iam::111122223333:saml-provider/bridge")
    refused(runner, "admin", "token", "create", "--scope", "read", "--name", "ci\nbot")
    assert "may not contain a control character" in refused(
        runner, "permission-set", "add", "Admin", "--session-duration", "1", "--description", esc).output
    assert runner.invoke(cli, ["group", "add", "ops", "--description", "line one\nline two"]).exit_code == 0
    assert clients.all_clients() == []


def test_a_misspelt_setting_is_named_with_the_one_it_resembles(tmp_path: Path) -> None:
    """IDP_DATABASE_UR for IDP_DATABASE_URL leaves the database at its default, an embedded SQLite file: said at
    start, with the setting meant, rather than found out when the data is gone."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("IDP_")}, "IDP_DATA_DIR": str(tmp_path),
           "IDP_LOG_FORMAT": "text", "IDP_DATABASE_UR": "postgresql://db/idp", "IDP_WORKERS": "2"}
    done = subprocess.run([IDP, "user", "list"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert ("IDP_DATABASE_UR is no setting of the bridge and is ignored; did you mean IDP_DATABASE_URL?"
            in done.stderr)
    assert "IDP_WORKERS" not in done.stderr and "IDP_DATA_DIR" not in done.stderr
