"""The token endpoint's reads, as the grants make them once per request: a client, a refresh token and a user are
read afresh by every request (a change made between two requests is seen by the second), a client changed in a
request is read again in that request, a refresh token raced by several refreshes is used once, and a user
disabled since gets nothing from a code or a refresh token they hold."""

from __future__ import annotations

import base64
import dataclasses
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from conftest import REDIS_URL
from flask import Flask
from helpers import login, make_user, sql_statements
from oidc_peers import PASSWORD, REDIRECT_URI, browse, register
from sqlalchemy import delete, insert, select, update
from test_code_state import at_once

from idp import audit
from idp.extensions import db
from idp.oidc import clients, consent, server
from idp.store import OidcClient, OidcConsent, OidcToken, User

GRANTS = ("authorization_code", "refresh_token", "client_credentials")


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, email="alice@example.test")
    return live_server


def token(idp: Any, client_id: str, secret: str | None, **data: str) -> requests.Response:
    return requests.post(idp.url + "/oauth/token", data=data, auth=(client_id, secret or ""), timeout=10)


def code_for(idp: Any, reg: clients.Registered, browser: requests.Session | None = None) -> tuple[str, str]:
    verifier = generate_token(48)
    arrival = browse(browser or requests.Session(), idp.url + "/oauth/authorize?" + requests.compat.urlencode({
        "response_type": "code", "client_id": reg.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid email",
        "state": "s1", "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"}))
    return arrival.params["code"], verifier


def exchange(idp: Any, reg: clients.Registered, code: str, verifier: str) -> requests.Response:
    return token(idp, reg.client_id, reg.client_secret, grant_type="authorization_code", code=code,
                 redirect_uri=REDIRECT_URI, code_verifier=verifier)


def refresh(idp: Any, reg: clients.Registered, refresh_token: str) -> requests.Response:
    return token(idp, reg.client_id, reg.client_secret, grant_type="refresh_token", refresh_token=refresh_token)


def active(idp: Any, reg: clients.Registered, value: str) -> bool:
    resp = requests.post(idp.url + "/oauth/introspect", data={"token": value},
                         auth=(reg.client_id, reg.client_secret or ""), timeout=10)
    return bool(resp.json()["active"])


def change(client_id: str, **values: Any) -> None:
    current = clients.options_of(clients.get_or_404(client_id))
    clients.update(client_id, dataclasses.replace(current, **values), actor="test")
    db.session.commit()


def test_a_change_to_a_client_is_seen_by_its_next_token_request(idp: Any) -> None:
    reg = register(grant_types=GRANTS)
    first = token(idp, reg.client_id, reg.client_secret, grant_type="client_credentials")
    assert first.status_code == 200 and first.json()["access_token"].count(".") == 0  # opaque

    change(reg.client_id, access_token_format="jwt")
    jwt = token(idp, reg.client_id, reg.client_secret, grant_type="client_credentials")
    assert jwt.status_code == 200 and jwt.json()["access_token"].count(".") == 2

    rotated = clients.rotate_secret(reg.client_id, actor="test")
    db.session.commit()
    old = token(idp, reg.client_id, reg.client_secret, grant_type="client_credentials")
    assert old.status_code == 401 and old.json()["error"] == "invalid_client"
    assert token(idp, reg.client_id, rotated.client_secret, grant_type="client_credentials").status_code == 200

    change(reg.client_id, grant_types=("authorization_code", "refresh_token"))
    refused = token(idp, reg.client_id, rotated.client_secret, grant_type="client_credentials")
    assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client"


def test_a_client_changed_in_a_request_is_read_again_in_it(app: Flask) -> None:
    reg = register(grant_types=GRANTS)
    db.session.commit()
    with app.test_request_context("/oauth/token", method="POST"):
        before = clients.get(reg.client_id)
        assert before is not None and before.access_token_format == "opaque"
        assert clients.get(reg.client_id) is before  # one read per request
        change(reg.client_id, access_token_format="jwt")
        after = clients.get(reg.client_id)
        assert after is not None and after.access_token_format == "jwt"
        rotated = clients.rotate_secret(reg.client_id, actor="test")
        assert rotated.client_secret is not None
        now = clients.get(reg.client_id)
        assert now is not None and now.check_client_secret(rotated.client_secret)
        clients.remove(reg.client_id, actor="test")
        assert clients.get(reg.client_id) is None


