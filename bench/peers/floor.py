"""Runs bench/peers/floor_app.py under gunicorn with the bridge's worker settings (see that module)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from harness import VENV_BIN, Launched, Options, SigningKey, start_server

from peers.oidc_provider import Client


class Floor(Launched):
    def __init__(self, directory: Path, key: SigningKey, client: Client, opts: Options) -> None:
        self.dir = directory
        self.dir.mkdir()
        self.log = directory / "floor.log"
        self.key, self.client, self.opts = key, client, opts
        self.port = 0

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        database = self.dir / "floor.db"
        with sqlite3.connect(database) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS audit_events (at REAL, type TEXT, client_id TEXT, details TEXT)")
        conn.close()

        def launch(port: int) -> subprocess.Popen[bytes]:
            self.port = port
            env = {**os.environ, "FLOOR_KEY_FILE": str(self.key.key_file), "FLOOR_CLIENT_ID": self.client.client_id,
                   "FLOOR_CLIENT_SECRET": self.client.client_secret, "FLOOR_ISSUER": f"http://127.0.0.1:{port}",
                   "FLOOR_DATABASE": str(database)}
            with open(self.log, "ab") as out:
                # As `idp serve` runs the bridge: gthread workers, the same counts.
                return subprocess.Popen(
                    [str(VENV_BIN / "gunicorn"), "--worker-class", "gthread", "--workers", str(self.opts.workers),
                     "--threads", str(self.opts.threads), "--bind", f"127.0.0.1:{port}",
                     "--chdir", str(Path(__file__).parent), "floor_app:app"],
                    stdout=out, stderr=subprocess.STDOUT, env=env)

        self.proc, _ = start_server("the floor app", self.log, launch)

    def describe(self) -> str:
        return f"gunicorn master + {self.opts.workers} workers x {self.opts.threads} threads"

    def label(self) -> str:
        return "floor: a minimal Flask token endpoint under the same gunicorn (bench/peers/floor_app.py)"
