"""Input the database cannot store (NUL characters, values it refuses): a clear 400 or a cleaned audit event,
never a server error, and the next request is served as usual."""

from __future__ import annotations

import re

import pytest
import sqlalchemy.exc
from flask import Flask
from flask.testing import FlaskClient

from idp import audit
from idp.audit import AuditEvent


def test_an_event_quoting_nul_characters_is_stored_with_them_replaced(app: Flask) -> None:
    audit.record(AuditEvent(type="oidc.refused", outcome="failure", sp="client\x00id", reason="bad\x00input",
                            details={"param\x00": ["a\x00b", 1]}))
    (stored,) = audit.events(type="oidc.refused")
    assert stored.sp == "client\ufffdid" and stored.reason == "bad\ufffdinput"
    assert stored.details == {"param\ufffd": ["a\ufffdb", 1]}


def test_a_nul_in_any_parameter_is_refused_with_400_and_later_requests_still_work(client: FlaskClient) -> None:
    """PostgreSQL refuses a NUL even in a query's parameter: without this every lookup of such a value (a
    username, an SP, a client id) would fail with a server error, and the audit event of the refusal too."""
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    assert token
    refusals = [
        client.get("/oauth/authorize", query_string={"client_id": "x\x00y", "response_type": "code"}),
        client.get("/saml/init", query_string={"sp": "https://sp.test/\x00"}),
        client.post("/login", data={"csrf_token": token.group(1), "username": "alice\x00", "password": "secret"}),
        client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": "c\x00"}),
        client.get("/oauth/authorize/continue/%00"),
        client.get("/saml/continue/abc%00"),
    ]
    for refused in refusals:
        assert refused.status_code == 400, refused.request.path
        assert b"NUL character" in refused.data
    assert client.get("/.well-known/openid-configuration").status_code == 200


def test_a_value_the_database_refuses_is_a_400_without_a_trace(app: Flask, client: FlaskClient,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """The net under the checks: a DataError (injected here) is the request's fault, not a server error."""
    def refuse() -> str:
        raise sqlalchemy.exc.DataError("INSERT ...", {}, ValueError("value too long for type character varying(64)"))

    app.add_url_rule("/_test/data-error", view_func=refuse)
    resp = client.get("/_test/data-error")
    assert resp.status_code == 400
    assert b"cannot be stored" in resp.data and b"Traceback" not in resp.data and b"varying" not in resp.data
    assert "the database cannot store a value: value too long" in caplog.text
