"""The ``idp`` command. Every subcommand reads the same ``IDP_*`` settings as the server."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup
from flask_migrate.cli import db as db_group
from sqlalchemy.exc import SQLAlchemyError

from idp import audit, clock, create_app
from idp.access import cli as access_cli
from idp.admin import cli as admin_cli
from idp.audit import AuditEvent
from idp.audit import events as audit_events
from idp.authn.cli import group as group_group
from idp.authn.cli import user as user_group
from idp.authn.connectors.cli import directory as directory_group
from idp.cli_support import actor
from idp.config import ConfigError
from idp.errors import IdpError, concurrent_change, dependency_unavailable, first_line
from idp.extensions import db
from idp.keys import EC, RSA, KeyError_
from idp.oidc.cli import oidc_client as oidc_client_group
from idp.oidc.cli import oidc_consent as oidc_consent_group
from idp.runtime import keystore
from idp.runtime import settings as runtime_settings
from idp.saml.cli import sp as sp_group
from idp.text import unstorable_text


def _app() -> Flask:
    try:
        return create_app()
    except (ConfigError, KeyError_) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


class _Cli(FlaskGroup):
    """Shows a refusal from a service (unknown user, duplicate, bad metadata) as one line, exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        # Bytes that are not UTF-8 reach Python as lone surrogates, which no database, hash or file name takes:
        # one line here, not a traceback wherever the value is first written.
        for arg in (*ctx._protected_args, *ctx.args):
            if unstorable_text(arg):
                shown = arg.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")[:80]
                raise click.UsageError(f"the argument {shown!r} is not valid UTF-8 text", ctx)
        try:
            return super().invoke(ctx)
        except IdpError as exc:
            raise click.ClickException(exc.message) from exc
        except Exception as exc:
            if concurrent_change(exc):
                raise click.ClickException("this conflicts with a change made at the same time (by another "
                                           "command or an admin): look again, then run it again") from exc
            if not dependency_unavailable(exc):
                raise
            # One line, as the server answers 503: the driver's first line says which dependency and why.
            why = first_line(exc) or type(exc).__name__
            hint = (" (IDP_DATABASE_STATEMENT_TIMEOUT_SECONDS=0 lifts the limit for one command)"
                    if "statement timeout" in why else "")
            raise click.ClickException(f"a dependency did not answer: {why}{hint}") from exc


cli = _Cli(
    name="idp", create_app=_app, add_default_commands=False, load_dotenv=False, set_debug_flag=False,
    help="Identity bridge: SAML 2.0 IdP and OpenID Connect provider over the built-in directory, LDAP and Active "
         "Directory, with AWS account access.",
)
# FlaskGroup's own options (--app, --env-file, --debug, --version) would let a command run some other app.
cli.params = [p for p in cli.params if p.name not in ("app", "env_file", "debug", "version")]
cli.add_command(db_group)
cli.add_command(sp_group)
cli.add_command(user_group)
cli.add_command(group_group)
cli.add_command(directory_group)
cli.add_command(oidc_client_group)
cli.add_command(oidc_consent_group)
cli.add_command(admin_cli.admin)
for _command in (access_cli.ou, access_cli.account, access_cli.permission_set, access_cli.assign,
                 access_cli.unassign, access_cli.app, access_cli.access):
    cli.add_command(_command)


@cli.command()
@click.option("--bind", metavar="HOST:PORT", help="Listen here instead of IDP_BASE_URL's host and port.")
@click.option("--workers", type=int, help="Worker processes (default IDP_WORKERS).")
def serve(bind: str | None, workers: int | None) -> None:
    """Run the bridge under gunicorn."""
    from idp.ops import serving

    # Before gunicorn forks: every worker writes its metrics there, and /metrics in any of them sums them all.
    _serve(bind, workers, serving.share_metrics(runtime_settings().data_dir))


