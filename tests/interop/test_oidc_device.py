"""The device authorization grant (RFC 8628) over real HTTP: a device client written from the RFC with plain
``requests`` (authlib has no client side for it), a user approving in a browser through the real login form
and the ``/device`` page, and the ID token checked by PyJWT against our JWKS."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urljoin

import lxml.html
import pytest
import requests
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from helpers import audit_insert_lost, login_http, make_user
from oidc_peers import (
    DEVICE_GRANT,
    PASSWORD,
    REDIRECT_URI,
    browse,
    device_authorization,
    error_of,
    open_device_page,
    poll,
    post_form,
    pyjwt_validate,
    register,
)
from sqlalchemy import select, update

from idp import audit, clock
from idp.authn import directory, throttle
from idp.extensions import db
from idp.oidc import consent
from idp.oidc.device import find_pending, normalize_user_code
from idp.oidc.device_page import MAX_FAILURES_PER_USER
from idp.oidc.views import MAX_DEVICE_CODES_PER_ADDRESS
from idp.state import device_codes, redis_client
from idp.store import OidcConsent, OidcDeviceCode, OidcToken, User
from idp.store.oidc import digest


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, email="alice@example.test", display_name="Alice Liddell")
    return live_server


@pytest.fixture
def tv() -> Any:
    """A public client (a television app) allowed the device grant and refresh tokens."""
    return register(name="Living-room TV", public=True, redirect_uris=(),
                    grant_types=(DEVICE_GRANT, "refresh_token"), first_party=False)


def test_device_flow_end_to_end(idp: Any, tv: Any, frozen_clock: Any) -> None:
    frozen_clock.advance(minutes=-1)  # tokens issued "now" stay in the past for PyJWT's iat check
    discovery = requests.get(idp.url + "/.well-known/openid-configuration", timeout=10).json()
    assert discovery["device_authorization_endpoint"] == idp.url + "/oauth/device"
    assert DEVICE_GRANT in discovery["grant_types_supported"]

    grant = device_authorization(idp, tv.client_id)
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}", grant["user_code"])
    assert grant["verification_uri"] == idp.url + "/device"
    assert grant["verification_uri_complete"] == idp.url + "/device?user_code=" + grant["user_code"]
    assert grant["interval"] == 5 and grant["expires_in"] == 600

    # The user has not answered yet; polling again at once is too fast, and the interval grows by 5 s.
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "authorization_pending"
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "slow_down"
    frozen_clock.advance(seconds=6)  # enough for 5 s, not for the 10 s the device must now wait
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "slow_down"
    frozen_clock.advance(seconds=16)
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "authorization_pending"

    # The user opens the short link, signs in, types the code sloppily and confirms what the TV gets.
    http = requests.Session()
    page = open_device_page(http, grant["verification_uri_complete"])
    typed = grant["user_code"].replace("-", " ").lower()
    confirm = post_form(http, page, user_code=typed)
    assert "Connect Living-room TV?" in confirm.text and grant["user_code"] in confirm.text
    assert "Your email address" in confirm.text
    done = post_form(http, confirm, decision="approve")
    assert "Device connected" in done.text

    token_resp = poll(idp, tv.client_id, grant["device_code"])
    assert token_resp.status_code == 200, token_resp.text
    token = token_resp.json()
    assert token["refresh_token"] and token["scope"] == "openid profile email"
    claims = pyjwt_validate(idp, token["id_token"], tv.client_id, "RS256")
    assert claims["preferred_username"] == "alice" and claims["email"] == "alice@example.test"
    info = requests.get(idp.url + "/oauth/userinfo", headers={"Authorization": "Bearer " + token["access_token"]},
                        timeout=10).json()
    assert info["sub"] == claims["sub"] and info["name"] == "Alice Liddell"

    # One use: the same device code gives nothing more, and the used code cannot be entered again.
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "invalid_grant"
    again = post_form(http, open_device_page(http, idp.url + "/device"), user_code=grant["user_code"])
    assert "not valid" in again.text
    db.session.expire_all()
    types = [(e.type, e.outcome) for e in audit.events(limit=50)]
    for expected in (("oidc.device.authorize", "success"), ("oidc.device.approve", "success"),
                     ("oidc.token", "success"), ("oidc.consent.grant", "success")):
        assert expected in types, expected


def test_the_user_denies(idp: Any, tv: Any) -> None:
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    confirm = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    done = post_form(http, confirm, decision="deny")
    assert "Request denied" in done.text
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "access_denied"
    db.session.expire_all()
    assert [e.outcome for e in audit.events(type="oidc.device.deny")] == ["failure"]


def test_an_approval_whose_consent_is_withdrawn_before_the_device_polls_gives_no_tokens(
        idp: Any, tv: Any, frozen_clock: Any) -> None:
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    confirm = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    assert "Device connected" in post_form(http, confirm, decision="approve").text
    alice = db.session.scalar(select(User).where(User.username == "alice"))
    consent.revoke(alice.id, "alice", tv.client_id, actor="alice")  # on the home page, before the TV polls
    db.session.commit()
    # Within seconds of the approval a missing consent may be one still being stored (Redis): the TV waits.
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "authorization_pending"
    frozen_clock.advance(seconds=11)
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "access_denied"


def test_an_approval_whose_audit_is_lost_with_the_database_still_connects_the_device(idp: Any, tv: Any) -> None:
    """The database lost as the approval is recorded: 503; the user sends it again and the TV gets its tokens.
    In Redis the decision is written at once: the consent it needs must be stored before it, not with the audit
    event that failed (the TV was then refused, access_denied, for a consent it never had)."""
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    confirm = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    with audit_insert_lost("oidc.device.approve"):
        assert post_form(http, confirm, decision="approve").status_code == 503
    assert "Device connected" in post_form(http, confirm, decision="approve").text  # sent again
    token = poll(idp, tv.client_id, grant["device_code"])
    assert token.status_code == 200, token.text


def test_an_approval_that_finds_the_request_decided_meanwhile_leaves_no_consent(
        idp: Any, tv: Any, monkeypatch: Any) -> None:
    """Decided by another submission (or expired) between the page and the answer: nothing is approved, and the
    client is not left among the user's allowed apps, where it would skip the consent page from then on."""
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    confirm = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    monkeypatch.setattr(device_codes, "decide", lambda *args: False)
    assert "Device connected" not in post_form(http, confirm, decision="approve").text
    db.session.expire_all()
    assert db.session.scalar(select(OidcConsent).where(OidcConsent.client_id == tv.client_id)) is None
    assert not audit.events(type="oidc.consent.grant")


