import logging
import re
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers import login, make_user
from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from idp import create_app
from idp.config import Settings
from idp.extensions import db
from idp.runtime import keystore
from idp.store import User


def test_first_start_generates_private_keys(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "inst", log_format="text"))
    with app.app_context():
        ring = keystore().ring()
    keyfile = tmp_path / "inst" / "keys" / f"{ring.active.kid}.key"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "inst" / "secret_key").stat().st_mode) == 0o600
    assert (tmp_path / "inst" / "idp.db").exists()
    # A second start reuses the same key.
    app2 = create_app(Settings(data_dir=tmp_path / "inst", log_format="text"))
    with app2.app_context():
        assert keystore().ring().active.kid == ring.active.kid


def test_a_short_secret_key_is_warned_of_at_start_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Warned of, not refused: it also encrypts stored bind passwords, which a new key would make unreadable.
    create_app(Settings(data_dir=tmp_path / "inst", secret_key="too-short", log_format="text"))
    assert "IDP_SECRET_KEY is shorter than 32 characters" in caplog.text and "too-short" not in caplog.text
    caplog.clear()
    create_app(Settings(data_dir=tmp_path / "inst", secret_key="k" * 32, log_format="text"))
    assert "IDP_SECRET_KEY" not in caplog.text


def test_unknown_path_is_a_clean_404(client: FlaskClient, app: Flask) -> None:
    resp = client.get("/no/such/page")
    assert resp.status_code == 404
    assert b"Traceback" not in resp.data


def test_every_answer_names_its_request_and_an_error_page_shows_the_name(client: FlaskClient) -> None:
    """The id in the answer's X-Request-ID is the one in the request's log lines: a user quoting the reference on
    an error page leads to them. Refusals made before any view (CSRF, a body too large) and the admin API's JSON
    answers carry one as well."""
    first, second = client.get("/no/such/page"), client.get("/no/such/page")
    ids = [resp.headers["X-Request-ID"] for resp in (first, second)]
    assert ids[0] != ids[1] and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids), ids
    assert f"Reference: <code>{ids[0]}</code>" in first.get_data(as_text=True)
    refused = client.post("/login", data={"username": "alice", "password": "x"})  # no CSRF token
    assert refused.status_code == 400
    assert f"Reference: <code>{refused.headers['X-Request-ID']}</code>" in refused.get_data(as_text=True)
    too_large = client.post("/login", data={"username": "x" * (2 << 20)})
    assert too_large.status_code == 413 and too_large.headers["X-Request-ID"]
    api = client.get("/api/v1/audit")
    assert api.status_code == 401 and re.fullmatch(r"[0-9a-f]{16}", api.headers["X-Request-ID"])


def test_a_trusted_proxys_request_id_is_logged_beside_ours(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """ingress-nginx sends its own X-Request-ID, or passes on one its client chose: logged as the proxy's, never
    taken for ours."""
    app = create_app(make_settings(trusted_proxy_hops=1))
    client = app.test_client()
    with app.app_context(), caplog.at_level(logging.INFO, logger="idp"):
        resp = login(client, "nobody", "wrong", environ_base={"HTTP_X_REQUEST_ID": "9f2c1b7e-ingress.4"})
    (event,) = [r for r in caplog.records if r.getMessage() == "audit login failure"]
    assert getattr(event, "forwarded_request_id", None) == "9f2c1b7e-ingress.4"
    assert getattr(event, "request_id", None) == resp.headers["X-Request-ID"] != "9f2c1b7e-ingress.4"
    # One that cannot go into a log line as it is is left out; without a trusted proxy none is logged.
    caplog.clear()
    with app.app_context(), caplog.at_level(logging.INFO, logger="idp"):
        for odd in ("two words", "x" * 129):
            login(client, "nobody", "wrong", environ_base={"HTTP_X_REQUEST_ID": odd})
        direct = create_app(make_settings())
        with direct.app_context():
            login(direct.test_client(), "nobody", "wrong", environ_base={"HTTP_X_REQUEST_ID": "9f2c1b7e-ingress.4"})
    events = [r for r in caplog.records if r.getMessage() == "audit login failure"]
    assert len(events) == 3 and all(getattr(r, "forwarded_request_id", "unset") is None for r in events)
    for made in (app, direct):
        with made.app_context():
            db.engine.dispose()


def test_a_database_error_quotes_no_stored_values(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """A database error's text (logged with a 500's trace, printed by a failed command) quotes the statement
    but not its values: here a password hash, elsewhere token and secret digests."""
    make_user("alice")
    db.session.commit()
    stored = "$argon2id$v=19$m=19456,t=2,p=1$not-a-real-hash-" + "x" * 20
    with pytest.raises(IntegrityError) as refused:
        db.session.execute(insert(User).values(username="alice", password_hash=stored, source="local"))
    db.session.rollback()
    assert "INSERT INTO users" in str(refused.value)
    assert stored not in str(refused.value) and "parameters hidden" in str(refused.value)
