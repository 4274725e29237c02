"""Runs a floor app (bench/peers/floor_app.py for the OIDC flows, saml_floor_app.py for SAML SSO) under
gunicorn with the bridge's worker settings."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import VENV_BIN, Launched, Options, SigningKey, start_server

from peers.oidc_provider import Client


class Floor(Launched):
    def __init__(self, directory: Path, opts: Options, module: str, what: str, tables: Sequence[str],
                 env: Callable[[int], dict[str, str]]) -> None:
        """``module`` is the app's module in this folder, ``what`` names it in the report; ``tables`` are the
        CREATE TABLE statements of its database; ``env(port)`` its settings."""
        self.dir = directory
        self.dir.mkdir()
        self.log = directory / "floor.log"
        self.opts, self.module, self.what, self.tables, self.env = opts, module, what, tables, env
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        database = self.dir / "floor.db"
        # WAL before the workers: two connections switching a new file to WAL at once fail with "database is
        # locked" (the busy timeout does not cover that switch).
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            for table in self.tables:
                conn.execute(table)
        conn.close()

        def launch(port: int) -> subprocess.Popen[bytes]:
            self.port = port
            env = {**os.environ, **self.env(port), "FLOOR_DATABASE": str(database)}
            with open(self.log, "ab") as out:
                # As `idp serve` runs the bridge: gthread workers, the same counts.
                return subprocess.Popen(
                    [str(VENV_BIN / "gunicorn"), "--worker-class", "gthread", "--workers", str(self.opts.workers),
                     "--threads", str(self.opts.threads), "--bind", f"127.0.0.1:{port}",
                     "--chdir", str(Path(__file__).parent.parent), f"peers.{self.module}:app"],
                    stdout=out, stderr=subprocess.STDOUT, env=env)

        self.proc, _ = start_server("the floor app", self.log, launch)

    def describe(self) -> str:
        return f"gunicorn master + {self.opts.workers} workers x {self.opts.threads} threads"

    def label(self) -> str:
        return f"floor: {self.what} under the same gunicorn (bench/peers/{self.module}.py)"


def token_floor(directory: Path, key: SigningKey, client: Client, username: str, password: str,
                opts: Options) -> Floor:
    """The OIDC floor: ``base + "/authorize"``, ``"/token"``, and ``"/login"`` (the session for the code flow)."""
    return Floor(directory, opts, "floor_app", "a minimal Flask OP",
                 ["CREATE TABLE audit_events (at REAL, type TEXT, client_id TEXT, details TEXT)",
                  "CREATE TABLE sessions (digest TEXT PRIMARY KEY, username TEXT, authn_at REAL, expires_at REAL)",
                  "CREATE TABLE codes (digest TEXT PRIMARY KEY, username TEXT, authn_at REAL, challenge TEXT, "
                  "nonce TEXT, scope TEXT, expires_at REAL)",
                  "CREATE TABLE tokens (access_digest TEXT PRIMARY KEY, refresh_digest TEXT UNIQUE, client_id TEXT, "
                  "username TEXT, scope TEXT, family TEXT, refresh_expires_at REAL, revoked INTEGER)"],
                 lambda port: {"FLOOR_KEY_FILE": str(key.key_file), "FLOOR_CLIENT_ID": client.client_id,
                               "FLOOR_CLIENT_SECRET": client.client_secret, "FLOOR_REDIRECT_URI": client.redirect_uri,
                               "FLOOR_USER": username, "FLOOR_PASSWORD": password,
                               "FLOOR_ISSUER": f"http://127.0.0.1:{port}"})


def saml_floor(directory: Path, key: SigningKey, sp_entity_id: str, acs_url: str, username: str,
               password: str, opts: Options) -> Floor:
    """The SAML SSO floor; its SSO endpoint is ``base + "/sso"``."""
    return Floor(directory, opts, "saml_floor_app", "a minimal Flask SAML SSO endpoint",
                 ["CREATE TABLE sessions (digest TEXT PRIMARY KEY, username TEXT, expires_at REAL)",
                  "CREATE TABLE consumed_ids (value TEXT PRIMARY KEY, expires_at REAL)",
                  "CREATE TABLE audit_events (at REAL, type TEXT, username TEXT, sp TEXT)"],
                 lambda port: {"FLOOR_KEY_FILE": str(key.key_file), "FLOOR_CERT_FILE": str(key.cert_file),
                               "FLOOR_SP_ENTITY_ID": sp_entity_id, "FLOOR_SP_ACS_URL": acs_url,
                               "FLOOR_USER": username, "FLOOR_PASSWORD": password,
                               "FLOOR_ISSUER": f"http://127.0.0.1:{port}/metadata"})