def test_a_poll_between_an_approval_and_its_consent_waits_for_it(idp: Any, tv: Any, frozen_clock: Any) -> None:
    """In Redis an approval is seen at once and its consent once the approving request commits: a device polling
    in between hears authorization_pending, not a final access_denied; a consent still missing after that is a
    withdrawn one."""
    grant = device_authorization(idp, tv.client_id)
    alice = db.session.scalar(select(User).where(User.username == "alice"))
    t = clock.now()
    assert device_codes.decide(digest(grant["device_code"]), True, alice.id, t, t)  # the consent not yet stored
    db.session.commit()
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "authorization_pending"
    frozen_clock.advance(seconds=11)
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "access_denied"


def test_an_answer_sent_again_stands_and_is_no_wrong_code(idp: Any, tv: Any) -> None:
    """A double click on Allow, or Back and Allow again: the second submission finds the request decided."""
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    confirm = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    assert "Device connected" in post_form(http, confirm, decision="approve").text
    # More times than wrong codes lock a user out; a different answer sent late does not undo the first.
    again = [post_form(http, confirm, decision=d) for d in ("approve", "approve", "deny", "approve", "approve")]
    assert [a.status_code for a in again] == [200] * 5 and all("Device connected" in a.text for a in again)
    assert poll(idp, tv.client_id, grant["device_code"]).status_code == 200
    db.session.expire_all()
    assert audit.events(type="oidc.device.code") == []
    assert len(audit.events(type="oidc.device.approve")) == 1
    # Another user sending that answer learns nothing from it: a wrong code for them.
    make_user("mallory", PASSWORD)
    other = requests.Session()
    page = open_device_page(other, grant["verification_uri"], username="mallory")
    late = post_form(other, page, user_code=grant["user_code"], decision="approve")
    assert "not valid" in late.text and "Device connected" not in late.text


