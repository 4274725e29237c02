"""The consent page for third-party clients over real HTTP: shown once, remembered, revoked from the home page
or the CLI (and then shown again), prompt=consent and prompt=none, and a denial reaching the client."""

from __future__ import annotations

import threading
from typing import Any

import lxml.html
import pytest
import requests
from authlib.integrations.requests_client import OAuthError
from flask import Flask
from helpers import committed_elsewhere, make_user
from oidc_peers import PASSWORD, REDIRECT_URI, answer_consent, browse, register, rp, start
from saml_peers import submit_login
from sqlalchemy import event, select

from idp import audit, clock
from idp.authn.principal import principal_from_user
from idp.cli import cli
from idp.extensions import db
from idp.oidc import clients, consent
from idp.store import User


@pytest.fixture
def idp(live_server: Any) -> Any:
    make_user("alice", PASSWORD, email="alice@example.test")
    return live_server


@pytest.fixture
def third_party(idp: Any) -> Any:
    return register(name="Photo printer", first_party=False)


def sign_in_with(idp: Any, reg: Any, http: requests.Session, consent: str | None = "allow", **params: str) -> Any:
    session = rp(idp.url, reg)
    auth = start(session, **params)
    return session, auth, browse(http, auth.url, consent=consent)


def test_consent_is_asked_once_remembered_and_asked_again_after_revoking(idp: Any, third_party: Any) -> None:
    http = requests.Session()
    session, auth, arrival = sign_in_with(idp, third_party, http)
    assert arrival.consent_prompts == 1 and arrival.params["state"] == auth.state
    token = session.fetch_token(idp.url + "/oauth/token", authorization_response=arrival.url,
                                code_verifier=auth.verifier, state=auth.state)
    assert sign_in_with(idp, third_party, http)[2].consent_prompts == 0  # remembered

    home = http.get(idp.url + "/", timeout=10)
    assert "Apps you allowed" in home.text and "Photo printer" in home.text
    form = next(f for f in lxml.html.fromstring(home.text).forms if "revoke" in (f.get("action") or ""))
    fields = {i.get("name"): i.get("value") or "" for i in form.xpath(".//input[@name]")}
    forged = http.post(idp.url + form.get("action"), data={"csrf_token": "forged"}, timeout=10)
    assert forged.status_code == 400
    revoked = http.post(idp.url + form.get("action"), data=fields, headers={"Referer": home.url}, timeout=10)
    # Still listed among the apps it may open (it is open to all), no longer among those it allowed.
    assert revoked.status_code == 200 and "Apps you allowed" not in revoked.text

    # The application lost its access, and the next sign-in asks again.
    info = session.introspect_token(idp.url + "/oauth/introspect", token=token["refresh_token"]).json()
    assert info == {"active": False}
    assert sign_in_with(idp, third_party, http)[2].consent_prompts == 1
    db.session.expire_all()
    assert [e.type for e in audit.events(type="oidc.consent.revoke")] == ["oidc.consent.revoke"]
    assert len(audit.events(type="oidc.consent.grant")) == 2


def test_a_code_issued_before_consent_is_withdrawn_gets_no_tokens(idp: Any, third_party: Any) -> None:
    http = requests.Session()
    session, auth, arrival = sign_in_with(idp, third_party, http)
    alice = db.session.scalar(select(User).where(User.username == "alice"))
    consent.revoke(alice.id, "alice", third_party.client_id, actor="alice")
    db.session.commit()
    with pytest.raises(OAuthError) as err:  # the code is within its two minutes, and not used
        session.fetch_token(idp.url + "/oauth/token", authorization_response=arrival.url,
                            code_verifier=auth.verifier, state=auth.state)
    assert err.value.error == "invalid_grant"
    assert err.value.description == "The user has withdrawn their consent to this client."


def test_the_consent_page_lists_the_scopes(idp: Any, third_party: Any) -> None:
    http = requests.Session()
    login = http.get(start(rp(idp.url, third_party, scope="openid email")).url, timeout=10)
    consent = submit_login(http, login, "alice", PASSWORD)
    assert "Allow Photo printer?" in consent.text
    assert "Your email address" in consent.text and "The groups you belong to" not in consent.text


def test_a_first_party_client_is_not_asked(idp: Any) -> None:
    arrival = sign_in_with(idp, register(first_party=True), requests.Session(), consent=None)[2]
    assert arrival.params.get("code") and arrival.consent_prompts == 0


