"""Two `idp serve` instances behind Debian's haproxy (round-robin, no stickiness), set up as deploy/README.md
tells operators (tests/cluster.py). Whatever instance a request lands on, the sign-in goes on; which one it
was is read from each instance's gunicorn access log.

Runs on the suite's database: a shared SQLite file, or IDP_TEST_DATABASE_URL's PostgreSQL; and on the suite's
Redis when IDP_TEST_REDIS_URL is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import lxml.html
import pytest
import requests
from cluster import Cluster, Trace, access_lines, alternates, serve_cluster, traced, wait_for_access
from conftest import PG_URL, REDIS_URL
from flask import Flask
from helpers import Served, make_user
from oidc_peers import PASSWORD, REDIRECT_URI, browse, register, rp, start
from saml_peers import SP_SLO_URL, OneLoginSp, idp_metadata, is_login_page, read_post_form, register_sp, submit_login
from sqlalchemy import select

from idp.authn.session import COOKIE
from idp.extensions import db
from idp.store import InstanceRow


@pytest.fixture
def cluster(app: Flask, tmp_path: Path, signing_files: tuple[Path, Path]) -> Iterator[Cluster]:
    """``app`` (an app context on the test's fresh database) is where the test registers users and peers;
    the instances open the same database (and Redis, in the suite's Redis pass)."""
    with serve_cluster(tmp_path, signing_files, PG_URL or f"sqlite:///{tmp_path / 'idp.db'}", REDIS_URL) as c:
        yield c


def saml_sign_in(cluster: Cluster) -> tuple[requests.Session, Trace, str, str]:
    """alice signs in at a python3-saml SP through the load balancer. Returns the browser, its trace, the
    AuthnRequest's URL (through the load balancer) and its ID."""
    sp = OneLoginSp(idp_metadata(cluster.url))
    register_sp(sp.metadata())
    make_user("alice", PASSWORD)
    http, trace = traced(cluster)
    url, request_id = sp.redirect_login("https://sp.example.test/after")
    page = http.get(url, timeout=10)
    assert is_login_page(page)
    page = submit_login(http, page, "alice", PASSWORD)
    auth = sp.process_response(read_post_form(page.text), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.get_nameid() == "alice"
    return http, trace, url, request_id


def test_a_saml_sign_in_started_on_one_instance_finishes_on_the_other(cluster: Cluster) -> None:
    _, trace, _, _ = saml_sign_in(cluster)
    steps = [(method, path.split("/continue/")[0]) for _, method, path in trace.hops]
    assert steps == [("GET", "/saml/sso"), ("GET", "/login"), ("POST", "/login")]
    # The AuthnRequest parked on one, the login form served by the other, posted back to the first (its CSRF
    # token checked there), which answers with the response: every step on the other instance.
    assert alternates(trace.instances()), trace.hops


def test_a_request_id_consumed_on_one_instance_is_refused_on_the_other(cluster: Cluster) -> None:
    http, trace, url, _ = saml_sign_in(cluster)
    received_by = trace.hops[0][0]
    other = cluster.other(received_by)
    direct = url.replace(cluster.url, other.url, 1)
    replayed = http.get(direct, allow_redirects=False, timeout=10)
    assert replayed.status_code == 400
    assert "already been used" in replayed.text
    # The same browser, session and instance answer a fresh request at once: only the replay was refused.
    sp = OneLoginSp(idp_metadata(cluster.url))
    fresh_url, fresh_id = sp.redirect_login("https://sp.example.test/after")
    fresh = http.get(fresh_url.replace(cluster.url, other.url, 1), allow_redirects=False, timeout=10)
    assert fresh.status_code == 200
    auth = sp.process_response(read_post_form(fresh.text), fresh_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()


def test_a_logout_on_one_instance_ends_the_session_on_all(cluster: Cluster) -> None:
    http, _, _, _ = saml_sign_in(cluster)
    cookie = {COOKIE: http.cookies[COOKIE]}
    first, second = cluster.instances.values()

    def portal(served: Served) -> requests.Response:
        return requests.get(served.url + "/portal", cookies=cookie, allow_redirects=False, timeout=10)

    assert portal(first).status_code == portal(second).status_code == 200
    page = http.get(first.url + "/logout", timeout=10)
    form = read_form(page.text)
    done = http.post(first.url + "/logout", data=form, headers={"Referer": page.url}, allow_redirects=False,
                     timeout=10)
    # Signed out; the browser goes on to the SP's single logout (a host that does not exist here).
    assert done.is_redirect and done.headers["Location"].startswith(SP_SLO_URL)
    assert COOKIE not in http.cookies
    for served in (second, first):
        refused = portal(served)
        assert refused.status_code == 302
        assert urlsplit(refused.headers["Location"]).path == "/login"


def read_form(page: str) -> dict[str, str]:
    form = lxml.html.fromstring(page).forms[0]
    return {i.get("name"): i.get("value") or "" for i in form.xpath(".//input[@name]")}


def test_an_oidc_code_issued_by_one_instance_is_redeemed_at_the_other(cluster: Cluster) -> None:
    make_user("alice", PASSWORD)
    reg = register()
    session = rp(cluster.url, reg)
    http, trace = traced(cluster)
    authorization = start(session)
    arrival = browse(http, authorization.url)
    assert arrival.login_prompts == 1 and "code" in arrival.params
    steps = [(method, path.split("/continue/")[0]) for _, method, path in trace.hops]
    assert steps == [("GET", "/oauth/authorize"), ("GET", "/login"), ("POST", "/login"),
                     ("GET", "/oauth/authorize")]
    # The authorization request parked on one instance is resumed, and the code issued, on the other.
    assert alternates(trace.instances()), trace.hops
    issued_by = trace.hops[-1][0]
    other = cluster.other(issued_by)
    before = len(access_lines(other))
    token = session.fetch_token(other.url + "/oauth/token", authorization_response=arrival.url,
                                code_verifier=authorization.verifier, state=authorization.state)
    wait_for_access(other, ("POST", "/oauth/token"), before)
    claims = session.parse_id_token(token, nonce=authorization.nonce)  # the JWKS, through the load balancer
    assert claims["iss"] == cluster.url and claims["preferred_username"] == "alice"
    # The code is single-use across instances too: back at the instance that issued it, it is refused.
    again = requests.post(cluster.instances[issued_by].url + "/oauth/token", auth=(reg.client_id, reg.client_secret),
                          data={"grant_type": "authorization_code", "code": arrival.params["code"],
                                "redirect_uri": REDIRECT_URI, "code_verifier": authorization.verifier},
                          timeout=10)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_readiness_and_metrics_answer_only_who_asks_an_instance_directly(cluster: Cluster) -> None:
    # Through the load balancer, a trusted proxy that appends X-Forwarded-For: the public side.
    for path in ("/readyz", "/metrics"):
        assert requests.get(cluster.url + path, timeout=10).status_code == 404, path
    assert requests.get(cluster.url + "/healthz", timeout=10).status_code == 200
    # As a kubelet or Prometheus asks a pod.
    for served in cluster.instances.values():
        assert requests.get(served.url + "/readyz", timeout=10).json()["status"] == "ready"
        assert "idp_http_request_duration_seconds" in requests.get(served.url + "/metrics", timeout=10).text


def test_the_instances_announce_themselves_and_share_their_secrets(cluster: Cluster, app: Flask) -> None:
    # Each `idp serve` announces itself at start and with its readiness checks (idp.ops.instances); given the
    # same secret key and key files, neither warns of the other (test_instances.py shows the warnings).
    for served in cluster.instances.values():
        assert requests.get(served.url + "/readyz", timeout=10).status_code == 200
    assert len(db.session.scalars(select(InstanceRow.id)).all()) == 2
    for served in cluster.instances.values():
        assert "idp.ops.instances" not in served.output(), served.output()