def test_an_expired_device_code(idp: Any, tv: Any, frozen_clock: Any) -> None:
    grant = device_authorization(idp, tv.client_id)
    frozen_clock.advance(seconds=601)
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "expired_token"
    http = requests.Session()
    late = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    assert "not valid, has expired" in late.text


def test_wrong_user_codes_are_throttled(idp: Any, tv: Any) -> None:
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    page = open_device_page(http, grant["verification_uri"])
    wrong = "BBBB-BBBB" if grant["user_code"] != "BBBB-BBBB" else "CCCC-CCCC"
    answers = [post_form(http, page, user_code=wrong) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 429]
    assert "not valid" in answers[0].text and "Too many wrong codes" in answers[-1].text
    # Locked out: even the right code is not looked at now.
    right = post_form(http, page, user_code=grant["user_code"])
    assert right.status_code == 429 and "Connect Living-room TV?" not in right.text
    db.session.expire_all()
    failures = audit.events(type="oidc.device.code")
    assert len(failures) == 6 and all(e.outcome == "failure" for e in failures)


def test_wrong_user_codes_sent_at_once_are_held_to_the_limit(idp: Any, tv: Any, monkeypatch: Any) -> None:
    """Each entry holds its try before the code is looked up (as a sign-in holds its password try): twenty wrong
    codes sent at once get no more than five looked up, not twenty (the look-up is slowed, an injected delay, so
    that they overlap whatever the machine's pace)."""
    device_authorization(idp, tv.client_id)
    find = device_codes.find_by_user_code
    monkeypatch.setattr(device_codes, "find_by_user_code", lambda digest: time.sleep(0.2) or find(digest))
    http = requests.Session()
    page = open_device_page(http, idp.url + "/device")
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    assert token is not None

    def enter(_: int) -> requests.Response:
        return http.post(idp.url + "/device", data={"csrf_token": token.group(1), "user_code": "BBBB-BBBB"},
                         headers={"Referer": page.url}, timeout=30)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(enter, range(20)))
    looked_up = [a for a in answers if "not valid" in a.text]
    assert 1 <= len(looked_up) <= MAX_FAILURES_PER_USER, [a.status_code for a in answers]
    assert all(a.status_code == 429 for a in answers if a not in looked_up)


def test_a_wrong_code_whose_count_is_lost_with_the_database_is_not_held_against_the_user(idp: Any, tv: Any) -> None:
    """The database lost as a wrong code is counted: 503, and the try held for it is given back (in Redis, the
    count was written at once and stands), not left held until the window ends, where it would turn the right
    code away after four wrong ones."""
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    page = open_device_page(http, idp.url + "/device")
    with audit_insert_lost("oidc.device.code"):
        assert post_form(http, page, user_code="BBBB-BBBB").status_code == 503
    wrong = MAX_FAILURES_PER_USER - 1 if throttle.in_transaction() else MAX_FAILURES_PER_USER - 2
    assert [post_form(http, page, user_code="BBBB-BBBB").status_code for _ in range(wrong)] == [200] * wrong
    right = post_form(http, page, user_code=grant["user_code"])
    assert right.status_code == 200 and "Connect Living-room TV?" in right.text


def test_device_codes_from_one_address_are_limited(idp: Any, tv: Any) -> None:
    """A public client's id is no secret, and each device code is kept over an hour: one address gets at most
    MAX_DEVICE_CODES_PER_ADDRESS a window, then 429 slow_down, audited; the codes it got still work."""
    grants = [device_authorization(idp, tv.client_id) for _ in range(MAX_DEVICE_CODES_PER_ADDRESS)]
    refused = requests.post(idp.url + "/oauth/device", data={"client_id": tv.client_id}, timeout=10)
    assert refused.status_code == 429 and refused.json()["error"] == "slow_down", refused.text
    assert int(refused.headers["Retry-After"]) > 0
    assert error_of(poll(idp, tv.client_id, grants[-1]["device_code"])) == "authorization_pending"
    db.session.expire_all()
    assert [e.reason for e in audit.events(type="oidc.device.authorize") if e.outcome == "failure"] == [
        "too many device codes from this address"]


