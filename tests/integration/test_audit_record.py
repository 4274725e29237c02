"""Audit events quote what clients send: whatever that is, the event is stored and the request goes on."""

from __future__ import annotations

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


def test_a_refusal_of_a_client_id_with_a_nul_is_audited_and_later_requests_still_work(client: FlaskClient) -> None:
    refused = client.get("/oauth/authorize", query_string={"client_id": "x\x00y", "response_type": "code"})
    assert refused.status_code == 400
    assert client.get("/.well-known/openid-configuration").status_code == 200
    assert [e.sp for e in audit.events(type="oidc.authorize")] == ["x\ufffdy"]
