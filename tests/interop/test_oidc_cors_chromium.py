"""A single-page app in headless Chromium, served from an origin of its own, talks to the token and userinfo
endpoints with fetch(): the browser lets it read the answers only because they name its origin (CORS), which
they do for the origin of a registered redirect URI and for no other page."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from helpers import make_user, statement_fails
from oidc_peers import PASSWORD, browse, register
from test_portal_chromium import browser  # noqa: F401 - the module's one Chromium

from idp.oidc.cors import origin_of


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>app</title><p>an app"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _origin_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


spa_origin = pytest.fixture(_origin_server)
other_origin = pytest.fixture(_origin_server)

EXCHANGE = """async ([idp, form]) => {
  try {
    const token = await fetch(idp + "/oauth/token", {method: "POST", body: new URLSearchParams(form)});
    const tokens = await token.json();
    const info = await fetch(idp + "/oauth/userinfo", {headers: {Authorization: "Bearer " + tokens.access_token}});
    return {status: token.status, userinfo: await info.json()};
  } catch (error) {
    return {blocked: String(error)};
  }
}"""


def test_a_browser_app_reads_the_token_and_userinfo_answers_only_from_its_registered_origin(
        live_server: Any, browser: Any, spa_origin: str, other_origin: str) -> None:  # noqa: F811 - the fixture
    make_user("alice", PASSWORD, email="alice@example.test")
    callback = spa_origin + "/callback"
    spa = register(name="single-page app", public=True, redirect_uris=(callback,))

    def code_and_verifier() -> dict[str, str]:
        verifier = generate_token(48)
        url = live_server.url + "/oauth/authorize?" + requests.compat.urlencode({
            "response_type": "code", "client_id": spa.client_id, "redirect_uri": callback, "scope": "openid email",
            "state": "s", "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"})
        code = browse(requests.Session(), url, redirect_uri=callback).params["code"]
        return {"grant_type": "authorization_code", "code": code, "redirect_uri": callback,
                "client_id": spa.client_id, "code_verifier": verifier}

    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(spa_origin + "/")
        done = page.evaluate(EXCHANGE, [live_server.url, code_and_verifier()])
        assert done.get("status") == 200 and done["userinfo"]["email"] == "alice@example.test", done
        # A page of any other origin gets nothing it can read: the browser refuses it the answer.
        page.goto(other_origin + "/")
        blocked = page.evaluate(EXCHANGE, [live_server.url, code_and_verifier()])
        assert "blocked" in blocked and "Failed to fetch" in blocked["blocked"], blocked
    finally:
        context.close()
    # Discovery and the JWKS are public documents: any origin, and said without an Origin too (a cache may serve
    # a copy fetched without one to a browser app).
    for path in ("/.well-known/openid-configuration", "/oauth/jwks"):
        for headers in ({"Origin": other_origin}, {}):
            resp = requests.get(live_server.url + path, headers=headers, timeout=10)
            assert resp.headers["Access-Control-Allow-Origin"] == "*"
    # The rest (the authorization endpoint, the admin API) names no origin.
    for path in ("/oauth/authorize", "/api/v1/users"):
        resp = requests.get(live_server.url + path, headers={"Origin": spa_origin}, timeout=10)
        assert "Access-Control-Allow-Origin" not in resp.headers


@pytest.mark.parametrize(("uri", "origin"), [
    ("https://app.example.test/callback?x=1", "https://app.example.test"),
    ("https://App.Example.test:443/cb", "https://app.example.test"),
    ("http://127.0.0.1:8080/cb", "http://127.0.0.1:8080"),
    ("http://[::1]:5173/", "http://[::1]:5173"),
    ("com.example.app:/callback", None),
])
def test_the_origin_of_a_redirect_uri(uri: str, origin: str | None) -> None:
    assert origin_of(uri) == origin


def test_an_origin_that_cannot_be_looked_up_gets_the_endpoints_own_answer_without_cors(
        app: Any, client: Any) -> None:
    """The database lost as the origins are read (after the answer was made): the answer stands, without the
    header that would let a browser app read it; not a 500."""
    with statement_fails("SELECT oidc_clients.redirect_uris"):
        resp = client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "nobody"},
                           headers={"Origin": "https://app.example.test"})
    assert resp.status_code == 401 and resp.get_json()["error"] == "invalid_client"
    assert "Access-Control-Allow-Origin" not in resp.headers
