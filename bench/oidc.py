"""Benchmark: OpenID Connect on the bridge and on node's oidc-provider, the same client on both.

    code                the authorization code flow end to end for a user with an SSO session: the
                        authorization request (PKCE S256, nonce, state) answered with a code, then the code
                        exchanged at the token endpoint (client_secret_basic) for ID, access and refresh tokens
    refresh             the refresh token grant, each new refresh token used for the next (rotation)
    client-credentials  the client credentials grant

Prints, for each server, throughput, latency percentiles, the server's CPU seconds and flows per server
CPU-second; then the bridge against oidc-provider, against the raw RSA signing rate of the same key, and
what each server's token response holds (a JWT is one RSA signature). For client credentials the bridge's
client issues JWT access tokens (`--access-token-format jwt`), as oidc-provider does for a resource. For each
flow a third server is measured: the floor of this stack for it (bench/peers/floor_app.py, a minimal Flask OP
under the same gunicorn), with the floor against oidc-provider and the bridge against the floor.

    .venv/bin/python bench/oidc.py [code|refresh|client-credentials|all] [--seconds 10] [--clients 4]
        [--workers 2] [--rounds 1] [--short] [--database-url URL] [--redis-url URL]
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import harness
import requests
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from bridge import sign_in, workspace
from harness import FlowError, Options, Report, Server, SigningKey, expect, options, parser
from peers.floor import token_floor
from peers.oidc_provider import RESOURCE, Client, OidcProvider

USER, PASSWORD = "bench", "bench-password"
REDIRECT_URI = "https://rp.bench.example/callback"
SCOPE = "openid email profile"


@dataclass(frozen=True)
class Endpoints:
    """One server as the client sees it."""

    authorize_url: str
    token_url: str
    client: Client
    sign_in: Callable[[requests.Session], None]
    client_credentials: dict[str, str] = field(default_factory=dict)  # what the grant asks besides grant_type


def authorize(http: requests.Session, ep: Endpoints) -> tuple[str, str, int]:
    """An authorization request followed on the server (its sign-in steps, if any) until it redirects to the
    client: (code, PKCE verifier, HTTP requests made)."""
    verifier = secrets.token_urlsafe(48)
    challenge = create_s256_code_challenge(verifier)
    state = secrets.token_urlsafe(16)
    url = ep.authorize_url + "?" + urlencode({
        "response_type": "code", "client_id": ep.client.client_id, "redirect_uri": ep.client.redirect_uri,
        "scope": SCOPE, "state": state, "nonce": secrets.token_urlsafe(16), "code_challenge": challenge,
        "code_challenge_method": "S256"})
    for made in range(1, 10):
        resp = expect(http.get(url, allow_redirects=False, timeout=30), 302, 303)
        url = urljoin(url, resp.headers["Location"])
        if url.startswith(ep.client.redirect_uri):
            query = parse_qs(urlsplit(url).query)
            if "code" not in query or query.get("state") != [state]:
                raise FlowError(f"no code for our state in {url}")
            return query["code"][0], verifier, made
    raise FlowError("the authorization request never came back to the client")


def token(backchannel: requests.Session, ep: Endpoints, data: dict[str, str]) -> dict[str, Any]:
    """A token request as the client's server makes it: its own connection, none of the browser's cookies."""
    resp = expect(backchannel.post(ep.token_url, data=data, auth=(ep.client.client_id, ep.client.client_secret),
                                   timeout=30), 200)
    body: dict[str, Any] = resp.json()
    if not body.get("access_token"):
        raise FlowError(f"no access token in {body}")
    return body


@dataclass
class CodeFlow:
    ep: Endpoints
    last: dict[str, Any] = field(default_factory=dict)
    backchannel: requests.Session = field(default_factory=requests.Session)

    def setup(self, http: requests.Session) -> None:
        self.ep.sign_in(http)

    def once(self, http: requests.Session) -> int:
        code, verifier, made = authorize(http, self.ep)
        self.last = token(self.backchannel, self.ep, {"grant_type": "authorization_code", "code": code,
                                           "redirect_uri": self.ep.client.redirect_uri, "code_verifier": verifier})
        if not self.last.get("id_token"):
            raise FlowError("no ID token")
        return made + 1


@dataclass
class RefreshFlow:
    ep: Endpoints
    refresh_token: str = ""
    last: dict[str, Any] = field(default_factory=dict)
    backchannel: requests.Session = field(default_factory=requests.Session)

    def setup(self, http: requests.Session) -> None:
        first = CodeFlow(self.ep)
        first.setup(http)
        first.once(http)
        self.refresh_token = first.last.get("refresh_token", "")
        if not self.refresh_token:
            raise FlowError("the code flow gave no refresh token")

    def once(self, http: requests.Session) -> int:
        self.last = token(self.backchannel, self.ep, {"grant_type": "refresh_token",
                                                      "refresh_token": self.refresh_token})
        if not self.last.get("refresh_token"):
            raise FlowError("no new refresh token")
        self.refresh_token = self.last["refresh_token"]
        return 1


@dataclass
class ClientCredentialsFlow:
    ep: Endpoints
    last: dict[str, Any] = field(default_factory=dict)

    def setup(self, http: requests.Session) -> None:
        pass

    def once(self, http: requests.Session) -> int:
        self.last = token(http, self.ep, {"grant_type": "client_credentials", **self.ep.client_credentials})
        return 1


@dataclass(frozen=True)
class Benchmark:
    title: str
    unit: str
    flow: Callable[[Endpoints], CodeFlow | RefreshFlow | ClientCredentialsFlow]
    target: float  # the bound: bridge per CPU-second / oidc-provider's


BENCHMARKS = {
    "code": Benchmark("OIDC authorization code flow end to end, user with an SSO session", "code flows",
                      CodeFlow, 0.7),
    "refresh": Benchmark("OIDC refresh token grant (rotation)", "refreshes", RefreshFlow, 0.7),
    "client-credentials": Benchmark("OIDC client credentials grant", "tokens", ClientCredentialsFlow, 0.8),
}


def probe(flow: CodeFlow | RefreshFlow | ClientCredentialsFlow) -> dict[str, Any]:
    """One more flow, unmeasured, for what the token response holds."""
    http = requests.Session()
    flow.setup(http)
    flow.once(http)
    return flow.last


def shape(body: dict[str, Any]) -> tuple[str, int]:
    """What a token response holds, and how many JWTs (RSA signatures) that took."""
    def kind(name: str) -> str:
        value = body.get(name)
        return "-" if not value else "JWT" if str(value).count(".") == 2 else "opaque"

    kinds = {name: kind(name) for name in ("id_token", "access_token", "refresh_token")}
    return ", ".join(f"{k} {v}" for k, v in kinds.items()), sum(v == "JWT" for v in kinds.values())


def compare(report: Report, opts: Options, key: SigningKey, bench: Benchmark, ours: tuple[Server, Endpoints],
            theirs: tuple[Server, Endpoints], floor: tuple[Server, Endpoints]) -> None:
    report.title(bench.title, opts)
    ran = report.pair((ours[0], bench.flow(ours[1])), (theirs[0], bench.flow(theirs[1])), opts, bench.unit)
    report.ratio("bridge / oidc-provider, per server CPU-second", ran[0].per_cpu / ran[1].per_cpu,
                 f">= {bench.target}")
    # What the stack itself allows: the essential work of this flow, and nothing else, in Flask.
    least = report.measure(floor[0], bench.flow(floor[1]), opts, bench.unit)
    report.ratio("floor / oidc-provider, per server CPU-second", least.per_cpu / ran[1].per_cpu)
    report.ratio("bridge / floor, per server CPU-second", ran[0].per_cpu / least.per_cpu)
    our_shape, signatures = shape(probe(bench.flow(ours[1])))
    report.note(f"token response: bridge {our_shape}; oidc-provider {shape(probe(bench.flow(theirs[1])))[0]}; "
                f"floor {shape(probe(bench.flow(floor[1])))[0]}")
    report.rsa_reference(key, ran[0].per_cpu, signatures=signatures, seconds=0.3 if opts.short else 1.5)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("flow", nargs="?", choices=[*BENCHMARKS, "all"], default="all")
    args = p.parse_args()
    opts = options(args)
    report = Report()
    with workspace(opts) as ws:
        key, bridge = ws.key, ws.bridge
        bridge.add_user(USER, PASSWORD)
        client = Client(*bridge.add_oidc_client(REDIRECT_URI), REDIRECT_URI)
        bridge.start()
        node = OidcProvider(ws.tmp / "node", key, client, USER)
        ws.stack.callback(node.stop)
        node.start()

        ours = Endpoints(f"{bridge.base}/oauth/authorize", f"{bridge.base}/oauth/token", client,
                         functools.partial(sign_in, base=bridge.base, username=USER, password=PASSWORD))
        # oidc-provider's interaction page signs the user in at once (see oidc_provider.mjs): one authorization
        # request followed through it gives the client its session.
        def node_sign_in(http: requests.Session) -> None:
            authorize(http, theirs)

        theirs = Endpoints(node.authorize_url, node.token_url, client, node_sign_in,
                           client_credentials={"resource": RESOURCE, "scope": "api"})
        floor = token_floor(ws.tmp / "floor", key, client, USER, PASSWORD, opts)
        ws.stack.callback(floor.stop)
        floor.start()

        def floor_sign_in(http: requests.Session) -> None:
            expect(http.post(f"{floor.base}/login", data={"username": USER, "password": PASSWORD}, timeout=30), 200)

        least = Endpoints(f"{floor.base}/authorize", f"{floor.base}/token", client, floor_sign_in)
        for name in BENCHMARKS if args.flow == "all" else [args.flow]:
            # Like with like: oidc-provider's client-credentials access tokens are RS256 JWTs (RFC 9068), its
            # code-flow ones opaque.
            bridge.idp("oidc-client", "update", client.client_id, "--access-token-format",
                       "jwt" if name == "client-credentials" else "opaque")
            bridge.flush()
            compare(report, opts, key, BENCHMARKS[name], (bridge, ours), (node, theirs), (floor, least))
    report.exit()


if __name__ == "__main__":
    harness.main(main)