def _serve(bind: str | None, workers: int | None, metrics_dir: Path | None) -> None:
    """gunicorn over this app; ``metrics_dir`` (the workers' shared metrics folder) is removed at exit."""
    from gunicorn.app.base import BaseApplication

    from idp.logs import capture_warnings
    from idp.ops import instances, serving

    settings = runtime_settings()
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", bind or settings.bind)
            self.cfg.set("workers", workers or settings.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", settings.threads)
            self.cfg.set("graceful_timeout", serving.GRACEFUL_SECONDS)
            # Proxy headers are the app's to trust (IDP_TRUSTED_PROXY_HOPS, ProxyFix), never gunicorn's: by
            # default it lets any peer on 127.0.0.1 set the scheme (X-Forwarded-Proto) and SCRIPT_NAME.
            self.cfg.set("forwarded_allow_ips", "")
            self.cfg.set("accesslog", "-")
            # Gunicorn 25+'s control socket is one per home directory: a second instance would collide with it.
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)
            self.cfg.set("logger_class", serving.JsonLines if settings.log_format == "json" else serving.QuietProbes)
            self.cfg.set("child_exit", serving.worker_exited)
            self.cfg.set("on_exit", serving.remove_on_exit(metrics_dir))

        def load(self) -> Any:
            return app

    # Building the app (the embedded database's migration, the demo's seeding) left connections open, in the pool
    # or in the command's session: closed here, or every worker forked below would share them, which SQLite warns
    # corrupts the database.
    capture_warnings()
    instances.announce(force=True)
    db.session.remove()
    db.engine.dispose()
    _Gunicorn().run()


@cli.group()
def keys() -> None:
    """Signing keys."""


@keys.command("rotate")
@click.option("--type", "kind", type=click.Choice(["all", RSA, EC]), default="all", show_default=True,
              help="Which ring: rsa (SAML, RS256 ID tokens), ec (ES256 ID tokens) or both.")
def keys_rotate(kind: str) -> None:
    """Publish a new key; run again to start signing with it."""
    unaudited: list[str] = []
    for k in (RSA, EC) if kind == "all" else (kind,):
        store = keystore(k)
        if store.external and kind == "all":
            click.echo(f"{k}: keys come from {store.setting_name}; not rotated here")
            continue
        try:
            done = store.rotate()
        except KeyError_ as exc:
            raise click.ClickException("\n".join([*unaudited, str(exc)])) from exc
        # Said first: the key files have changed whatever the database does next, and an operator who ran the
        # command again unaware would move a key published a moment ago to signing.
        click.echo(f"{k}: {done.message}")
        step = "signing" if done.signing else "published"
        event = AuditEvent(type="keys.rotate", actor=actor(), details={"type": k, "kid": done.kid, "step": step})
        try:
            audit.record(event)
        except SQLAlchemyError as exc:
            db.session.rollback()
            unaudited.append(f"{k}: rotated, but not audited: {first_line(exc)}")
    if unaudited:
        raise click.ClickException("\n".join(unaudited))


@cli.command("instances")
def instances_list() -> None:
    """The instances that served from this database in the last day, and whether each has this command's secret
    key and keys (run it where an instance runs, with its settings)."""
    from idp.ops import instances

    try:
        listed = instances.seen()
    except KeyError_ as exc:
        raise click.ClickException(f"cannot read this command's keys to compare with: {first_line(exc)}") from exc
    now = clock.now()
    for found in listed:
        ago = max(0, int((now - found.seen_at).total_seconds()))
        agrees = "differs: " + ", ".join(found.differences) if found.differences else "same secret key and keys"
        click.echo(f"{found.instance.id}\t{found.instance.host}\tseen {ago}s ago\t{agrees}")


@keys.command("list")
def keys_list() -> None:
    """Show the keys and their states."""
    for k in (RSA, EC):
        for key in keystore(k).ring().published:
            # The key id tokens and JWKS name it by: a key from files has no kid of ours, but its thumbprint.
            click.echo(f"{key.jwk_kid}\t{key.state}\t{k}")



