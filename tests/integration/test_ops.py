"""/healthz, /readyz and /metrics: what a load balancer, a kubelet and a Prometheus scraper see, in one
process and across gunicorn's workers."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from conftest import REDIS_URL
from flask import Flask
from flask.testing import FlaskClient
from helpers import DEFAULT_PASSWORD, Served, free_port, idp_process, login, make_user
from ldap_server import Slapd, SlapdProcess, SlowProxy, closed_port_url, directory_config
from oidc_peers import register
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from prometheus_client.parser import text_string_to_metric_families
from saml_peers import SP_ENTITY_ID, sign_in_at_a_new_sp
from services import RedisServer

from idp import audit, create_app
from idp.config import Settings
from idp.extensions import db

LATENCY = "idp_http_request_duration_seconds"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, parsed by prometheus_client's own parser (which refuses a malformed page)."""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client: FlaskClient) -> Samples:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    return parse(resp.get_data(as_text=True))


def scrape_http(base_url: str) -> Samples:
    resp = requests.get(base_url + "/metrics", timeout=10)
    assert resp.status_code == 200
    return parse(resp.text)


# --- health and readiness ---------------------------------------------------------------------------------

def stores(database: str = "ok") -> dict[str, str]:
    """The checks of the database and, in the suite's Redis pass, of Redis (up)."""
    return {"keys": "ok", "database": database, **({"redis": "ok"} if REDIS_URL else {})}


def test_healthz_and_readyz_answer_without_a_session(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert (resp.status_code, resp.get_data(as_text=True).strip()) == (200, "ok")
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "checks": {**stores(), "directories": {}}}
    for r in (resp, ready, client.get("/metrics")):
        assert r.headers.getlist("Set-Cookie") == []


def test_readyz_is_503_while_the_database_is_down_and_healthz_stays_up(
        make_settings: Callable[..., Settings]) -> None:
    # PostgreSQL on a loopback port nothing listens on: the server is down.
    app = create_app(make_settings(database_url=f"postgresql+psycopg://idp@127.0.0.1:{free_port()}/idp"))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    started = time.monotonic()
    resp = client.get("/readyz")
    assert time.monotonic() - started < 5
    assert resp.status_code == 503
    assert resp.get_json() == {"status": "unavailable", "checks": {**stores("error"), "directories": {}}}
    assert client.get("/healthz").status_code == 200


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def client_with(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., FlaskClient]]:
    """A test client of an app with these settings; its database connections closed afterwards."""
    apps: list[Flask] = []

    def build(**overrides: object) -> FlaskClient:
        apps.append(create_app(make_settings(**overrides)))
        return apps[-1].test_client()

    yield build
    for app in apps:
        with app.app_context():
            db.engine.dispose()


def test_readyz_pings_redis_only_when_it_is_configured(
        client_with: Callable[..., FlaskClient], redis_server: RedisServer) -> None:
    without = client_with(redis_url=None).get("/readyz")
    assert without.get_json() == {"status": "ready", "checks": {"keys": "ok", "database": "ok", "directories": {}}}
    client = client_with(redis_url=redis_server.url)
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready",
                                "checks": {"keys": "ok", "database": "ok", "redis": "ok", "directories": {}}}


def test_readyz_is_503_while_redis_is_down_and_ready_again_once_it_is_back(
        client_with: Callable[..., FlaskClient], redis_server: RedisServer) -> None:
    client = client_with(redis_url=redis_server.url)
    assert client.get("/readyz").status_code == 200  # connected, so the client holds a pooled connection
    redis_server.stop()
    started = time.monotonic()
    resp = client.get("/readyz")
    assert time.monotonic() - started < 5
    assert resp.status_code == 503
    assert resp.get_json() == {"status": "unavailable",
                               "checks": {"keys": "ok", "database": "ok", "redis": "error", "directories": {}}}
    assert str(redis_server.port) not in resp.get_data(as_text=True)  # the reason, naming it, is logged only
    assert client.get("/healthz").status_code == 200
    redis_server.start()
    assert client.get("/readyz").status_code == 200


def test_readyz_answers_quickly_while_redis_hangs(
        client_with: Callable[..., FlaskClient], redis_server: RedisServer) -> None:
    client = client_with(redis_url=redis_server.url)
    assert client.get("/readyz").status_code == 200
    redis_server.freeze()
    try:
        started = time.monotonic()
        resp = client.get("/readyz")
        assert time.monotonic() - started < 4
        assert resp.status_code == 503
        assert resp.get_json()["checks"] == {"keys": "ok", "database": "ok", "redis": "error", "directories": {}}
    finally:
        redis_server.thaw()
    assert client.get("/readyz").status_code == 200


