"""Audit events quote what clients send: whatever that is, the event is stored and the request goes on."""

from __future__ import annotations

import re

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
    ]
    for refused in refusals:
        assert refused.status_code == 400, refused.request.path
        assert b"NUL character" in refused.data
    assert client.get("/.well-known/openid-configuration").status_code == 200