def test_device_codes_asked_for_at_once_are_held_to_the_limit(idp: Any, tv: Any, monkeypatch: Any) -> None:
    """Each request holds its place under the address's limit before its code is made: ten sent at once with
    three places left get three codes, not ten (issuing is slowed, an injected delay, so that they overlap)."""
    for _ in range(MAX_DEVICE_CODES_PER_ADDRESS - 3):
        device_authorization(idp, tv.client_id)
    issue = device_codes.issue
    monkeypatch.setattr(device_codes, "issue", lambda code: time.sleep(0.3) or issue(code))

    def ask(_: int) -> int:
        return requests.post(idp.url + "/oauth/device", data={"client_id": tv.client_id}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = sorted(pool.map(ask, range(10)))
    assert answers == [200] * 3 + [429] * 7


def test_the_device_page_form_needs_its_csrf_token(idp: Any, tv: Any) -> None:
    grant = device_authorization(idp, tv.client_id)
    http = requests.Session()
    page = open_device_page(http, grant["verification_uri"])
    forged = post_form(http, page, user_code=grant["user_code"], csrf_token="forged")
    assert forged.status_code == 400 and "Connect Living-room TV?" not in forged.text


def test_refusals_at_the_device_endpoints(idp: Any, tv: Any) -> None:
    web = register(name="web app")  # authorization_code and refresh_token only
    resp = requests.post(idp.url + "/oauth/device", data={"scope": "openid"},
                         auth=(web.client_id, web.client_secret), timeout=10)
    assert resp.status_code == 400 and resp.json()["error"] == "unauthorized_client"
    resp = requests.post(idp.url + "/oauth/device", data={"client_id": "nobody"}, timeout=10)
    assert resp.status_code in (400, 401) and resp.json()["error"] == "invalid_client"
    assert error_of(poll(idp, tv.client_id, "not-a-device-code")) == "invalid_grant"
    # Another client cannot redeem this client's device code: to it, the code does not exist (RFC 6749 5.2:
    # issued to another client is invalid_grant), and its polls do not pace the device's.
    other = register(name="other tv", public=True, redirect_uris=(), grant_types=(DEVICE_GRANT,))
    grant = device_authorization(idp, tv.client_id)
    for _ in range(2):
        resp = poll(idp, other.client_id, grant["device_code"])
        assert error_of(resp) == "invalid_grant" and resp.json()["error_description"] == "The device_code is not valid."
    assert error_of(poll(idp, tv.client_id, grant["device_code"])) == "authorization_pending"
    db.session.expire_all()
    refused = [e for e in audit.events(type="oidc.device.authorize") if e.outcome == "failure"]
    assert {e.reason for e in refused} == {"unauthorized_client", "invalid_client"}


def test_a_copy_of_the_store_does_not_give_the_user_codes_away(idp: Any, tv: Any) -> None:
    """A user code is some 2^35 guesses: a plain SHA-256 of it, stored, would be reversed from a copy of the
    database or Redis within its ten minutes, and the device approved by whoever did."""
    grant = device_authorization(idp, tv.client_id)
    code = normalize_user_code(grant["user_code"])
    assert code is not None
    plain = hashlib.sha256(code.encode()).hexdigest()
    client = redis_client()
    if client is not None:
        stored = [*client.keys("*"), *(str(v) for key in client.keys("*device*") if client.type(key) == "hash"
                                      for v in client.hgetall(key).values())]
    else:
        stored = [row.user_code_hash for row in db.session.scalars(select(OidcDeviceCode))]
    assert stored and not any(plain in value for value in stored)
    # The code still works as the user types it.
    assert find_pending(code) is not None


def _connected_tv(idp: Any, tv: Any, http: requests.Session) -> dict[str, Any]:
    """The TV's tokens once alice (signed in with ``http``) approved it."""
    grant = device_authorization(idp, tv.client_id)
    confirm = post_form(http, open_device_page(http, grant["verification_uri"]), user_code=grant["user_code"])
    assert "Device connected" in post_form(http, confirm, decision="approve").text
    token = poll(idp, tv.client_id, grant["device_code"])
    assert token.status_code == 200, token.text
    return dict(token.json())


def _refresh(idp: Any, tv: Any, token: dict[str, Any]) -> requests.Response:
    return requests.post(idp.url + "/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": tv.client_id})