_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# audit prune refuses a newer time without --force.
_PRUNE_FLOOR = timedelta(days=1)


def parse_since(value: str, option: str = "--since") -> datetime:
    """``--since`` (or ``option``): ISO-8601 (a time without zone is UTC) or a span back from now such as 30m,
    2h, 7d."""
    text = value.strip()
    relative = _RELATIVE.fullmatch(text)
    try:
        if relative:
            return clock.now() - timedelta(**{_UNITS[relative.group(2)]: int(relative.group(1))})
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO-8601 time (2024-05-01T12:00:00Z) nor a span such as 30m, 2h, 7d",
            param_hint=option,
        ) from None
    except OverflowError:  # 99999999d, or a time near year 1 that UTC cannot hold
        raise click.BadParameter(f"{value!r} is further back than a date can go", param_hint=option) from None


@cli.group("audit")
def audit_group() -> None:
    """Audit events."""


@audit_group.command("list")
@click.option("--user", "username", help="Only events about this username.")
@click.option("--since", help="ISO-8601 time or a span back from now (30m, 2h, 7d).")
@click.option("--type", "type_", metavar="TYPE", help="Only events of this type (login, user.create, ...).")
@click.option("--limit", type=click.IntRange(1, 100000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines' array.")
def audit_list(username: str | None, since: str | None, type_: str | None, limit: int, as_json: bool) -> None:
    """Show audit events, newest first."""
    start = parse_since(since) if since is not None else None
    found = audit_events(username=username.strip().lower() if username else None, since=start, type=type_,
                         limit=limit)
    if as_json:
        rows = [{**asdict(e), "at": e.at.isoformat()} for e in found]
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for e in found:
        parts = [e.at.isoformat(), e.type, e.outcome]
        parts += [f"{k}={v}" for k, v in (("user", e.username), ("actor", e.actor), ("sp", e.sp),
                                            ("ip", e.client_ip), ("reason", e.reason)) if v]
        if e.details:
            parts.append(json.dumps(e.details, default=str, sort_keys=True))
        click.echo("  ".join(parts))


@audit_group.command("prune")
@click.option("--before", required=True, metavar="WHEN",
              help="Delete events older than this: ISO-8601 time or a span back from now (400d, 52w).")
@click.option("--force", is_flag=True, help=f"Allow a time less than {_PRUNE_FLOOR.days} day(s) back.")
def audit_prune(before: str, force: bool) -> None:
    """Delete old audit events (retention: run it from cron or a CronJob); the pruning is itself audited."""
    moment = parse_since(before, "--before")
    if moment > clock.now() - _PRUNE_FLOOR and not force:
        # 0s, a future date or a typo'd span would empty the audit trail.
        raise click.BadParameter(f"{before!r} would delete events of the last {_PRUNE_FLOOR.days} day(s); "
                                 "add --force if that is what you want", param_hint="--before")
    deleted = audit.prune(moment, actor=actor())
    click.echo(f"{deleted} audit event(s) deleted")


@cli.command()
@click.option("--bind", metavar="HOST:PORT", help="Listen here instead of IDP_BASE_URL's host and port.")
def demo(bind: str | None) -> None:
    """Seed demo users and groups (idempotent), print their passwords, and run the server."""
    from idp.demo import seed_demo
    from idp.ops import serving

    # The shared metrics folder first: seeding records audit events and hashes passwords, which make the metrics,
    # and prometheus_client decides at that first use whether they live in memory or in the folder.
    metrics_dir = serving.share_metrics(runtime_settings().data_dir)
    click.echo("Demo directory (demo passwords; never use this instance for real):")
    for user in seed_demo():
        click.echo(f"  {user.username:<8} password: {user.password:<16} groups: {', '.join(user.groups)}")
    click.echo(f"Sign in at {runtime_settings().base}/login")
    _serve(bind, None, metrics_dir)


def main() -> None:
    cli.main(prog_name="idp")
