"""A short load test across two `idp serve` instances (two gunicorn workers each) behind haproxy: a few
clients at once, each going through the day's flows again and again: a password sign-in at a python3-saml SP,
SSO there with that session, the OpenID Connect code flow with authlib (signing in with a password in a new
browser, and with the session in the first) and a refresh, and a client-credentials token. Bounded in count
and time, on loopback.

No answer is a server error, every flow completes, and every session made is still there at the end, once:
each browser's cookie still opens SSO without a password, and each user has as many sessions as browsers
signed in.

Runs on the suite's database (a shared SQLite file, or IDP_TEST_DATABASE_URL's PostgreSQL) and, when
IDP_TEST_REDIS_URL is set, the suite's Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from cluster import Cluster, access_statuses, serve_cluster
from conftest import PG_URL, REDIS_URL
from flask import Flask
from helpers import make_user, session_counts
from oidc_peers import PASSWORD, AuthlibRp, browse, register, rp, start
from saml_peers import OneLoginSp, idp_metadata, is_login_page, read_post_form, register_sp, submit_login

from idp.oidc.clients import Registered

CLIENTS = 6
ITERATIONS = 4
# Seconds after which no client starts another iteration: the test stays short on a slow machine.
BUDGET = 30.0
RELAY = "https://sp.example.test/after"


@pytest.fixture
def cluster(app: Flask, tmp_path: Path, signing_files: tuple[Path, Path]) -> Iterator[Cluster]:
    with serve_cluster(tmp_path, signing_files, PG_URL or f"sqlite:///{tmp_path / 'idp.db'}", REDIS_URL,
                       workers=2) as c:
        yield c


@dataclass
class Answers:
    """Every answer any client received: (status, method, path)."""

    seen: list[tuple[int, str, str]] = field(default_factory=list)

    def __call__(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.seen.append((resp.status_code, str(resp.request.method), urlsplit(str(resp.request.url)).path))

    def session(self) -> requests.Session:
        http = requests.Session()
        http.hooks["response"].append(self)
        return http


@dataclass
class Client:
    """One person's and one machine's traffic, on a thread of its own."""

    cluster: Cluster
    user: str
    code_client: Registered
    machine: Registered
    answers: Answers
    deadline: float
    browsers: list[requests.Session] = field(default_factory=list)  # every one that signed in
    iterations: int = 0
    failure: BaseException | None = None
    sp: OneLoginSp = field(init=False)  # a python3-saml SP and an authlib client of its own
    oidc: AuthlibRp = field(init=False)

    def run(self) -> None:
        try:
            self.sp = OneLoginSp(idp_metadata(self.cluster.url))
            self.oidc = rp(self.cluster.url, self.code_client)
            self.oidc.hooks["response"].append(self.answers)
            while self.iterations < ITERATIONS and time.monotonic() < self.deadline:
                self.iteration()
                self.iterations += 1
        except BaseException as exc:  # reported by the test's thread
            self.failure = exc

    def iteration(self) -> None:
        saml_browser = self.answers.session()
        page, request_id = self.saml_sso(saml_browser)
        assert is_login_page(page)
        self.signed_in(submit_login(saml_browser, page, self.user, PASSWORD), request_id)
        self.browsers.append(saml_browser)
        self.signed_in(*self.saml_sso(saml_browser))  # SSO with that session

        oidc_browser = self.answers.session()
        self.code_flow(oidc_browser, prompts=1)
        self.browsers.append(oidc_browser)
        self.code_flow(saml_browser, prompts=0)  # the SAML sign-in's session serves OIDC too

        machine = self.answers.session()
        assert self.machine.client_secret is not None
        resp = machine.post(self.cluster.url + "/oauth/token", data={"grant_type": "client_credentials"},
                            auth=(self.machine.client_id, self.machine.client_secret), timeout=10)
        assert resp.status_code == 200 and resp.json()["access_token"], resp.text[:500]

    def saml_sso(self, browser: requests.Session) -> tuple[requests.Response, str]:
        url, request_id = self.sp.redirect_login(RELAY)
        return browser.get(url, timeout=10), request_id

    def signed_in(self, page: requests.Response, request_id: str) -> None:
        assert page.status_code == 200 and not is_login_page(page), (page.status_code, page.text[:500])
        auth = self.sp.process_response(read_post_form(page.text), request_id)
        assert auth.get_errors() == [], auth.get_last_error_reason()
        assert auth.get_nameid() == self.user

    def code_flow(self, browser: requests.Session, prompts: int) -> None:
        authorization = start(self.oidc)
        arrival = browse(browser, authorization.url, username=self.user)
        assert arrival.login_prompts == prompts
        token = self.oidc.fetch_token(self.cluster.url + "/oauth/token", authorization_response=arrival.url,
                                      code_verifier=authorization.verifier, state=authorization.state)
        claims = self.oidc.parse_id_token(token, nonce=authorization.nonce)
        assert claims["preferred_username"] == self.user
        refreshed = self.oidc.refresh_token(self.cluster.url + "/oauth/token", refresh_token=token["refresh_token"])
        assert refreshed["access_token"] != token["access_token"]


def test_mixed_sign_ins_and_token_requests_across_two_instances(app: Flask, cluster: Cluster) -> None:
    register_sp(OneLoginSp(idp_metadata(cluster.url)).metadata())
    code_client = register()
    machine = register(name="reports job", grant_types=("client_credentials",), redirect_uris=())
    users = [f"user{i}" for i in range(CLIENTS)]
    for user in users:
        make_user(user, PASSWORD)
    answers = Answers()
    deadline = time.monotonic() + BUDGET
    clients = [Client(cluster, user, code_client, machine, answers, deadline) for user in users]
    threads = [threading.Thread(target=c.run, name=f"load-{c.user}", daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(BUDGET + 30)
    assert not any(t.is_alive() for t in threads), "a client is stuck"

    assert [a for a in answers.seen if a[0] >= 500] == []
    for name, served in cluster.instances.items():
        lines = access_statuses(served)
        assert lines, f"instance {name} served nothing"
        assert [line for line in lines if line[2] >= 500] == [], f"instance {name}"
    for c in clients:
        if c.failure is not None:
            raise AssertionError(f"{c.user}'s flow failed") from c.failure
        assert c.iterations >= 1, f"{c.user} completed no iteration within {BUDGET} s"

    # Every session made is still valid: its browser is not asked for a password again.
    for c in clients:
        for browser in c.browsers:
            c.signed_in(*c.saml_sso(browser))
    assert session_counts(users) == {c.user: len(c.browsers) for c in clients}
