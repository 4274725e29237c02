"""GET /api/v1/audit: the audit log newest first, filtered by user, actor, type, outcome and time (with a zone),
paged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from admin_api import bearer
from flask import Flask
from flask.testing import FlaskClient

from idp import audit
from idp.audit import AuditEvent

NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def log(app: Flask, client: FlaskClient, frozen_clock: Any) -> Any:
    """GET /api/v1/audit with a read token, over a log of six events an hour apart (and the token's own creation,
    a day earlier)."""
    frozen_clock.current = NOON - timedelta(days=1)
    headers = bearer("read")
    for hours, (type_, outcome, username) in enumerate([
        ("login", "success", "alice"),
        ("login", "failure", "alice"),
        ("login", "success", "bob"),
        ("saml.sso", "success", "alice"),
        ("access.denied", "failure", "bob"),
        ("user.create", "success", "carol"),
    ]):
        audit.record(AuditEvent(type=type_, outcome=outcome, username=username, at=NOON + timedelta(hours=hours),
                                actor="admin:root" if type_ == "user.create" else None,
                                sp="https://sp.example.test" if type_ == "saml.sso" else None,
                                details={"n": hours}))

    def get(**query: Any) -> Any:
        return client.get("/api/v1/audit", query_string=query, headers=headers)

    return get


def numbers(resp: Any) -> list[int]:
    assert resp.status_code == 200, resp.json
    return [item["details"]["n"] for item in resp.json["items"]]


def test_newest_first_with_every_field(log: Any) -> None:
    page = log(type="saml.sso").json
    assert page["total"] == 1
    (item,) = page["items"]
    assert item["at"] == "2026-03-01T15:00:00+00:00"
    assert item["username"] == "alice" and item["sp"] == "https://sp.example.test" and item["outcome"] == "success"
    assert set(item) == {"id", "at", "type", "outcome", "actor", "username", "sp", "client_ip", "reason", "details"}
    assert numbers(log(username="alice")) == [3, 1, 0]


def test_events_at_the_same_second_keep_their_recording_order_reversed(log: Any) -> None:
    for n in (10, 11, 12):
        audit.record(AuditEvent(type="tie", at=NOON, details={"n": n}))
    assert numbers(log(type="tie")) == [12, 11, 10]


def test_filters_combine(log: Any) -> None:
    assert numbers(log(type="login")) == [2, 1, 0]
    assert numbers(log(outcome="failure")) == [4, 1]
    assert numbers(log(type="login", outcome="success", username="alice")) == [0]
    assert numbers(log(username="nobody")) == []
    assert numbers(log(username="ALICE")) == []  # exact, as stored


def test_filter_by_actor(log: Any) -> None:
    assert numbers(log(actor="admin:root")) == [5]
    assert [i["type"] for i in log(actor="test").json["items"]] == ["admin.token.create"]
    assert numbers(log(actor="admin:ROOT")) == []
    assert log(actor="x" * 256).status_code == 422


def test_since_is_inclusive_until_exclusive_in_any_zone(log: Any) -> None:
    # 14:00 UTC written as 15:00 at +01:00 and as 09:00 at -05:00.
    assert numbers(log(since="2026-03-01T15:00:00+01:00", type="login")) == [2]
    assert numbers(log(until="2026-03-01T09:00:00-05:00", type="login")) == [1, 0]
    assert numbers(log(since="2026-03-01T13:00:00Z", until="2026-03-01T16:00:00Z")) == [3, 2, 1]
    assert numbers(log(since="2026-03-01T16:00:00Z", until="2026-03-01T13:00:00Z")) == []


def test_times_without_a_zone_or_bad_values_are_refused(log: Any) -> None:
    for query in ({"since": "2026-03-01T12:00:00"}, {"until": "yesterday"}, {"outcome": "maybe"}, {"page": 0},
                  {"per_page": 500}, {"type": "x" * 65}):
        resp = log(**query)
        assert resp.status_code == 422, query
        assert list(resp.json["errors"]["query"]) == list(query)


def test_times_at_the_edges_of_the_calendar(log: Any) -> None:
    # Valid times that UTC cannot hold (year 0, year 10000) stand for "since ever" and "until forever".
    assert numbers(log(since="0001-01-01T00:00:00+05:00", until="9999-12-31T23:59:59-05:00", type="login")) == [
        2, 1, 0]


def test_paging(log: Any) -> None:
    first = log(per_page=4).json
    assert first["total"] == 7 and first["page"] == 1 and first["per_page"] == 4
    assert [i["details"].get("n") for i in first["items"]] == [5, 4, 3, 2]
    assert [i["details"].get("n") for i in log(per_page=4, page=2).json["items"]] == [1, 0, None]
    assert log(per_page=4, page=3).json == {"items": [], "page": 3, "per_page": 4, "total": 7}
    assert log().json["per_page"] == 50
