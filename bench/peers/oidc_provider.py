"""node's oidc-provider, the OIDC benchmarks' peer: installed with npm on first use into bench/.peers/node
(gitignored), run as one node process on a free loopback port by bench/peers/oidc_provider.mjs."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import REPO, Launched, SigningKey, run, start_server

VERSION = "9.13.3"
PEERS = REPO / "bench" / ".peers" / "node"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")
RESOURCE = "https://api.bench.example"


def install() -> Path:
    """oidc-provider at VERSION under PEERS, and our script beside it (node resolves 'oidc-provider' from the
    importing file's folder). One process at a time (CI's two passes run the benchmarks at once): npm writes the
    package's package.json before its index.js, and another process that saw the first went on to a node that
    could not load it."""
    installed = PEERS / "node_modules" / "oidc-provider" / "package.json"
    PEERS.mkdir(parents=True, exist_ok=True)
    with open(PEERS / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not installed.exists() or json.loads(installed.read_text())["version"] != VERSION:
            run(["npm", "install", "--no-audit", "--no-fund", "--no-save", "--prefix", str(PEERS),
                 f"oidc-provider@{VERSION}"], timeout=600)
        script = PEERS / SCRIPT.name
        shutil.copyfile(SCRIPT, script)
    return script


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


def private_jwk(key: SigningKey) -> dict[str, str]:
    numbers = key.key.private_numbers()
    pub = numbers.public_numbers
    return {"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig", "n": _b64(pub.n), "e": _b64(pub.e),
            "d": _b64(numbers.d), "p": _b64(numbers.p), "q": _b64(numbers.q), "dp": _b64(numbers.dmp1),
            "dq": _b64(numbers.dmq1), "qi": _b64(numbers.iqmp)}


@dataclass(frozen=True)
class Client:
    client_id: str
    client_secret: str
    redirect_uri: str


class OidcProvider(Launched):
    def __init__(self, directory: Path, key: SigningKey, client: Client, username: str) -> None:
        self.dir = directory
        self.dir.mkdir()
        self.port = 0  # chosen at start
        self.log = directory / "node.log"
        self.config: dict[str, object] = {
            "jwk": private_jwk(key), "resource": RESOURCE,
            "cookie_key": secrets.token_urlsafe(32),
            "client": {"client_id": client.client_id, "client_secret": client.client_secret,
                       "redirect_uris": [client.redirect_uri], "response_types": ["code"],
                       "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
                       "token_endpoint_auth_method": "client_secret_basic", "id_token_signed_response_alg": "RS256"},
            "account": {"sub": username, "email": f"{username}@bench.example", "email_verified": True,
                        "name": "Bench User", "given_name": "Bench", "family_name": "User",
                        "preferred_username": username},
        }

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def authorize_url(self) -> str:
        return f"{self.base}/auth"

    @property
    def token_url(self) -> str:
        return f"{self.base}/token"

    def start(self) -> None:
        script = install()
        config = self.dir / "config.json"

        def launch(port: int) -> subprocess.Popen[bytes]:
            self.port = port
            config.write_text(json.dumps({**self.config, "issuer": self.base, "port": port}))
            with open(self.log, "ab") as out:
                return subprocess.Popen(["node", str(script), str(config)], stdout=out, stderr=subprocess.STDOUT,
                                        env={**os.environ, "NODE_ENV": "production"})

        self.proc, _ = start_server("node oidc-provider", self.log, launch)

    def describe(self) -> str:
        return "the node process"

    def label(self) -> str:
        node = run(["node", "--version"]).strip()
        return f"node {node} oidc-provider {VERSION} (one process, in-memory storage)"