def test_prompt_none_without_consent_is_consent_required(idp: Any, third_party: Any) -> None:
    http = requests.Session()
    sign_in_with(idp, register(), http)  # signed in, through a first-party client
    _, auth, arrival = sign_in_with(idp, third_party, http, consent=None, prompt="none")
    assert arrival.url.startswith(REDIRECT_URI + "?")
    assert arrival.params["error"] == "consent_required" and arrival.params["state"] == auth.state
    sign_in_with(idp, third_party, http)  # allowed now
    assert "code" in sign_in_with(idp, third_party, http, consent=None, prompt="none")[2].params


def test_prompt_consent_always_asks(idp: Any, third_party: Any) -> None:
    http = requests.Session()
    sign_in_with(idp, third_party, http)
    assert sign_in_with(idp, third_party, http, prompt="consent")[2].consent_prompts == 1
    first_party = register(first_party=True)
    assert sign_in_with(idp, first_party, http, prompt="consent")[2].consent_prompts == 1


def test_denying_sends_access_denied_to_the_client(idp: Any, third_party: Any) -> None:
    http = requests.Session()
    _, auth, arrival = sign_in_with(idp, third_party, http, consent="deny")
    assert arrival.url.startswith(REDIRECT_URI + "?")
    assert arrival.params["error"] == "access_denied" and arrival.params["state"] == auth.state
    assert sign_in_with(idp, third_party, http)[2].consent_prompts == 1  # nothing was remembered
    db.session.expire_all()
    assert any(e.type == "oidc.authorize" and e.outcome == "failure" and "did not allow" in (e.reason or "")
               for e in audit.events())


def test_a_consent_answer_is_used_once(idp: Any, third_party: Any) -> None:
    http = requests.Session()
    sign_in_with(idp, register(), http)
    page = http.get(start(rp(idp.url, third_party)).url, timeout=10)
    assert answer_consent(http, page, "allow").status_code == 302
    replay = answer_consent(http, page, "allow")
    assert replay.status_code == 400 and "Location" not in replay.headers


def test_cli_lists_and_revokes_consents(idp: Any, third_party: Any) -> None:
    sign_in_with(idp, third_party, requests.Session())
    runner = idp.app.test_cli_runner()
    listed = runner.invoke(cli, ["oidc-consent", "list", "--user", "alice"])
    assert listed.exit_code == 0 and third_party.client_id in listed.output and "Photo printer" in listed.output
    done = runner.invoke(cli, ["oidc-consent", "revoke", "--user", "alice", "--client", third_party.client_id])
    assert done.exit_code == 0, done.output
    assert "allowed no clients" in runner.invoke(cli, ["oidc-consent", "list", "--user", "alice"]).output
    again = runner.invoke(cli, ["oidc-consent", "revoke", "--user", "alice", "--client", third_party.client_id])
    assert again.exit_code == 1 and "has not allowed" in again.output


@pytest.mark.parametrize("allowed_before", [None, "openid"])
def test_two_consents_to_one_client_at_once_add_up(app: Flask, allowed_before: str | None) -> None:
    """Two tabs asking the same client for different scopes, each allowed at the same moment (perhaps on two
    instances): the client keeps both consents, whether or not the user had allowed it anything before."""
    user = make_user("alice", PASSWORD)
    client = clients.get(register(first_party=False).client_id)
    assert client is not None
    principal = principal_from_user(user, clock.now())
    if allowed_before:
        consent.remember(principal, client, allowed_before)
    db.session.commit()
    main = threading.get_ident()
    other_tab = [lambda: consent.remember(principal, client, "openid profile")]

    def after_reading_consents(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # This tab has read what was allowed; the other tab's consent commits before this one writes.
        if threading.get_ident() == main and "FROM oidc_consents" in statement and other_tab:
            committed_elsewhere(app, other_tab.pop())

    event.listen(db.engine, "after_cursor_execute", after_reading_consents)
    try:
        consent.remember(principal, client, "openid email")
        db.session.commit()
    finally:
        event.remove(db.engine, "after_cursor_execute", after_reading_consents)
    assert not other_tab, "the other tab's consent never ran"
    (allowed,) = consent.for_user(user.id)
    assert set(allowed.scope.split()) == {"openid", "profile", "email"}
    # The audit trail says what the client may now have, as of the later consent.
    assert allowed.scope in [e.details["scope"] for e in audit.events(type="oidc.consent.grant")]
