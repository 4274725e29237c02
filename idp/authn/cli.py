"""``idp user ...`` and ``idp group ...``: the built-in directory from the command line.

Passwords come from a hidden prompt or one line of stdin, never from argv (which other local users can
read in the process list and which lands in shell history).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask.cli import AppGroup

from idp.authn import directory, passwords
from idp.cli_support import actor, stdin_line
from idp.store import Group, User

F = TypeVar("F", bound=Callable[..., Any])


def _check_length(value: str) -> str:
    try:
        passwords.check_policy(value)
    except passwords.PasswordPolicyError as exc:
        raise click.UsageError(exc.message) from exc  # click.prompt shows it and asks again
    return value


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = stdin_line()
        if not password:
            raise click.ClickException("no password on stdin")
        try:
            passwords.check_policy(password)
        except passwords.PasswordPolicyError as exc:
            raise click.ClickException(exc.message) from exc
        return password
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True, value_proc=_check_length))


def _user_dict(user: User) -> dict[str, Any]:
    return {
        "username": user.username,
        "email": user.email,
        "given_name": user.given_name,
        "family_name": user.family_name,
        "display_name": user.display_name,
        "enabled": user.enabled,
        "groups": [g.name for g in user.groups],
        "has_password": user.password_hash is not None,
        "created_at": user.created_at.isoformat(),
    }


def _group_dict(group: Group) -> dict[str, Any]:
    return {"name": group.name, "description": group.description, "members": [u.username for u in group.members]}


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


password_stdin = click.option("--password-stdin", is_flag=True, help="Read the password from one line of stdin.")
json_flag = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group(cls=AppGroup)
def user() -> None:
    """Users of the built-in directory."""


@user.command("add")
@click.argument("username")
@click.option("--email")
@click.option("--given-name")
@click.option("--family-name")
@click.option("--display-name")
@click.option("--group", "groups", multiple=True, metavar="GROUP", help="Add to this group (repeatable).")
@password_stdin
def user_add(username: str, email: str | None, given_name: str | None, family_name: str | None,
             display_name: str | None, groups: tuple[str, ...], password_stdin: bool) -> None:
    """Add a user (asks for the password)."""
    # Refuse a bad name, a duplicate or an unknown group before asking for a password that would be thrown away.
    directory.check_new_user(username, groups, email=email, given_name=given_name, family_name=family_name,
                             display_name=display_name)
    password = read_password(password_stdin)
    created = directory.create_user(username, password=password, actor=actor(), groups=groups, email=email,
                                    given_name=given_name, family_name=family_name, display_name=display_name)
    click.echo(f"user '{created.username}' added")


@user.command("list")
@json_flag
def user_list(as_json: bool) -> None:
    """List users."""
    users = directory.list_users()
    if as_json:
        click.echo(json.dumps([_user_dict(u) for u in users], indent=2))
        return
    _table([[u.username, "yes" if u.enabled else "no", u.email or "", u.display_name or "",
             ",".join(g.name for g in u.groups)] for u in users],
           ["USERNAME", "ENABLED", "EMAIL", "DISPLAY NAME", "GROUPS"])


@user.command("show")
@click.argument("username")
@json_flag
def user_show(username: str, as_json: bool) -> None:
    """Show one user."""
    data = _user_dict(directory.require_user(username))
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        click.echo(f"{key.replace('_', ' ')}: {value if value is not None else ''}")


@user.command("disable")
@click.argument("username")
def user_disable(username: str) -> None:
    """Disable a user and end their sessions."""
    ended = directory.disable_user(username, actor=actor())
    click.echo(f"user '{directory.normalize_username(username)}' disabled ({ended} session(s) ended)")


@user.command("enable")
@click.argument("username")
def user_enable(username: str) -> None:
    """Enable a disabled user."""
    directory.enable_user(username, actor=actor())
    click.echo(f"user '{directory.normalize_username(username)}' enabled")


@user.command("set-password")
@click.argument("username")
@password_stdin
def user_set_password(username: str, password_stdin: bool) -> None:
    """Set a user's password (asks for it)."""
    directory.require_user(username)
    directory.set_password(username, read_password(password_stdin), actor=actor())
    click.echo(f"password of '{directory.normalize_username(username)}' changed")


@user.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def user_delete(username: str, yes: bool) -> None:
    """Delete a user (ends their sessions)."""
    name = directory.require_user(username).username
    if not yes:
        click.confirm(f"Delete user '{name}'?", abort=True)
    directory.delete_user(name, actor=actor())
    click.echo(f"user '{name}' deleted")


@click.group(cls=AppGroup)
def group() -> None:
    """Groups of the built-in directory."""


@group.command("add")
@click.argument("name")
@click.option("--description")
def group_add(name: str, description: str | None) -> None:
    """Add a group."""
    created = directory.create_group(name, description=description, actor=actor())
    click.echo(f"group '{created.name}' added")


@group.command("list")
@json_flag
def group_list(as_json: bool) -> None:
    """List groups and their members."""
    groups = directory.list_groups()
    if as_json:
        click.echo(json.dumps([_group_dict(g) for g in groups], indent=2))
        return
    _table([[g.name, str(len(g.members)), g.description or ""] for g in groups], ["NAME", "MEMBERS", "DESCRIPTION"])


@group.command("add-member")
@click.argument("group_name", metavar="GROUP")
@click.argument("username", metavar="USER")
def group_add_member(group_name: str, username: str) -> None:
    """Put a user in a group."""
    name = directory.normalize_username(username)
    if directory.add_member(group_name, username, actor=actor()):
        click.echo(f"user '{name}' added to group '{group_name}'")
    else:
        click.echo(f"user '{name}' is already a member of group '{group_name}'")


@group.command("remove-member")
@click.argument("group_name", metavar="GROUP")
@click.argument("username", metavar="USER")
def group_remove_member(group_name: str, username: str) -> None:
    """Take a user out of a group."""
    directory.remove_member(group_name, username, actor=actor())
    click.echo(f"user '{directory.normalize_username(username)}' removed from group '{group_name}'")
