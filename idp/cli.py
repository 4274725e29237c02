"""The ``idp`` command. Every subcommand reads the same ``IDP_*`` settings as the server."""

from __future__ import annotations

import sys
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup
from flask_migrate.cli import db as db_group

from idp import create_app
from idp.config import ConfigError
from idp.keys import KeyError_
from idp.runtime import keystore
from idp.runtime import settings as runtime_settings


def _app() -> Flask:
    try:
        return create_app()
    except (ConfigError, KeyError_) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


cli = FlaskGroup(
    name="idp", create_app=_app, add_default_commands=False, load_dotenv=False, set_debug_flag=False,
    help="Identity bridge: SAML 2.0 IdP over a built-in directory.",
)
cli.add_command(db_group)


@cli.command()
@click.option("--bind", metavar="HOST:PORT", help="Listen here instead of IDP_BASE_URL's host and port.")
@click.option("--workers", type=int, help="Worker processes (default IDP_WORKERS).")
def serve(bind: str | None, workers: int | None) -> None:
    """Run the bridge under gunicorn."""
    from gunicorn.app.base import BaseApplication

    settings = runtime_settings()
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    class _Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", bind or settings.bind)
            self.cfg.set("workers", workers or settings.workers)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", 4)
            self.cfg.set("accesslog", "-")

        def load(self) -> Any:
            return app

    _Gunicorn().run()


@cli.group()
def keys() -> None:
    """Signing keys."""


@keys.command("rotate")
def keys_rotate() -> None:
    """Publish a new key; run again to start signing with it."""
    try:
        click.echo(keystore().rotate())
    except KeyError_ as exc:
        raise click.ClickException(str(exc)) from exc


@keys.command("list")
def keys_list() -> None:
    """Show the keys and their states."""
    for key in keystore().ring().published:
        click.echo(f"{key.kid}\t{key.state}")


def main() -> None:
    cli.main(prog_name="idp")
