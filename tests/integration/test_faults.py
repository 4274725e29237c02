"""Production mode under faults: two `idp serve` instances (gunicorn, two workers each) behind haproxy, on a
PostgreSQL and a Redis this test starts itself (tests/services.py), so that stopping them cannot touch the
suite's. Each dependency is restarted under traffic, then stopped: while it is down, every request that needs
it answers 503 with Retry-After and a readable page (never a 500, a hang or a stack trace), /readyz names it
and /healthz stays up. Once it is back, the same browsers' cookies sign in to the SP without a login page,
the same tokens and codes are honoured, and no session was lost or duplicated.

Users sign in as real peers make them: at a python3-saml SP, and at an authlib OpenID Connect client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from cluster import Cluster, access_statuses, serve_cluster
from helpers import csrf_token, free_port, make_user, migrate, session_counts
from oidc_peers import PASSWORD, REDIRECT_URI, Arrival, AuthlibRp, Authorization, browse, register, rp, start
from saml_peers import (
    SP_SLO_URL,
    OneLoginSp,
    idp_metadata,
    is_login_page,
    read_post_form,
    register_sp,
    submit_login,
)
from services import PostgresServer, RedisServer
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from idp import create_app
from idp.authn.session import COOKIE
from idp.config import Settings
from idp.extensions import db
from idp.oidc.clients import Registered

RELAY = "https://sp.example.test/after"
# alice and bob sign in at the SAML SP, carol at the OIDC client, dave only once the outage is over.
USERS = ("alice", "bob", "carol", "dave")
# How long a request may take while a dependency is down: an answer, not a hang.
PROMPT = 5.0


@dataclass
class Stores:
    pg: PostgresServer
    redis: RedisServer

    def start(self, dependency: str) -> None:
        (self.pg if dependency == "database" else self.redis).start()

    def stop(self, dependency: str) -> None:
        (self.pg if dependency == "database" else self.redis).stop()

    def restart(self, dependency: str) -> None:
        if dependency == "database":
            self.pg.restart()  # pg_ctl restart -m fast: open connections are cut
        else:
            self.redis.stop()
            self.redis.start()

    def freeze(self, dependency: str) -> None:
        (self.pg if dependency == "database" else self.redis).freeze()

    def thaw(self, dependency: str) -> None:
        (self.pg if dependency == "database" else self.redis).thaw()


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, signing_files: tuple[Path, Path]) -> Iterator[Stores]:
    """This module's own PostgreSQL (migrated) and Redis, started once."""
    pg = PostgresServer()
    redis_server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        pg.start()
        redis_server.start()
        migrate(Settings(data_dir=tmp_path_factory.mktemp("migrate"), database_url=pg.url,
                         signing_key_file=signing_files[0], signing_cert_file=signing_files[1], log_format="text"))
        yield Stores(pg, redis_server)
    finally:
        redis_server.kill()
        pg.remove()


