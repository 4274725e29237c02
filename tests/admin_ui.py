"""Helpers for the admin web UI tests: sign in as an admin, post a page's form the way a browser does, read
what the page says next to a field, and the audit events a change left.

Import as ``from admin_ui import ...`` (pytest puts tests/ on sys.path through conftest.py).
"""

from __future__ import annotations

import html
import re
from typing import Any

from flask import g, has_app_context
from flask.testing import FlaskClient
from helpers import DEFAULT_PASSWORD, csrf_token, login, make_user
from werkzeug.test import TestResponse

from idp import audit
from idp.audit import AuditEvent

ADMIN = "root"
ACTOR = f"admin:{ADMIN}"


def sign_in_admin(client: FlaskClient, username: str = ADMIN, group: str = "idp-admins") -> FlaskClient:
    """Make ``username`` a member of ``group`` (the admin group by default) and sign the client in."""
    make_user(username, groups=[group])
    assert login(client, username, DEFAULT_PASSWORD).status_code == 302
    return client


def post_form(client: FlaskClient, page: str, action: str, data: dict[str, Any] | None = None,
              **kwargs: Any) -> TestResponse:
    """GET ``page`` (200), then POST ``data`` with that page's CSRF token to ``action``."""
    if has_app_context():  # another client's token, cached in the test's one app context (see helpers.login)
        g.pop("csrf_token", None)
    shown = client.get(page)
    assert shown.status_code == 200, (page, shown.status_code)
    return client.post(action, data={"csrf_token": csrf_token(shown.get_data(as_text=True)), **(data or {})},
                       **kwargs)


def _markup(page: TestResponse | str) -> str:
    return page if isinstance(page, str) else page.get_data(as_text=True)


def text(page: TestResponse | str) -> str:
    """The page as text, entities decoded ("it's" rather than "it&#39;s")."""
    return html.unescape(_markup(page))


def _words(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def field_errors(page: TestResponse | str, field_id: str) -> str:
    """The error list the page shows next to the field with this id ("" when none)."""
    match = re.search(rf'<ul class="field-errors" id="{re.escape(field_id)}-errors">(.*?)</ul>', _markup(page), re.S)
    return _words(match.group(1)) if match else ""


def form_errors(page: TestResponse | str) -> str:
    """The errors shown above the page's forms: a service's refusal about no one field."""
    return " ".join(_words(f) for f in re.findall(r'<div class="error form-errors" role="alert">(.*?)</div>',
                                                  _markup(page), re.S))


def flashed(page: TestResponse | str) -> str:
    return " ".join(_words(m) for m in re.findall(r'<p class="flash [^"]*" role="status">(.*?)</p>',
                                                  _markup(page), re.S))


def events(type: str) -> list[AuditEvent]:
    """The audit events of this type, newest first."""
    return audit.events(type=type)


def by_admin(type: str, actor: str = ACTOR) -> list[AuditEvent]:
    return [e for e in events(type) if e.actor == actor]