def test_a_client_removed_elsewhere_during_a_request_gets_no_tokens(app: Flask) -> None:
    """Another instance removes the client while this token request waits (on a directory, say): the request's
    next commit drops its copy, and the decision reads the client again."""
    reg = register(grant_types=GRANTS)
    db.session.commit()
    with app.test_request_context("/oauth/token", method="POST"):
        client = clients.get(reg.client_id)
        assert client is not None
        server.decide(None, client, "client_credentials")  # allowed while it exists
        with db.engine.begin() as elsewhere:  # the other instance: its own connection and transaction
            elsewhere.execute(delete(OidcClient).where(OidcClient.client_id == reg.client_id))
        db.session.commit()  # e.g. the directory's answer committed
        with pytest.raises(InvalidClientError):
            server.decide(None, client, "client_credentials")


def test_a_refresh_token_raced_by_eight_refreshes_is_used_once(idp: Any) -> None:
    """Sent together, the eight may run one after the other or truly at once: either way one gets new tokens,
    and the others, being replays, revoke what that one got along with the rest of the family."""
    reg = register()
    tokens = exchange(idp, reg, *code_for(idp, reg)).json()
    answers = at_once(8, lambda: refresh(idp, reg, tokens["refresh_token"]))
    assert sorted(a.status_code for a in answers) == [200] + [400] * 7
    assert {a.json()["error"] for a in answers if a.status_code == 400} == {"invalid_grant"}
    (won,) = (a.json() for a in answers if a.status_code == 200)
    for value in (won["access_token"], won["refresh_token"], tokens["access_token"]):
        assert not active(idp, reg, value)
    assert refresh(idp, reg, won["refresh_token"]).status_code == 400


