"""``idp directory ...``: LDAP directories and Active Directory domains from the command line.

The service account's password comes from one line of stdin (``--bind-password-stdin``, stored encrypted)
or stays in a file the server reads (``--bind-password-file``); never from argv, which other local users can
read in the process list.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from flask.cli import AppGroup

from idp.authn.connectors import admin, bind_passwords, chain
from idp.cli_support import actor, stdin_line
from idp.errors import DirectoryUnavailable
from idp.extensions import db
from idp.text import unstorable_text


@click.group("directory", cls=AppGroup)
def directory() -> None:
    """Identity sources: LDAP directories (and the built-in one)."""


@directory.command("add")
@click.argument("name")
@click.option("--type", "kind", type=click.Choice(["ldap", "ad"]), default="ldap", show_default=True,
              help="ad: Active Directory (sAMAccountName/UPN/DOMAIN\\user, objectGUID, in-chain groups).")
@click.option("--url", "urls", multiple=True, required=True, metavar="URL",
              help="ldap://HOST[:PORT] or ldaps://HOST[:PORT]; repeat for failover, tried in this order.")
@click.option("--base-dn", required=True, metavar="DN")
@click.option("--bind-dn", metavar="DN", help="Service account for searches (search-then-bind).")
@click.option("--bind-password-stdin", is_flag=True, help="Read the service password from one line of stdin.")
@click.option("--bind-password-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the service password from this file at each start instead of storing it.")
@click.option("--user-filter", metavar="FILTER",
              help="Default (objectClass=inetOrgPerson); ad: (&(objectCategory=person)(objectClass=user)).")
@click.option("--username-attribute", metavar="ATTR", help="Default uid; ad: sAMAccountName.")
@click.option("--group-mode", type=click.Choice(["memberof", "member", "posix", "inchain"]),
              help="Where groups come from (default member: groupOfNames/groupOfUniqueNames search; "
                   "ad: inchain, every nested group in one search).")
@click.option("--ca-file", type=click.Path(dir_okay=False, path_type=Path), help="CA certificate(s) to trust (PEM).")
@click.option("--start-tls", is_flag=True, help="Upgrade ldap:// connections with StartTLS.")
@click.option("--allow-plaintext", is_flag=True,
              help="Allow ldap:// without StartTLS to another machine (passwords cross the network in clear).")
@click.option("--tls-server-name", metavar="HOST",
              help="The name the server certificate must carry when the URL's host is not it.")
@click.option("--timeout", type=click.FloatRange(0.1, 120), help="Seconds per connect and operation (default 5).")
@click.option("--group-cache-seconds", type=click.IntRange(0, 86400), metavar="N",
              help="Keep a user's groups this long between sign-ins (default 60; 0: ask the directory every time).")
@click.option("--revalidate-seconds", type=click.IntRange(0, 86400), metavar="N",
              help="Check a signed-in user against the directory again once the last check is this old "
                   "(default 300; 0: at every use of their session or tokens).")
@click.option("--domain", "domains", multiple=True, metavar="D",
              help="Route user@D and D\\user here (repeatable).")
@click.option("--no-probe", is_flag=True,
              help="Store it even if no server answers from here (/readyz, where it counts, reports unready until "
                   "one does).")
@click.option("--no-readiness", is_flag=True,
              help="Do not count it in /readyz: while it is down, its users and those of directories after it "
                   "cannot sign in; local users and those already signed in can.")
def directory_add(name: str, kind: str, urls: tuple[str, ...], base_dn: str, bind_dn: str | None,
                  bind_password_stdin: bool, bind_password_file: Path | None, user_filter: str | None,
                  username_attribute: str | None, group_mode: str | None, ca_file: Path | None, start_tls: bool,
                  allow_plaintext: bool, tls_server_name: str | None, timeout: float | None,
                  group_cache_seconds: int | None, revalidate_seconds: int | None, domains: tuple[str, ...],
                  no_probe: bool, no_readiness: bool) -> None:
    """Add an LDAP directory or an Active Directory domain to the sign-in chain."""
    if bind_password_stdin and bind_password_file:
        raise click.UsageError("use --bind-password-stdin or --bind-password-file, not both")
    password = None
    if bind_password_stdin:
        password = stdin_line()
        if not password:
            raise click.ClickException("no password on stdin")
        if unstorable_text(password):
            raise click.ClickException("the password on stdin is not UTF-8 text (or holds a NUL character)")
    if bind_password_file is not None and not no_probe:  # (a file only the pods see is for --no-probe)
        try:
            bind_passwords.read_file(bind_password_file, name)
        except DirectoryUnavailable as exc:
            raise click.ClickException(exc.reason.removeprefix(f"directory {name}: ")) from None
    values: dict[str, Any] = {
        "urls": list(urls), "base_dn": base_dn, "bind_dn": bind_dn, "bind_password_file": bind_password_file,
        "user_filter": user_filter, "username_attribute": username_attribute, "group_mode": group_mode,
        "ca_file": str(ca_file.resolve()) if ca_file else None, "start_tls": start_tls or None,
        "allow_plaintext": allow_plaintext or None,
        "tls_server_name": tls_server_name, "timeout": timeout,
        "group_cache_seconds": group_cache_seconds,
        "revalidate_seconds": revalidate_seconds, "domains": list(domains) or None,
        "readiness": False if no_readiness else None,
    }
    if bind_password_file is not None:
        values["bind_password_file"] = str(bind_password_file.resolve())
    unanswered = admin.add(name, kind, {k: v for k, v in values.items() if v is not None}, password,
                           actor=actor(), probe=not no_probe)
    db.session.commit()
    for server in unanswered:
        click.echo(f"warning: {server}", err=True)
    click.echo(f"directory '{name}' added; check it with: idp directory test {name} --user NAME")


@directory.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def directory_list(as_json: bool) -> None:
    """The sign-in chain, in the order it is tried."""
    items = [admin.describe(i) for i in chain.configured()]
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    for i, item in enumerate(items, start=1):
        where = ", ".join(item.get("urls", [])) or ("problems: " + "; ".join(item["problems"])
                                                     if "problems" in item else "")
        click.echo(f"{i}. {item['name']}  {item.get('type', '?')}  ({item['origin']})  {where}".rstrip())


@directory.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def directory_show(name: str, as_json: bool) -> None:
    """One directory's settings (the password only as where it is kept)."""
    data = admin.describe(admin.get(name))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        click.echo(f"{key.replace('_', ' ')}: {', '.join(map(str, value)) if isinstance(value, list) else value}")


@directory.command("remove")
@click.argument("name")
def directory_remove(name: str) -> None:
    """Take a directory (added with `directory add`) out of the chain; its users are disabled and signed out."""
    disabled = admin.remove(name, actor=actor())
    db.session.commit()
    click.echo(f"directory '{name}' removed; {disabled} of its user(s) disabled and signed out")


@directory.command("test")
@click.argument("name")
@click.option("--user", "username", help="Also look this user up and resolve their groups.")
def directory_test(name: str, username: str | None) -> None:
    """Check connection, service bind, user lookup and groups; exit 1 if anything failed."""
    report = admin.test(name, username)
    for step in report.steps:
        click.echo(f"{'ok  ' if step.ok else 'FAIL'}  {step.what:<8}  {step.detail}")
    if not report.ok:
        sys.exit(1)
