"""``idp admin token create|list|revoke``: tokens for the admin REST API."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from idp.admin import tokens
from idp.cli_support import actor
from idp.extensions import db

admin = AppGroup("admin", help="Administration: tokens for the admin REST API (/api/v1).")
token = AppGroup("token", help="Admin API tokens: shown once, stored hashed, scoped read or write.")
admin.add_command(token)


@token.command("create")
@click.option("--scope", type=click.Choice(tokens.SCOPES), required=True,
              help="read: GET only; write: everything the API does.")
@click.option("--name", default="api", show_default=True, help="What the token is for (shown in the audit log).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def create(scope: str, name: str, as_json: bool) -> None:
    """Create a token and print it once: it cannot be shown again."""
    created = tokens.create(name, scope, actor=actor())
    db.session.commit()
    if as_json:
        click.echo(json.dumps({"id": created.id, "name": created.name, "scope": created.scope,
                               "token": created.token}))
    else:
        click.echo(created.token)
        click.echo(f"token {created.id} ({created.scope}): store it now, it is not shown again", err=True)


@token.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json: bool) -> None:
    """List tokens (never their values)."""
    rows = [{"id": t.id, "name": t.name, "scope": t.scope, "created_by": t.created_by,
             "created_at": t.created_at.isoformat(),
             "last_used_at": t.last_used_at.isoformat() if t.last_used_at else None,
             "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None} for t in tokens.all_tokens()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no admin tokens")
    for r in rows:
        state = f"revoked {r['revoked_at']}" if r["revoked_at"] else f"last used {r['last_used_at'] or 'never'}"
        click.echo(f"{r['id']}\t{r['name']}\t{r['scope']}\t{state}")


@token.command("revoke")
@click.argument("token_id", type=click.IntRange(1, 2**31 - 1))  # a database id (INTEGER): larger is no token
def revoke(token_id: int) -> None:
    """Revoke a token at once."""
    tokens.revoke(token_id, actor=actor())
    db.session.commit()
    click.echo(f"token {token_id} revoked")