def test_readyz_probes_every_configured_directory(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path) -> None:
    up = directory_config(slapd, tmp_path, "corp")
    # Failover: the second server answers, so the directory serves sign-ins.
    failover = directory_config(slapd, tmp_path, "branch", urls=[closed_port_url(), slapd.ldap_url])
    app = with_directories(up, failover)
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["checks"] == {**stores(), "directories": {"corp": "ok", "branch": "ok"}}


def test_readyz_is_503_while_a_directory_is_down(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path) -> None:
    down_url = closed_port_url()
    app = with_directories(directory_config(slapd, tmp_path, "corp"),
                           directory_config(slapd, tmp_path, "hr", urls=[down_url]))
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json() == {"status": "unavailable",
                               "checks": {**stores(), "directories": {"corp": "ok", "hr": "error"}}}
    # The reason is logged, not shown to whoever asks: it names servers.
    assert down_url.split("//")[1] not in resp.get_data(as_text=True)


def test_a_directory_set_not_to_count_is_shown_and_leaves_the_instance_ready(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path) -> None:
    # readiness: false, for a directory whose outage should not take the site (and the admin UI) away.
    app = with_directories(directory_config(slapd, tmp_path, "corp"),
                           directory_config(slapd, tmp_path, "partners", urls=[closed_port_url()], readiness=False))
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ready", "checks": {
        **stores(), "directories": {"corp": "ok", "partners": "error"}, "not_counted": ["partners"]}}


def test_readyz_answers_quickly_while_a_directory_hangs(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path) -> None:
    proxy = SlowProxy(slapd.ldap_url, delay=10)  # accepts, then answers nothing for 10 s
    try:
        # Sign-ins may wait 30 s for this directory; a readiness probe may not.
        app = with_directories(directory_config(slapd, tmp_path, "corp", urls=[proxy.url], timeout=30))
        started = time.monotonic()
        resp = app.test_client().get("/readyz")
        assert time.monotonic() - started < 4
        assert resp.status_code == 503
        assert resp.get_json()["checks"]["directories"] == {"corp": "error"}
    finally:
        proxy.stop()


def test_readyz_finds_the_server_that_answers_behind_two_that_hang(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path) -> None:
    hung = [SlowProxy(slapd.ldap_url, delay=10) for _ in range(2)]
    try:
        # Sign-ins fail over to the third server; so must the probe, within its time, however long each hangs.
        app = with_directories(directory_config(slapd, tmp_path, "corp", urls=[p.url for p in hung] + [slapd.ldap_url]))
        started = time.monotonic()
        resp = app.test_client().get("/readyz")
        assert time.monotonic() - started < 4
        assert resp.status_code == 200, resp.get_json()
        assert resp.get_json()["checks"]["directories"] == {"corp": "ok"}
    finally:
        for proxy in hung:
            proxy.stop()


def test_readyz_asked_many_times_at_once_probes_the_directory_once(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path) -> None:
    slow = SlowProxy(slapd.ldap_url, delay=1.0)  # each probe takes a second (the probe's own limit is 2 s)
    try:
        app = with_directories(directory_config(slapd, tmp_path, "corp", urls=[slow.url]))
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: app.test_client().get("/readyz"), range(6)))
        assert [a.status_code for a in answers] == [200] * 6
        # Those that came while a probe ran took its answer: a flood of probes is one bind a time to the directory.
        assert slow.connections == 1
        # One asked afterwards probes again: answers are shared, never kept.
        assert app.test_client().get("/readyz").status_code == 200
        assert slow.connections == 2
    finally:
        slow.stop()


def test_readyz_counts_a_wrong_service_password_as_down(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path) -> None:
    cfg = directory_config(slapd, tmp_path, "corp")
    assert cfg.bind_password_file is not None
    cfg.bind_password_file.write_text("not the service password\n")
    resp = with_directories(cfg).test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["directories"] == {"corp": "error"}


# --- metrics ----------------------------------------------------------------------------------------------