def _reset(stores: Stores) -> None:
    """Both running (a failed test may have left one stopped) and empty."""
    if not stores.pg.running:
        stores.pg.start()
    if not stores.redis.running:
        stores.redis.start()
    engine = create_engine(stores.pg.url)
    with engine.begin() as conn:
        tables = [r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname='public' AND tablename <> 'alembic_version'"))]
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    engine.dispose()
    with redis.Redis.from_url(stores.redis.url) as client:
        client.flushdb()


@dataclass
class Production:
    cluster: Cluster
    stores: Stores
    sp: OneLoginSp
    code_client: Registered
    machine: Registered

    @property
    def token_url(self) -> str:
        return self.cluster.url + "/oauth/token"


@pytest.fixture
def prod(stores: Stores, tmp_path: Path, signing_files: tuple[Path, Path]) -> Iterator[Production]:
    _reset(stores)
    # The test's own app, on the same database and Redis: it registers the peers and counts the sessions.
    app = create_app(Settings(data_dir=tmp_path, database_url=stores.pg.url, redis_url=stores.redis.url,
                              signing_key_file=signing_files[0], signing_cert_file=signing_files[1],
                              secret_key="test-secret-key-of-32-characters-or-more", log_format="text"))
    folder = tmp_path / "cluster"
    folder.mkdir()
    with app.app_context():
        try:
            with serve_cluster(folder, signing_files, stores.pg.url, stores.redis.url, workers=2) as cluster:
                sp = OneLoginSp(idp_metadata(cluster.url))
                register_sp(sp.metadata())
                for user in USERS:
                    make_user(user, PASSWORD)
                code_client = register()
                machine = register(name="reports job", grant_types=("client_credentials",), redirect_uris=())
                yield Production(cluster, stores, sp, code_client, machine)
                # Whatever happened, no answer was a server error but 503, and nothing logged a stack trace.
                for name, served in cluster.instances.items():
                    errors = [line for line in access_statuses(served) if line[2] >= 500 and line[2] != 503]
                    assert errors == [], f"instance {name}: {errors}"
                    assert "Traceback" not in served.output(), f"instance {name} logged a stack trace"
        finally:
            db.session.remove()
            db.engine.dispose()


# --- the peers' side ---------------------------------------------------------------------------------------

def browser() -> requests.Session:
    """A session that asks for pages as a browser does: error pages come as HTML, not JSON."""
    http = requests.Session()
    http.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    return http


def saml_sso(prod: Production, http: requests.Session) -> tuple[requests.Response, str]:
    """The SP sends the browser to the IdP with a new AuthnRequest: (what the browser ends on, the request ID)."""
    url, request_id = prod.sp.redirect_login(RELAY)
    return http.get(url, timeout=10), request_id


def assert_sp_signed_in(prod: Production, page: requests.Response, request_id: str, user: str) -> None:
    assert page.status_code == 200, (page.status_code, page.text[:500])
    assert not is_login_page(page), "asked for a password again"
    auth = prod.sp.process_response(read_post_form(page.text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.get_nameid() == user


def saml_sign_in(prod: Production, user: str) -> requests.Session:
    http = browser()
    page, request_id = saml_sso(prod, http)
    assert is_login_page(page)
    assert_sp_signed_in(prod, submit_login(http, page, user, PASSWORD), request_id, user)
    return http


def token_request(prod: Production, reg: Registered, **data: str) -> requests.Response:
    assert reg.client_secret is not None
    return requests.post(prod.token_url, auth=(reg.client_id, reg.client_secret), data=data, timeout=10)


def ready_at(prod: Production) -> requests.Response:
    """/readyz as a kubelet asks it: of an instance, not through the load balancer (which gets 404)."""
    return requests.get(prod.cluster.instances["a"].url + "/readyz", timeout=10)


def assert_unavailable(resp: requests.Response, what: str) -> None:
    """A clean 503: retry later, a readable message, no trace, and the browser's session cookie left alone."""
    assert resp.status_code == 503, f"{what}: {resp.status_code} {resp.text[:1000]}"
    assert resp.headers.get("Retry-After", "").isdigit(), f"{what}: no Retry-After"
    assert "briefly unavailable" in resp.text, f"{what}: {resp.text[:1000]}"
    browsing = "text/html" in str(resp.request.headers.get("Accept"))
    assert resp.headers["Content-Type"].startswith("text/html" if browsing else "application/json"), what
    assert "Traceback" not in resp.text and 'File "' not in resp.text, f"{what}: {resp.text[:1000]}"
    assert COOKIE not in resp.headers.get("Set-Cookie", ""), f"{what} touched the session cookie"


@dataclass
class SignedIn:
    """Everyone signed in before the fault, and what they hold."""

    browsers: dict[str, requests.Session]  # alice and bob at the SAML SP, carol at the OIDC client
    cookies: dict[str, str]  # their session cookies
    oidc: AuthlibRp  # carol's client
    tokens: dict[str, Any]  # carol's first tokens
    code: tuple[Authorization, Arrival]  # a code carol has been given and the client not yet redeemed
    login_page: tuple[requests.Session, requests.Response, str]  # dave's, not yet posted, and its request ID


def sign_everyone_in(prod: Production) -> SignedIn:
    browsers = {user: saml_sign_in(prod, user) for user in ("alice", "bob")}
    carol = browsers["carol"] = browser()
    client = rp(prod.cluster.url, prod.code_client)
    first = start(client)
    arrival = browse(carol, first.url, username="carol")
    assert arrival.login_prompts == 1
    tokens = client.fetch_token(prod.token_url, authorization_response=arrival.url, code_verifier=first.verifier,
                                state=first.state)
    assert tokens["refresh_token"]
    second = start(client)
    pending = browse(carol, second.url, username=None)  # no password asked: carol's session
    dave = browser()
    page, request_id = saml_sso(prod, dave)
    assert is_login_page(page)
    return SignedIn(browsers, {user: http.cookies[COOKIE] for user, http in browsers.items()}, client, tokens,
                    (second, pending), (dave, page, request_id))


# --- traffic while a dependency goes away and comes back -------------------------------------------------

@dataclass
class Traffic:
    """SAML SSO with alice's session, and client-credentials tokens, sent over and over from two threads: each
    request is answered as if nothing happened, or with a clean 503; none sent after ``back`` fails."""

    prod: Production
    alice: requests.Session
    answers: list[tuple[float, str, int]] = field(default_factory=list)  # (sent at, what, status)
    problems: list[str] = field(default_factory=list)
    back: float = float("inf")
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for loop in (self._sso, self._client_credentials):
            self._threads.append(threading.Thread(target=self._run, args=(loop,), daemon=True))
            self._threads[-1].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, loop: Callable[[], tuple[str, requests.Response]]) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                what, resp = loop()
                self.answers.append((sent, what, resp.status_code))
                if resp.status_code == 503:
                    assert_unavailable(resp, what)
                    assert sent < self.back, f"{what} sent after the dependency was back: 503"
            except Exception as exc:  # every failure is a finding, reported by check()
                self.problems.append(f"{type(exc).__name__}: {exc}")

    def _sso(self) -> tuple[str, requests.Response]:
        page, request_id = saml_sso(self.prod, self.alice)
        if page.status_code != 503:
            assert_sp_signed_in(self.prod, page, request_id, "alice")
        return "SAML SSO", page

    def _client_credentials(self) -> tuple[str, requests.Response]:
        resp = token_request(self.prod, self.prod.machine, grant_type="client_credentials")
        if resp.status_code != 503:
            assert resp.status_code == 200 and resp.json()["access_token"], resp.text[:500]
        return "client credentials", resp

    def check(self) -> None:
        assert self.problems == [], self.problems[:5]
        after = [status for sent, _, status in self.answers if sent >= self.back]
        assert after and set(after) == {200}, self.answers


# --- the test ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dependency", ["database", "redis"])
def test_requests_fail_cleanly_while_a_dependency_is_down_and_no_session_is_lost(
        prod: Production, dependency: str) -> None:
    world = sign_everyone_in(prod)
    before = session_counts(USERS)
    assert before == {"alice": 1, "bob": 1, "carol": 1, "dave": 0}

    # Restarted mid-run: connections in the instances' pools die under them.
    with Traffic(prod, world.browsers["alice"]) as traffic:
        time.sleep(0.5)
        prod.stores.restart(dependency)
        traffic.back = time.monotonic()
        time.sleep(1.0)
    traffic.check()

    prod.stores.stop(dependency)
    try:
        answers = while_down(prod, world)
    finally:
        prod.stores.start(dependency)
    for what, (_, elapsed) in answers.items():
        assert elapsed < PROMPT, f"{what} took {elapsed:.1f} s"
    ready = answers.pop("/readyz")[0]
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"keys": "ok", "database": "error" if dependency == "database" else "ok",
                                      "redis": "error" if dependency == "redis" else "ok", "directories": {}}
    for what, (resp, _) in answers.items():
        if what in works_without(dependency):
            assert resp.status_code == 200, f"{what}: {resp.status_code} {resp.text[:500]}"
        else:
            assert_unavailable(resp, what)
    if "refresh" in works_without(dependency):  # rotated: the new refresh token is the one to use
        world.tokens = answers["refresh"][0].json()

    after_recovery(prod, world)
    assert session_counts(USERS) == {**before, "dave": 1}


def while_down(prod: Production, world: SignedIn) -> dict[str, tuple[requests.Response, float]]:
    """Every kind of request, each timed."""
    client, (authorization, arrival) = world.oidc, world.code
    dave, page, _ = world.login_page
    requests_: dict[str, Callable[[], requests.Response]] = {
        "/readyz": lambda: ready_at(prod),
        "SAML SSO with a session": lambda: saml_sso(prod, world.browsers["alice"])[0],
        "the sign-in page of a SAML request": lambda: saml_sso(prod, browser())[0],
        "a password sign-in": lambda: submit_login(dave, page, "dave", PASSWORD),
        "the portal with a session": lambda: world.browsers["bob"].get(prod.cluster.url + "/portal", timeout=10),
        "OIDC authorization with a session": lambda: world.browsers["carol"].get(
            start(client).url, allow_redirects=False, timeout=10),
        "code exchange": lambda: token_request(
            prod, prod.code_client, grant_type="authorization_code", code=arrival.params["code"],
            redirect_uri=REDIRECT_URI, code_verifier=authorization.verifier),
        "refresh": lambda: token_request(prod, prod.code_client, grant_type="refresh_token",
                                         refresh_token=world.tokens["refresh_token"]),
        "client credentials": lambda: token_request(prod, prod.machine, grant_type="client_credentials"),
    }
    answers: dict[str, tuple[requests.Response, float]] = {}
    for what, send in requests_.items():
        started = time.monotonic()
        answers[what] = (send(), time.monotonic() - started)
    for served in prod.cluster.instances.values():  # each instance's process is up
        alive = requests.get(served.url + "/healthz", timeout=10)
        assert (alive.status_code, alive.text) == (200, "ok\n")
    return answers


def works_without(dependency: str) -> set[str]:
    """Requests that need nothing from the stopped dependency, and so are served."""
    return {"client credentials", "refresh"} if dependency == "redis" else set()


def after_recovery(prod: Production, world: SignedIn) -> None:
    """Right away, without retrying: the same cookies, codes and tokens work, and dave's sign-in goes through
    with the login form he had before the outage."""
    assert ready_at(prod).status_code == 200
    for user in ("alice", "bob"):
        page, request_id = saml_sso(prod, world.browsers[user])
        assert_sp_signed_in(prod, page, request_id, user)
    client, (authorization, arrival) = world.oidc, world.code
    token = client.fetch_token(prod.token_url, authorization_response=arrival.url,
                               code_verifier=authorization.verifier, state=authorization.state)
    assert client.parse_id_token(token, nonce=authorization.nonce)["preferred_username"] == "carol"
    assert client.refresh_token(prod.token_url, refresh_token=world.tokens["refresh_token"])["access_token"]
    again = start(client)
    assert browse(world.browsers["carol"], again.url, username=None).login_prompts == 0
    assert token_request(prod, prod.machine, grant_type="client_credentials").status_code == 200
    for user, cookie in world.cookies.items():
        assert world.browsers[user].cookies[COOKIE] == cookie, f"{user}'s session cookie changed"
    dave, page, request_id = world.login_page
    assert_sp_signed_in(prod, submit_login(dave, page, "dave", PASSWORD), request_id, "dave")


@pytest.mark.parametrize("dependency", ["database", "redis"])
def test_a_hung_dependency_is_answered_503_within_seconds(prod: Production, dependency: str) -> None:
    alice = saml_sign_in(prod, "alice")
    # Restarted first, so that no pooled connection survives: every request has to open one, and the server
    # accepts it (the kernel does) but never answers.
    prod.stores.restart(dependency)
    prod.stores.freeze(dependency)
    try:
        probes: dict[str, Callable[[], requests.Response]] = {
            "SAML SSO with a session": lambda: saml_sso(prod, alice)[0],
            "the sign-in page of a SAML request": lambda: saml_sso(prod, browser())[0],
        }
        for what, send in probes.items():
            started = time.monotonic()
            resp = send()
            assert time.monotonic() - started < PROMPT, f"{what} hung"
            assert_unavailable(resp, what)
        ready = ready_at(prod)
        assert ready.status_code == 503 and ready.json()["checks"][dependency] == "error"
    finally:
        prod.stores.thaw(dependency)
    page, request_id = saml_sso(prod, alice)
    assert_sp_signed_in(prod, page, request_id, "alice")


@pytest.mark.parametrize("refusal", ["full", "replica"])
def test_a_redis_that_refuses_writes_is_answered_503_until_it_takes_them_again(prod: Production,
                                                                              refusal: str) -> None:
    """Redis up but refusing writes: full under noeviction (its maxmemory reached), or a replica (a failover
    that demoted it). Every request that writes to it is a clean 503, and works again once it takes writes."""
    alice = saml_sign_in(prod, "alice")
    logout_form = csrf_token(alice.get(prod.cluster.url + "/logout", timeout=10).text)
    with redis.Redis.from_url(prod.stores.redis.url) as client:
        if refusal == "full":
            client.config_set("maxmemory", 1)
        else:
            for _ in range(8):  # every worker with a connection of its own, most likely
                saml_sso(prod, browser())
            before = _bridge_connections(client)
            client.replicaof("127.0.0.1", str(free_port()))  # a master that never answers: read-only meanwhile
        try:
            # A SAML request parked for a browser that has no session yet is a write.
            for _ in range(12):
                page, _ = saml_sso(prod, browser())
                assert_unavailable(page, f"SSO with a {refusal} Redis")
            # Ending a session is a transaction that watches its keys: refused at once too, not tried again.
            signed_out = alice.post(prod.cluster.url + "/logout", data={"csrf_token": logout_form}, timeout=PROMPT)
            assert_unavailable(signed_out, f"logout with a {refusal} Redis")
            if refusal == "replica":
                # The connections that met a replica were closed: the next ones connect afresh, to the new
                # primary after a failover behind one address (a full Redis is the same server after).
                deadline = time.monotonic() + 2
                while before <= _bridge_connections(client):
                    assert time.monotonic() < deadline, f"{before} all open after read-only refusals"
                    time.sleep(0.05)
        finally:
            if refusal == "full":
                client.config_set("maxmemory", 0)
            else:
                client.replicaof("NO", "ONE")
    saml_sign_in(prod, "bob")
    signed_out = alice.post(prod.cluster.url + "/logout", data={"csrf_token": logout_form}, timeout=10,
                            allow_redirects=False)
    assert signed_out.status_code == 302 and signed_out.headers["Location"].startswith(SP_SLO_URL)  # on to the SP


def test_connections_left_on_a_read_only_database_are_replaced(prod: Production) -> None:
    """A failover that demotes the primary to a standby leaves every pooled connection on a server that refuses
    writes, while new connections reach the new primary. Made here with one server: the open sessions turn
    read-only (the server's setting, reloaded), new ones are writable (the database's own setting, which
    outranks it). A worker answers 503 at its first refused write and connects afresh; then writes work."""
    for _ in range(8):  # most workers with a pooled connection
        assert token_request(prod, prod.machine, grant_type="client_credentials").status_code == 200
    database = make_url(prod.stores.pg.url).database
    # Its own setting (SET outranks both): it must write while the others cannot.
    admin = create_engine(prod.stores.pg.url, isolation_level="AUTOCOMMIT",
                          connect_args={"options": "-c default_transaction_read_only=off"})
    # A session opened before, as the pooled ones were: the reload reaches it when they are reached too.
    witness = create_engine(prod.stores.pg.url, poolclass=NullPool)
    with admin.connect() as conn, witness.connect() as seen:
        conn.execute(text(f'ALTER DATABASE "{database}" SET default_transaction_read_only = off'))
        conn.execute(text("ALTER SYSTEM SET default_transaction_read_only = on"))
        conn.execute(text("SELECT pg_reload_conf()"))
        deadline = time.monotonic() + 5
        while seen.execute(text("SHOW default_transaction_read_only")).scalar_one() != "on":
            assert time.monotonic() < deadline, "the open sessions never turned read-only"
            time.sleep(0.05)
        seen.rollback()
    witness.dispose()
    try:
        answers = [token_request(prod, prod.machine, grant_type="client_credentials") for _ in range(24)]
    finally:
        with admin.connect() as conn:
            conn.execute(text("ALTER SYSTEM RESET default_transaction_read_only"))
            conn.execute(text(f'ALTER DATABASE "{database}" RESET default_transaction_read_only'))
            conn.execute(text("SELECT pg_reload_conf()"))
        admin.dispose()
    statuses = [a.status_code for a in answers]
    # At most one refused write per worker (two instances of two workers: the first empties its pool), however
    # many requests each worker answers; every other request gets its token.
    assert set(statuses) <= {200, 503} and statuses.count(503) <= 4, statuses
    assert 503 in statuses, "no pooled connection was read-only: the test did not test anything"
    for answer in answers:
        if answer.status_code == 503:
            assert_unavailable(answer, "a token on a read-only connection")


def _bridge_connections(client: redis.Redis) -> set[str]:
    """The ids of the connections to Redis other than ``client``'s own."""
    own = client.client_id()
    return {str(c["id"]) for c in client.client_list() if int(c["id"]) != own}
