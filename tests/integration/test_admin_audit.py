"""The audit log page (/admin/audit): newest first, filtered by user, actor, type, outcome and time, paged."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from admin_ui import field_errors, post_form, sign_in_admin, text
from conftest import Clock
from flask.testing import FlaskClient
from helpers import DEFAULT_PASSWORD, login, make_user
from werkzeug.test import TestResponse

from idp import audit
from idp.audit import AuditEvent

START = datetime(2031, 5, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def admin(client: FlaskClient, frozen_clock: Clock) -> FlaskClient:
    frozen_clock.current = START
    return sign_in_admin(client)


def rows(resp: TestResponse) -> list[tuple[str, str, str]]:
    """(time, type, outcome) of each row shown, top to bottom."""
    assert resp.status_code == 200, resp.status_code
    page = resp.get_data(as_text=True)
    body = page.split('<table class="list audit">', 1)[1] if '<table class="list audit">' in page else ""
    return re.findall(r'<tr class="\w+"><td class="mono">([^<]+)</td><td>([^<]+)</td>\s*<td>(\w+)</td>', body)


def record(frozen_clock: Clock, type: str, *, at: datetime, **fields: Any) -> None:
    """An event stamped ``at``; the clock then goes back, so that the admin's session does not idle out."""
    before, frozen_clock.current = frozen_clock.current, at
    audit.record(AuditEvent(type=type, **fields))
    frozen_clock.current = before


def test_newest_first_with_what_each_event_says(admin: FlaskClient, frozen_clock: Clock) -> None:
    record(frozen_clock, "sso.issue", at=START + timedelta(minutes=1), username="alice", sp="https://sp.example",
           client_ip="192.0.2.7", details={"nameid_format": "persistent"})
    record(frozen_clock, "access.denied", at=START + timedelta(minutes=2), username="bob", outcome="failure",
           reason="no assignment")
    shown = rows(admin.get("/admin/audit"))
    assert shown[:2] == [("2031-05-01 09:02:00", "access.denied", "failure"),
                         ("2031-05-01 09:01:00", "sso.issue", "success")]
    page = text(admin.get("/admin/audit"))
    assert "https://sp.example" in page and "192.0.2.7" in page and "no assignment" in page
    assert '"nameid_format": "persistent"' in page


def test_filters(admin: FlaskClient, frozen_clock: Clock) -> None:
    record(frozen_clock, "login", at=datetime(2031, 5, 2, 8, 0, tzinfo=UTC), username="alice")
    record(frozen_clock, "login", at=datetime(2031, 5, 2, 23, 30, tzinfo=UTC), username="bob", outcome="failure",
           reason="bad password")
    record(frozen_clock, "user.disable", at=datetime(2031, 5, 3, 10, 0, tzinfo=UTC), username="bob",
           actor="admin:root")
    record(frozen_clock, "user.create", at=datetime(2031, 5, 4, 10, 0, tzinfo=UTC), username="carol",
           actor="cli:ops")

    def types(query: str) -> list[str]:
        return [t for _, t, _ in rows(admin.get(f"/admin/audit?{query}"))]

    assert types("username=bob") == ["user.disable", "login"]
    assert types("type=login") == ["login"] * 3  # alice, bob and the admin's own sign-in
    assert types("type=login&username=alice") == ["login"]
    assert types("outcome=failure&type=login") == ["login"]
    assert types("actor=admin:root") == ["user.disable"]
    # A date includes its whole day; a time is exact.
    assert types("since=2031-05-02&until=2031-05-02") == ["login", "login"]
    assert types("since=2031-05-02T09:00&until=2031-05-03") == ["user.disable", "login"]
    assert types("since=2031-05-04") == ["user.create"]
    assert types("since=2031-05-03T11:00%2B02:00&until=2031-05-03T10:00:01Z") == ["user.disable"]  # zones count
    assert types("username=nobody") == []
    assert "No event matches." in text(admin.get("/admin/audit?username=nobody"))
    # The type select offers the types that occur.
    assert '<option value="user.disable">user.disable</option>' in admin.get("/admin/audit").get_data(as_text=True)


def test_times_at_the_ends_of_the_calendar(admin: FlaskClient, frozen_clock: Clock) -> None:
    # Valid ISO times that UTC cannot hold (year 0, year 10000) mean "since the beginning" and "until the end".
    record(frozen_clock, "user.create", at=START + timedelta(minutes=1), username="alice")

    def types(query: str) -> list[str]:
        return [t for _, t, _ in rows(admin.get(f"/admin/audit?username=alice&{query}"))]

    assert types("since=0001-01-01T00:00%2B05:00&until=9999-12-31T23:59:59-05:00") == ["user.create"]
    assert types("since=0001-01-01&until=9999-12-31") == ["user.create"]
    assert types("until=0001-01-01T04:00%2B05:00") == []
    assert types("since=9999-12-31T23:00-05:00") == []


def test_bad_times_are_shown_next_to_the_field(admin: FlaskClient) -> None:
    bad = admin.get("/admin/audit?since=yesterday")
    assert bad.status_code == 422 and "Not a date or a time" in field_errors(bad, "since")
    backwards = admin.get("/admin/audit?since=2031-05-03&until=2031-05-01")
    assert backwards.status_code == 422 and "Until must be later than since." in field_errors(backwards, "until")


def test_paged(admin: FlaskClient, frozen_clock: Clock) -> None:
    for i in range(120):
        record(frozen_clock, "token.issue", at=START + timedelta(hours=1, seconds=i), username=f"u{i:03}")
    first = admin.get("/admin/audit?type=token.issue")
    assert len(rows(first)) == 50 and "Page 1 of 3 (120 events)" in text(first)
    older = re.search(r'href="([^"]+)" rel="next"', text(first))
    assert older and "type=token.issue" in older.group(1) and "page=2" in older.group(1)
    last = admin.get("/admin/audit?type=token.issue&page=3")
    assert len(rows(last)) == 20 and "u000" in text(last) and "u119" not in text(last)


def test_admin_changes_appear_naming_the_admin(admin: FlaskClient) -> None:
    assert post_form(admin, "/admin/groups", "/admin/groups", {"name": "auditors"}).status_code == 303
    page = text(admin.get("/admin/audit?actor=admin:root"))
    assert "group.create" in page and '"group": "auditors"' in page


def test_non_admins_cannot_read_the_audit_log(client: FlaskClient) -> None:
    make_user("dan")
    assert login(client, "dan", DEFAULT_PASSWORD).status_code == 302
    assert client.get("/admin/audit").status_code == 403
    assert client.get("/admin/audit?username=dan").status_code == 403
    denied = audit.events(type="admin.denied")
    assert [(e.username, e.details["path"]) for e in denied] == [("dan", "/admin/audit")] * 2