def test_latency_histogram_counts_requests_by_endpoint_not_path(client: FlaskClient) -> None:
    before = scrape(client)
    assert client.get("/login").status_code == 200
    assert client.get("/no/such/page-1234").status_code == 404
    after = scrape(client)

    login_page = {"endpoint": "authn.login", "method": "GET", "status": "2xx"}
    assert value(after, LATENCY + "_count", **login_page) == value(before, LATENCY + "_count", **login_page) + 1
    # The +Inf bucket holds every observation; the sum grew by a positive time.
    assert value(after, LATENCY + "_bucket", le="+Inf", **login_page) == value(after, LATENCY + "_count", **login_page)
    assert value(after, LATENCY + "_sum", **login_page) > value(before, LATENCY + "_sum", **login_page)
    unmatched = {"endpoint": "unmatched", "method": "GET", "status": "4xx"}
    assert value(after, LATENCY + "_count", **unmatched) == value(before, LATENCY + "_count", **unmatched) + 1
    # A form refused for its CSRF token (a stale page, instances with different secret keys) is timed too.
    assert client.post("/login", data={"username": "alice", "password": "x"}).status_code == 400
    refused = {"endpoint": "authn.login", "method": "POST", "status": "4xx"}
    assert value(scrape(client), LATENCY + "_count", **refused) == value(after, LATENCY + "_count", **refused) + 1
    # A path never becomes a label: probing random URLs cannot grow the scrape.
    assert not any("/no/such" in v for _, labels in after for _, v in labels)


def test_sign_ins_and_refusals_are_counted_from_the_audit_events(app: Flask, client: FlaskClient) -> None:
    make_user("alice")
    before = scrape(client)
    assert login(client, "alice", "wrong").status_code == 200
    assert login(client, "alice", DEFAULT_PASSWORD).status_code == 302
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("idp_signins_total", result="success", source="local") == 1
    # The built-in directory knows alice: it refused the password.
    assert delta("idp_signins_total", result="failure", source="local") == 1
    assert delta("idp_refusals_total", event="login", reason="bad password") == 1


def test_a_refusals_reason_label_never_holds_what_a_client_sent(app: Flask, client: FlaskClient) -> None:
    """Refusal reasons quote what was sent; their labels keep the fixed part only, or forty strangers' messages
    would fill the labels of a kind (after which every new reason counts as "other") and grow every scrape."""
    before = scrape(client)
    for name in ("StrangersElementOne", "StrangersElementTwo"):
        message = OneLogin_Saml2_Utils.deflate_and_base64_encode(f"<{name} xmlns='urn:example'/>")
        assert client.get("/saml/slo", query_string={"SAMLRequest": message}).status_code == 400
    after = scrape(client)
    slo = {dict(labels)["reason"]: v - before.get((name, labels), 0) for (name, labels), v in after.items()
           if name == "idp_refusals_total" and dict(labels)["event"] == "saml.refused"}
    assert {reason: n for reason, n in slo.items() if n} == {"unexpected message": 2}
    assert not any("strangerselement" in dict(labels).get("reason", "") for _, labels in after)


def test_every_password_hash_is_timed_in_cpu_seconds(app: Flask, client: FlaskClient) -> None:
    """What argon2id costs on this hardware, per hash: a right and a wrong password, and the hash spent on an
    unknown name so that it answers as slowly as a known one."""
    make_user("alice")
    before = scrape(client)
    assert login(client, "alice", "wrong").status_code == 200
    assert login(client, "nobody", "whatever-pw").status_code == 200
    assert login(client, "alice", DEFAULT_PASSWORD).status_code == 302
    after = scrape(client)
    name = "idp_password_hash_cpu_seconds"
    assert value(after, name + "_count") - value(before, name + "_count") == 3
    # OWASP's argon2id (19 MiB, two passes) takes milliseconds of CPU on any machine, not microseconds.
    assert value(after, name + "_sum") - value(before, name + "_sum") > 3 * 0.002