def _userinfo(idp: Any, token: dict[str, Any]) -> int:
    return requests.get(idp.url + "/oauth/userinfo", headers={"Authorization": "Bearer " + token["access_token"]},
                        timeout=10).status_code


def test_a_password_reset_signs_the_user_out_of_browsers_and_devices(idp: Any, tv: Any) -> None:
    """Resetting the password is how an admin answers a stolen account: whoever holds a session or a device's
    tokens from before (a phished device approval above all) loses them. Signing out of the browser alone leaves
    the TV connected, on purpose."""
    browser = requests.Session()
    token = _connected_tv(idp, tv, browser)
    assert browser.get(idp.url + "/", timeout=10, allow_redirects=False).status_code == 200
    assert _userinfo(idp, token) == 200
    directory.set_password("alice", "a-new-password-42", actor="cli:root")
    db.session.commit()
    assert error_of(_refresh(idp, tv, token)) == "invalid_grant"
    assert _userinfo(idp, token) == 401
    assert browser.get(idp.url + "/", timeout=10, allow_redirects=False).status_code == 302  # to the login page
    db.session.expire_all()
    assert [e.details for e in audit.events(type="user.set_password")] == [{"sessions_ended": 1}]


def test_disabling_a_user_ends_their_devices_for_good(idp: Any, tv: Any) -> None:
    """Disabled, then enabled again (the usual answer to an incident): the TV's refresh token stays dead."""
    token = _connected_tv(idp, tv, requests.Session())
    directory.disable_user("alice", actor="cli:root")
    db.session.commit()
    directory.enable_user("alice", actor="cli:root")
    db.session.commit()
    assert error_of(_refresh(idp, tv, token)) == "invalid_grant"
    assert _userinfo(idp, token) == 401


def test_a_devices_grant_ends_90_days_after_the_approval_however_often_it_is_refreshed(
        idp: Any, tv: Any, frozen_clock: Any) -> None:
    """A device's tokens belong to no SSO session, whose absolute lifetime would end them; rotated every 13 days,
    each refresh token lives 14, but the grant no longer than 90 days from the sign-in that approved it (ASVS 5
    V10.4.8)."""
    token = _connected_tv(idp, tv, requests.Session())
    for _ in range(6):  # 78 days
        frozen_clock.advance(days=13)
        refreshed = _refresh(idp, tv, token)
        assert refreshed.status_code == 200, refreshed.text
        token = refreshed.json()
    frozen_clock.advance(days=12)  # 90 days and a little: the fresh refresh token's 14 days are cut
    assert error_of(_refresh(idp, tv, token)) == "invalid_grant"


def test_a_grant_stored_before_the_90_day_cap_ends_at_it_too(idp: Any, tv: Any, frozen_clock: Any) -> None:
    """A refresh token issued before the cap existed carries 14 days of its own whatever its grant's age."""
    token = _connected_tv(idp, tv, requests.Session())
    frozen_clock.advance(days=91)
    db.session.execute(update(OidcToken).values(refresh_expires_at=clock.now() + timedelta(days=7)))
    db.session.commit()
    assert error_of(_refresh(idp, tv, token)) == "invalid_grant"


def _disconnect_forms(page: requests.Response) -> list[Any]:
    return [f for f in lxml.html.fromstring(page.text).forms if "/disconnect" in (f.get("action") or "")]


