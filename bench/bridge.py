"""Our server under load: a throwaway data dir configured with the `idp` CLI as an admin would, then
`idp serve` (gunicorn) on a free loopback port, signing with the benchmark's key."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from harness import (
    VENV_BIN,
    FlowError,
    Options,
    SetupError,
    SigningKey,
    expect,
    form,
    free_port,
    listener_pids,
    make_signing_key,
    run,
    start_server,
    stop,
    tail,
)
from slapd import Slapd

IDP = str(VENV_BIN / "idp")
# Log lines shown before the tail when a run had errors: audited refusals, warnings, errors.
_NOTABLE = ('"outcome": "failure"', '"level": "WARNING"', '"level": "ERROR"', "Traceback")


class Bridge:
    def __init__(self, tmp: Path, opts: Options, key: SigningKey) -> None:
        self.dir = tmp / "bridge"
        self.dir.mkdir()
        self.port = free_port()  # the CLI's; start() may move the server to another
        self.opts = opts
        self.log = self.dir / "server.log"
        self.env = {**os.environ, "IDP_DATA_DIR": str(self.dir), "IDP_BASE_URL": self.base,
                    "IDP_LOG_LEVEL": opts.log_level, "IDP_WORKERS": str(opts.workers),
                    "IDP_THREADS": str(opts.threads),
                    "IDP_SIGNING_KEY_FILE": str(key.key_file), "IDP_SIGNING_CERT_FILE": str(key.cert_file)}
        if opts.database_url:
            self.env["IDP_DATABASE_URL"] = opts.database_url
        if opts.redis_url:
            self.env["IDP_REDIS_URL"] = opts.redis_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.slapd: Slapd | None = None
        self._services = self._service_pids()
        # Setup commands wait here and run together (see idp_cli.py): at the first that needs an answer, or start().
        self._pending: list[tuple[list[str], str | None]] = [(["db", "upgrade"], None)] if opts.database_url else []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _service_pids(self) -> dict[str, list[int]]:
        """The user's PostgreSQL and Redis, when on this machine: their CPU is the bridge's too."""
        found: dict[str, list[int]] = {}
        for name, url, default in (("PostgreSQL", self.opts.database_url, 5432), ("Redis", self.opts.redis_url, 6379)):
            if not url:
                continue
            parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://"))
            pids = listener_pids(parts.port or default) if parts.hostname in ("127.0.0.1", "localhost", "::1") else []
            if not pids:
                print(f"  warning: {name} at {parts.hostname}:{parts.port or default} is not a local process here: "
                      "its CPU is not counted")
            found[name] = pids
        return found

    def idp(self, *args: str, input: str | None = None) -> None:
        """An `idp` command, run with the next batch."""
        self._pending.append((list(args), input))

    def flush(self) -> str:
        """Run the pending `idp` commands in one process; the last one's output."""
        batch, self._pending = self._pending, []
        if not batch:
            return ""
        results = json.loads(run([str(VENV_BIN / "python"), str(Path(__file__).with_name("idp_cli.py"))],
                                 env=self.env, input=json.dumps(batch)))
        for (args, _), result in zip(batch, results, strict=False):
            if result["status"]:
                hint = "\n(--database-url must name an empty database)" if self.opts.database_url else ""
                raise SetupError(f"idp {' '.join(args[:3])} ... failed ({result['status']}):\n"
                                 f"{result['stderr'].strip()}\n{result['stdout'].strip()}{hint}")
        return str(results[-1]["stdout"])

    def add_user(self, username: str, password: str) -> None:
        self.idp("user", "add", username, "--email", f"{username}@bench.example", "--given-name", "Bench",
                 "--family-name", "User", "--password-stdin", input=password + "\n")

    def add_sp(self, entity_id: str, metadata: str) -> None:
        path = self.dir / "sp.xml"
        path.write_text(metadata)
        self.idp("sp", "add", "--metadata", str(path))
        self.idp("app", "open-to-all", entity_id)

    def add_directory(self, slapd: Slapd) -> None:
        self.slapd = slapd
        self.idp("directory", "add", "corp", "--type", "ldap", "--url", slapd.url, "--base-dn", slapd.base_dn,
                 "--bind-dn", slapd.service_dn, "--bind-password-stdin", input=slapd.service_password + "\n")

    def add_oidc_client(self, redirect_uri: str) -> tuple[str, str]:
        self.idp("oidc-client", "add", "--name", "bench", "--redirect-uri", redirect_uri,
                 "--grant", "authorization_code", "--grant", "refresh_token", "--grant", "client_credentials",
                 "--first-party", "--open-to-all", "--json")
        reg = json.loads(self.flush())
        return str(reg["client_id"]), str(reg["client_secret"])

    def start(self) -> None:
        self.flush()

        def launch(port: int) -> subprocess.Popen[bytes]:
            self.port = port
            self.env["IDP_BASE_URL"] = self.base
            with open(self.log, "ab") as out:
                return subprocess.Popen([IDP, "serve"], env=self.env, stdout=out, stderr=subprocess.STDOUT)

        self.proc, _ = start_server("idp serve", self.log, launch)
        if requests.get(f"{self.base}/healthz", timeout=10).status_code != 200:
            raise SetupError(f"idp serve is not healthy:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def cpu_roots(self) -> list[int]:
        assert self.proc is not None
        roots = [self.proc.pid, *(pid for pids in self._services.values() for pid in pids)]
        return roots + ([self.slapd.pid] if self.slapd else [])

    def logs(self) -> str:
        # A refused flow is an audited failure or a warning, often long before the log's tail.
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        notable = [line for line in lines if any(mark in line for mark in _NOTABLE)][-10:]
        return "\n".join(["(failures and warnings)", *notable, "(the end)", tail(self.log)])

    def describe(self) -> str:
        parts = [f"gunicorn master + {self.opts.workers} workers x {self.opts.threads} threads"]
        parts += [name for name, pids in self._services.items() if pids]
        parts += ["slapd"] if self.slapd else []
        return ", ".join(parts)

    def label(self) -> str:
        stores = ["PostgreSQL" if self.opts.database_url else "SQLite"] + (["Redis"] if self.opts.redis_url else [])
        return (f"bridge (idp serve, {self.opts.workers} gunicorn workers x {self.opts.threads} threads, "
                f"{', '.join(stores)})")


def sign_in(http: requests.Session, base: str, username: str, password: str) -> None:
    """Sign in at the bridge's own login page: the SSO session the session flows start from."""
    page = expect(http.get(f"{base}/login", timeout=30), 200)
    login = form(page.text, "password")
    done = expect(http.post(urljoin(page.url, login.action), timeout=30,
                            data={**login.fields, "username": username, "password": password}), 200)
    if urlsplit(done.url).path == "/login":
        raise FlowError(f"sign-in as {username} refused: {done.text[:300]!r}")


@dataclass(frozen=True)
class Workspace:
    """One benchmark run's throwaway folder, signing key, our server set up in it, and the stack that stops the
    peers (and the server, last)."""

    tmp: Path
    key: SigningKey
    bridge: Bridge
    stack: contextlib.ExitStack


@contextlib.contextmanager
def workspace(opts: Options) -> Iterator[Workspace]:
    with tempfile.TemporaryDirectory(prefix="idp-bench-") as name, contextlib.ExitStack() as stack:
        tmp = Path(name)
        key = make_signing_key(tmp)
        bridge = Bridge(tmp, opts, key)
        stack.callback(bridge.stop)
        yield Workspace(tmp, key, bridge, stack)