def test_refresh_tokens_end_with_their_sign_ins_absolute_lifetime_not_its_idle_timeout(
        idp: Any, frozen_clock: Any) -> None:
    """A client refreshes when its access token runs out (an hour), past the sign-in's idle timeout (30 minutes):
    that goes on, and does not keep the browser's session alive either. The sign-in's absolute lifetime (8 hours)
    ends its tokens, however often they are refreshed, with nobody's browser there to notice."""
    reg = register()
    browser = requests.Session()
    tokens = exchange(idp, reg, *code_for(idp, reg, browser)).json()
    frozen_clock.advance(minutes=61)
    refreshed = refresh(idp, reg, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    # The browser itself has been idle an hour: its session ends, and the tokens issued in it with it.
    assert "/login" in browser.get(idp.url + "/portal", allow_redirects=False, timeout=10).headers["Location"]
    assert refresh(idp, reg, refreshed.json()["refresh_token"]).json()["error"] == "invalid_grant"

    kept = exchange(idp, reg, *code_for(idp, reg)).json()["refresh_token"]
    for _ in range(7):  # to 7 hours after that sign-in
        frozen_clock.advance(hours=1)
        answer = refresh(idp, reg, kept)
        assert answer.status_code == 200, answer.text
        kept = answer.json()["refresh_token"]
    frozen_clock.advance(hours=1)
    refused = refresh(idp, reg, kept)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    assert audit.events(type="session.expire")[0].reason == "absolute lifetime reached"  # the newest


def test_a_user_disabled_since_gets_nothing_from_their_code_or_refresh_token(idp: Any) -> None:
    reg = register()
    tokens = exchange(idp, reg, *code_for(idp, reg)).json()
    code, verifier = code_for(idp, reg)
    # The row alone, not `idp user disable` (which also ends sessions and revokes tokens): the grants' own check.
    user = db.session.scalars(db.select(User).where(User.username == "alice")).one()
    user.enabled = False
    db.session.commit()

    refreshed = refresh(idp, reg, tokens["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"
    exchanged = exchange(idp, reg, code, verifier)
    assert exchanged.status_code == 400 and exchanged.json()["error"] == "invalid_grant"

    user.enabled = True
    db.session.commit()
    assert refresh(idp, reg, tokens["refresh_token"]).status_code == 200  # refused, not spent


def test_a_refresh_token_revoked_while_its_refresh_runs_is_refused_but_not_taken_for_a_replay(
    idp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client revokes its refresh token (RFC 7009) between the refresh reading it and using it: the refresh
    is refused with invalid_grant, and nothing is audited as a replay (nobody used the token twice)."""
    reg = register()
    tokens = exchange(idp, reg, *code_for(idp, reg)).json()
    principal_now = server.principal_now

    def revoked_meanwhile(user: Any, authn_at: Any) -> Any:  # the grant's look at its user, after the token's read
        resp = requests.post(idp.url + "/oauth/revoke", data={"token": tokens["refresh_token"]},
                             auth=(reg.client_id, reg.client_secret or ""), timeout=10)
        assert resp.status_code == 200
        return principal_now(user, authn_at)

    monkeypatch.setattr(server, "principal_now", revoked_meanwhile)
    refused = refresh(idp, reg, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    db.session.expire_all()
    assert audit.events(type="oidc.refresh_reuse") == []
    assert [e.outcome for e in audit.events(type="oidc.refresh")] == []
    assert not active(idp, reg, tokens["refresh_token"])


@pytest.mark.parametrize("revocation", ["family", "consent"])
def test_revoking_a_family_catches_the_token_a_refresh_committed_while_it_waited(app: Flask, revocation: str) -> None:
    """PostgreSQL: a revocation's UPDATE that waits on the row a refresh holds then re-reads only the rows it had
    found, so the refresh's new token, committed at that moment, stayed active after a logout, a revocation or a
    user's withdrawn consent."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer: a revocation runs before or after a refresh, never across it")
    t = datetime.now(UTC)
    alice = make_user("alice", PASSWORD)
    db.session.add(OidcConsent(user_id=alice.id, client_id="c", scope="openid"))
    db.session.commit()

    def row(n: int) -> dict[str, Any]:
        return {"client_id": "c", "user_id": alice.id, "grant_type": "refresh_token", "scope": "openid",
                "access_token_hash": f"a{n}", "refresh_token_hash": f"r{n}", "family_id": "fam", "issued_at": t,
                "expires_at": t + timedelta(hours=1)}

    with db.engine.begin() as conn:
        first = conn.execute(insert(OidcToken).returning(OidcToken.id), row(1)).scalar_one()
    refresh = db.engine.connect()
    refreshing = refresh.begin()  # a refresh in flight: the old token taken, a new one added, not committed yet
    refresh.execute(update(OidcToken).where(OidcToken.id == first).values(refresh_used_at=t))
    refresh.execute(insert(OidcToken), row(2))

    def revoke() -> None:
        with app.app_context():
            if revocation == "family":
                server.revoke_tokens(OidcToken.family_id == "fam")
            else:
                consent.revoke(alice.id, "alice", "c", actor="alice")
            db.session.commit()

    revoker = threading.Thread(target=revoke)
    revoker.start()
    time.sleep(0.5)  # the revocation now waits on the old token's row
    refreshing.commit()
    refresh.close()
    revoker.join(10)
    db.session.rollback()
    left = db.session.scalars(select(OidcToken.access_token_hash).where(OidcToken.revoked_at.is_(None))).all()
    assert left == []


def _alices_code(app: Flask) -> tuple[dict[str, str], dict[str, str]]:
    """alice (in two groups) signs in and authorizes a client: its Basic credentials and the code exchange's
    form."""
    make_user("alice", PASSWORD, groups=["eng", "ops"])
    reg = register(grant_types=GRANTS)
    db.session.commit()
    browser = app.test_client()
    login(browser, "alice", PASSWORD)
    verifier = generate_token(48)
    answer = browser.get("/oauth/authorize?" + requests.compat.urlencode({
        "response_type": "code", "client_id": reg.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "state": "s1", "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"}))
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    auth = {"Authorization": "Basic " + base64.b64encode(f"{reg.client_id}:{reg.client_secret}".encode()).decode()}
    return auth, {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                  "code_verifier": verifier}


def _user_reads(statements: list[str]) -> str:
    (read,) = [s for s in statements if "FROM users" in s or "JOIN users" in s]
    return read


def test_a_refresh_reads_its_token_and_its_user_in_one_statement(app: Flask) -> None:
    """The grant needs the token's user (still there? enabled? which groups?) as much as the token: both come in
    one statement (a user disabled since is refused: test_a_user_disabled_since_gets_nothing_...)."""
    auth, exchange = _alices_code(app)
    backchannel = app.test_client()
    tokens = backchannel.post("/oauth/token", headers=auth, data=exchange).get_json()
    with sql_statements() as statements:
        refreshed = backchannel.post("/oauth/token", headers=auth, data={
            "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.get_data(as_text=True)
    assert "FROM oidc_tokens" in _user_reads(statements)


def test_a_code_exchange_reads_its_code_and_its_user_in_one_statement(app: Flask) -> None:
    """As a refresh: the code's user comes with the code, in the database (in Redis the code is read there and
    the user in one statement)."""
    auth, exchange = _alices_code(app)
    with sql_statements() as statements:
        exchanged = app.test_client().post("/oauth/token", headers=auth, data=exchange)
    assert exchanged.status_code == 200, exchanged.get_data(as_text=True)
    assert exchanged.get_json()["id_token"]
    assert ("FROM oidc_authorization_codes" in _user_reads(statements)) is (REDIS_URL is None), statements