def test_saml_responses_and_oidc_tokens_are_counted_by_sp_and_client(live_server) -> None:  # type: ignore[no-untyped-def]
    make_user("alice", email="alice@example.test", display_name="Alice Anderson")
    reg = register(name="reports job", grant_types=("client_credentials",), redirect_uris=())
    before = scrape_http(live_server.url)

    sign_in_at_a_new_sp(live_server.url, "alice", DEFAULT_PASSWORD)
    rp = OAuth2Session(reg.client_id, reg.client_secret, scope="profile")
    assert rp.fetch_token(live_server.url + "/oauth/token", grant_type="client_credentials")["access_token"]
    wrong = requests.post(live_server.url + "/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(reg.client_id, "not the secret"), timeout=10)
    assert wrong.status_code == 401
    after = scrape_http(live_server.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("idp_saml_responses_total", sp=SP_ENTITY_ID) == 1
    assert delta("idp_oidc_tokens_total", client=reg.client_id, grant_type="client_credentials") == 1
    assert delta("idp_refusals_total", event="oidc.token", reason="invalid_client") == 1
    assert delta(LATENCY + "_count", endpoint="oidc.token", method="POST", status="2xx") == 1
    assert delta(LATENCY + "_count", endpoint="oidc.token", method="POST", status="4xx") == 1


DIRECTORY_LATENCY = "idp_directory_operation_duration_seconds"


def test_directory_sign_ins_are_counted_by_source_and_their_ldap_operations_timed(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path) -> None:
    app = with_directories(directory_config(slapd, tmp_path, "corp"))
    client = app.test_client()
    before = scrape(client)
    # A browser each: a signed-in one would not see the form again.
    assert login(app.test_client(), "alice", "alice-pw").status_code == 302
    assert login(app.test_client(), "alice", "wrong").status_code == 200
    assert login(app.test_client(), "nobody", "wrong").status_code == 200
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("idp_signins_total", result="success", source="corp") == 1
    assert delta("idp_signins_total", result="failure", source="corp") == 1
    # Nobody has that name: no directory refused it.
    assert delta("idp_signins_total", result="failure", source="none") == 1
    assert delta("idp_signins_total", result="failure", source="unknown") == 0
    failures = [e.details for e in audit.events(type="login", limit=2)]
    assert failures == [{"source": "none"}, {"source": "corp"}]
    # Refusals by their reason, whichever directory gave it (the source is the label above); the reason of
    # a directory among several starts with its name ("corp: bad password"), which is no reason.
    refusals = {dict(labels)["reason"]: v - before.get((name, labels), 0) for (name, labels), v in after.items()
                if name == "idp_refusals_total" and dict(labels)["event"] == "login"}
    assert {reason: n for reason, n in refusals.items() if n} == {"bad password": 1, "unknown user": 1}

    # Searches: alice and her groups, alice again, nobody. Binds: alice's two passwords, and the dummy bind that
    # makes "nobody" cost what a wrong password costs.
    search = {"directory": "corp", "operation": "search"}
    bind = {"directory": "corp", "operation": "bind"}
    assert delta(DIRECTORY_LATENCY + "_count", **search) == 4
    assert delta(DIRECTORY_LATENCY + "_count", **bind) == 3
    assert delta(DIRECTORY_LATENCY + "_sum", **bind) > 0
    assert value(after, DIRECTORY_LATENCY + "_bucket", le="+Inf", **bind) == value(after, DIRECTORY_LATENCY
                                                                                   + "_count", **bind)
    # No error of this directory during these sign-ins (the registry is per process: earlier tests may have
    # counted some for a directory of the same name, so compare with the scrape before).
    def errors(samples: Samples) -> dict[object, float]:
        return {labels: v for (name, labels), v in samples.items()
                if name == "idp_directory_errors_total" and ("directory", "corp") in labels}

    assert errors(after) == errors(before)


@pytest.mark.parametrize("fault", ["stopped", "hung", "service password"])
def test_directory_errors_are_counted_by_kind(
        with_directories: Callable[..., Flask], slapd: Slapd, tmp_path: Path, request: pytest.FixtureRequest,
        fault: str) -> None:
    proxy = None
    if fault == "stopped":
        spare: SlapdProcess = request.getfixturevalue("spare_slapd")
        cfg, kind = directory_config(slapd, tmp_path, "hr", urls=[spare.ldap_url]), "unavailable"
    elif fault == "hung":
        proxy = SlowProxy(slapd.ldap_url, delay=5)
        request.addfinalizer(proxy.stop)
        cfg, kind = directory_config(slapd, tmp_path, "hr", urls=[proxy.url], timeout=1), "timeout"
    else:
        cfg, kind = directory_config(slapd, tmp_path, "hr"), "service_bind_refused"
        assert cfg.bind_password_file is not None
        cfg.bind_password_file.write_text("not the service password\n")
    app = with_directories(cfg)
    client = app.test_client()
    if fault == "stopped":
        # Signed in once, so that the pool holds a connection to the server about to go away.
        assert login(app.test_client(), "alice", "alice-pw").status_code == 302
        spare.stop()
    before = scrape(client)
    resp = login(client, "alice", "alice-pw")
    assert resp.status_code == 503
    after = scrape(client)

    assert value(after, "idp_directory_errors_total", directory="hr", kind=kind) >= \
        value(before, "idp_directory_errors_total", directory="hr", kind=kind) + 1
    searches = {"directory": "hr", "operation": "search"}
    assert value(after, DIRECTORY_LATENCY + "_count", **searches) == \
        value(before, DIRECTORY_LATENCY + "_count", **searches) + 1
    # Counted by the directory that could not be asked.
    assert value(after, "idp_signins_total", result="unavailable", source="hr") == \
        value(before, "idp_signins_total", result="unavailable", source="hr") + 1


def test_an_audit_listener_that_raises_breaks_no_sign_in(
        app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(event: audit.AuditEvent) -> None:
        raise RuntimeError("listener bug")

    # First in line: the listeners after it (the metrics) are still told.
    monkeypatch.setattr(audit, "_listeners", [broken, *audit._listeners])
    make_user("alice")
    before = scrape(client)
    resp = login(client, "alice", DEFAULT_PASSWORD)
    assert resp.status_code == 302
    assert client.get(resp.headers["Location"]).status_code == 200
    assert value(scrape(client), "idp_signins_total", result="success", source="local") == \
        value(before, "idp_signins_total", result="success", source="local") + 1
    assert audit.events(type="login", limit=1)[0].username == "alice"
    assert any("listener bug" in (r.exc_text or "") and r.name == "idp.audit" for r in caplog.records)


def test_listeners_hear_of_committed_events_only(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    heard: list[str] = []
    monkeypatch.setattr(audit, "_listeners", [lambda event: heard.append(event.type)])
    audit.record(audit.AuditEvent(type="rolled.back"), commit=False)
    # A savepoint released is no commit: the event waits for its transaction, which is rolled back.
    with db.session.begin_nested():
        pass
    assert heard == []
    db.session.rollback()
    audit.record(audit.AuditEvent(type="kept.later"), commit=False)
    audit.record(audit.AuditEvent(type="kept"))
    assert heard == ["kept.later", "kept"]
    assert [e.type for e in audit.events(limit=5)] == ["kept", "kept.later"]


# --- several workers --------------------------------------------------------------------------------------

HEALTHZ = {"endpoint": "ops.healthz", "method": "GET", "status": "2xx"}


def two_workers(command: str, tmp_path: Path) -> contextlib.AbstractContextManager[Served]:
    """``idp <command>`` with two gunicorn workers on a free port, choosing its own metrics folder."""
    port = free_port()
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": f"http://127.0.0.1:{port}",
           "IDP_WORKERS": "2"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return idp_process([command], env, port, tmp_path / "out.log")


def test_metrics_under_idp_serve_sum_every_worker(tmp_path: Path) -> None:
    with two_workers("serve", tmp_path) as served:
        (folder,) = (tmp_path / "metrics").iterdir()  # this start's own folder
        sent = 0
        with ThreadPoolExecutor(8) as pool:
            # Concurrent connections until both workers have answered some (each keeps its own file).
            for _ in range(20):
                codes = list(pool.map(lambda _: requests.get(served.url + "/healthz", timeout=10).status_code,
                                      range(40)))
                assert codes == [200] * 40
                sent += 40
                if len(list(folder.glob("histogram_*.db"))) >= 2:
                    break
        # (None at all: prometheus_client was imported before `idp serve` set its folder, see idp.ops.metrics.)
        assert len(list(folder.glob("histogram_*.db"))) == 2, "the workers do not share their metrics"
        # One worker answers the scrape, with the requests both served.
        samples = scrape_http(served.url)
        assert value(samples, LATENCY + "_count", **HEALTHZ) == sent
        # Series an alert watches for a rise exist at 0 before anything happens.
        assert ("idp_instance_differences_total", frozenset({("about", "secret")})) in samples
        assert "/healthz" not in served.output()  # probes stay out of the access log
    assert not folder.exists()  # removed when the server stops


def test_metrics_under_idp_demo_count_what_its_workers_serve(tmp_path: Path) -> None:
    """The demo seeds its directory (audit events, password hashes: both feed metrics) before gunicorn forks; the
    workers must still share one folder, or every scrape is an empty page."""
    with two_workers("demo", tmp_path) as served:
        for _ in range(10):
            assert requests.get(served.url + "/healthz", timeout=10).status_code == 200
        samples = scrape_http(served.url)
        assert value(samples, LATENCY + "_count", **HEALTHZ) == 10
        # The seeding's own hashes (one per demo user) were made in the folder too.
        assert value(samples, "idp_password_hash_cpu_seconds_count") >= 1