def test_a_connected_device_is_listed_on_the_portal_and_disconnected_there(idp: Any) -> None:
    """A first-party client asks no consent, so "Apps you allowed" does not list it, and signing out leaves a
    device connected: the portal lists each device connected with a code, and its Disconnect button ends the
    device's tokens, for that device only, and for its own user only."""
    cli = register(name="Deploy CLI", public=True, redirect_uris=(), grant_types=(DEVICE_GRANT, "refresh_token"),
                   first_party=True)
    browser = requests.Session()
    laptop, desktop = _connected_tv(idp, cli, browser), _connected_tv(idp, cli, browser)
    home = browser.get(idp.url + "/", timeout=10)
    assert "Devices you connected" in home.text and "Apps you allowed" not in home.text
    forms = _disconnect_forms(home)
    assert [f.getparent().findtext("strong") for f in forms] == ["Deploy CLI", "Deploy CLI"]

    make_user("mallory", PASSWORD)
    other = requests.Session()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                      open_device_page(other, idp.url + "/device", username="mallory").text)
    assert token is not None
    stolen = other.post(urljoin(idp.url, forms[0].get("action")), data={"csrf_token": token.group(1)},
                        headers={"Referer": idp.url + "/"}, timeout=10)
    assert stolen.status_code == 404
    laptop, desktop = (_refresh(idp, cli, token).json() for token in (laptop, desktop))  # both still connected

    form = _disconnect_forms(browser.get(idp.url + "/", timeout=10))[0]
    done = browser.post(urljoin(idp.url, form.get("action")), timeout=10, headers={"Referer": idp.url + "/"},
                        data={i.get("name"): i.get("value") for i in form.xpath(".//input[@name]")})
    assert done.status_code == 200 and len(_disconnect_forms(done)) == 1
    # One device is disconnected (they were connected in the same second: either), the other is not.
    assert sorted(_refresh(idp, cli, token).status_code for token in (laptop, desktop)) == [200, 400]
    assert sorted(_userinfo(idp, token) for token in (laptop, desktop)) == [200, 401]
    db.session.expire_all()
    [event] = audit.events(type="oidc.device.disconnect")
    assert event.username == "alice" and event.details["revoked_tokens"] >= 1


def test_an_admin_setting_their_own_password_keeps_this_sign_in_and_what_it_issued(idp: Any, tv: Any) -> None:
    """Signed out everywhere else, devices included; the sign-in where the admin set it stays, and so do the
    tokens an application got in it."""
    make_user("root", PASSWORD, groups=["idp-admins"])
    here, elsewhere = requests.Session(), requests.Session()
    for browser in (here, elsewhere):
        assert login_http(browser, idp.url, "root", PASSWORD).status_code == 302
    wiki = register(name="wiki")
    verifier = secrets.token_urlsafe(48)
    code = browse(here, idp.url + "/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": wiki.client_id, "redirect_uri": REDIRECT_URI, "scope": "openid",
        "code_challenge": create_s256_code_challenge(verifier), "code_challenge_method": "S256"}),
        username=None).params["code"]
    wiki_token = requests.post(idp.url + "/oauth/token", auth=(wiki.client_id, wiki.client_secret or ""), timeout=10,
                               data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
                                     "code_verifier": verifier}).json()
    device = _connected_tv(idp, tv, here)

    page = here.get(idp.url + "/admin/people/root", timeout=10)
    [form] = [f for f in lxml.html.fromstring(page.text).forms if (f.get("action") or "").endswith("/password")]
    data = {i.get("name"): i.get("value") or "" for i in form.xpath(".//input[@name]")}
    data.update(password="a-new-password-42", password_again="a-new-password-42")
    set_it = here.post(urljoin(page.url, form.get("action")), data=data, headers={"Referer": page.url}, timeout=10)
    assert set_it.status_code == 200, set_it.text[:500]

    assert here.get(idp.url + "/admin/", timeout=10, allow_redirects=False).status_code == 200
    assert elsewhere.get(idp.url + "/admin/", timeout=10, allow_redirects=False).status_code == 302
    assert error_of(_refresh(idp, tv, device)) == "invalid_grant"
    refreshed = requests.post(idp.url + "/oauth/token", auth=(wiki.client_id, wiki.client_secret or ""), timeout=10,
                              data={"grant_type": "refresh_token", "refresh_token": wiki_token["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
