"""Single Logout at /saml/slo with python3-saml SPs over real HTTP: refusals (each a 400 with an audit event,
and the user's session left alone), logout without a session, and partial logout."""

from __future__ import annotations

import base64
import itertools
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urljoin, urlsplit

import lxml.etree
import lxml.html
import pytest
import requests
from interop.pysaml2_sp import Browser, p3_request, python3_saml_sign_in
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.logout_response import OneLogin_Saml2_Logout_Response
from onelogin.saml2.utils import OneLogin_Saml2_Utils
from saml_peers import SP_ENTITY_ID, SP_SLO_URL, python3_saml_metadata, python3_saml_settings, register_sp, sp_keys

from idp import audit
from idp.authn import directory
from idp.extensions import db
from idp.saml import slo

PASSWORD = "correct horse battery staple"
SECURITY = {"logoutRequestSigned": True, "logoutResponseSigned": True, "wantMessagesSigned": True}
RESPONDER = "urn:oasis:names:tc:SAML:2.0:status:Responder"
SP2 = "https://sp2.example.test"
SP3 = "https://sp3.example.test"


@pytest.fixture
def idp(live_server: Any) -> Any:
    directory.create_group("staff", actor="test")
    directory.create_user("alice", password=PASSWORD, actor="test", groups=["staff"], email="alice@example.test")
    db.session.commit()
    return live_server


def register(idp: Any, **kwargs: Any) -> dict[str, Any]:
    """Register a python3-saml SP (its own metadata) and return its settings, trusting our metadata."""
    register_sp(python3_saml_metadata(security=SECURITY, **kwargs))
    db.session.commit()
    metadata = requests.get(idp.url + "/saml/metadata", timeout=10).content
    return python3_saml_settings(metadata, security=SECURITY, **kwargs)


@pytest.fixture
def sp(idp: Any) -> dict[str, Any]:
    return register(idp)


def signed_in(idp: Any, settings: dict[str, Any]) -> tuple[Browser, OneLogin_Saml2_Auth]:
    browser = Browser(idp.url, "alice", PASSWORD)
    return browser, python3_saml_sign_in(browser, settings)


def logout_url(settings: dict[str, Any], auth: OneLogin_Saml2_Auth, return_to: str = "https://sp.example.test/bye"
               ) -> tuple[str, OneLogin_Saml2_Auth]:
    """A signed Redirect-binding LogoutRequest as python3-saml sends it."""
    start = OneLogin_Saml2_Auth(p3_request(SP_SLO_URL), settings)
    url = start.logout(return_to=return_to, name_id=auth.get_nameid(), session_index=auth.get_session_index(),
                       name_id_format=auth.get_nameid_format())
    return url, start


def refusal(reason: str) -> audit.AuditEvent:
    db.session.expire_all()
    events = [e for e in audit.events(type="saml.refused") if e.details.get("endpoint") == "slo"]
    assert events, "no saml.refused audit event"
    assert reason in (events[0].reason or ""), events[0].reason
    return events[0]


def still_signed_in(idp: Any, browser: Browser, settings: dict[str, Any]) -> bool:
    browser.password = None
    auth = OneLogin_Saml2_Auth(p3_request(settings["sp"]["assertionConsumerService"]["url"]), settings)
    return not browser.get(auth.login()).asked_password


def without_signature(url: str) -> str:
    base, query = url.split("?", 1)
    kept = [p for p in query.split("&") if not p.startswith(("SigAlg=", "Signature="))]
    return base + "?" + "&".join(kept)


def test_sp_initiated_logout_answers_with_a_signed_success(idp: Any, sp: dict[str, Any]) -> None:
    browser, auth = signed_in(idp, sp)
    url, start = logout_url(sp, auth)
    hop = browser.get(url)
    assert hop.destination == SP_SLO_URL
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), sp)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == [], done.get_last_error_reason()  # signed, InResponseTo, Destination, Success
    assert parse_qs(urlsplit(hop.redirect).query)["RelayState"] == ["https://sp.example.test/bye"]
    assert not still_signed_in(idp, browser, sp)
    db.session.expire_all()
    assert [e.reason for e in audit.events(type="logout")] == ["saml-slo"]


def test_unsigned_logout_request_from_an_sp_with_a_signing_key_is_refused(idp: Any, sp: dict[str, Any]) -> None:
    browser, auth = signed_in(idp, sp)
    url, _ = logout_url(sp, auth)
    hop = browser.get(without_signature(url))
    assert hop.response.status_code == 400
    refusal("unsigned logout message")
    assert still_signed_in(idp, browser, sp)


def test_tampered_logout_request_is_refused(idp: Any, sp: dict[str, Any]) -> None:
    browser, auth = signed_in(idp, sp)
    url, _ = logout_url(sp, auth)
    base, query = url.split("?", 1)
    params = dict(p.split("=", 1) for p in query.split("&"))
    xml = zlib.decompress(base64.b64decode(requests.utils.unquote(params["SAMLRequest"])), -15)
    assert b"alice" in xml
    # Same signature, another user's NameID.
    forged = xml.replace(b">alice<", b">bob<")
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    params["SAMLRequest"] = quote(base64.b64encode(deflater.compress(forged) + deflater.flush()), safe="")
    hop = browser.get(base + "?" + "&".join(f"{k}={v}" for k, v in params.items()))
    assert hop.response.status_code == 400
    refusal("bad signature")
    assert still_signed_in(idp, browser, sp)


def test_a_signed_logout_request_must_name_its_destination(idp: Any, sp: dict[str, Any]) -> None:
    """SAML Bindings 3.4.5.2: a signed message MUST carry Destination."""
    browser, auth = signed_in(idp, sp)
    url, start = logout_url(sp, auth)
    bare = _inflated(url).replace(f'Destination="{idp.url}/saml/slo"'.encode(), b"")
    assert bare != _inflated(url)
    params = {"SAMLRequest": OneLogin_Saml2_Utils.deflate_and_base64_encode(bare)}
    start.add_request_signature(params)
    hop = browser.get(idp.url + "/saml/slo?" + urlencode(params))
    assert hop.response.status_code == 400
    refusal("signed message without Destination")
    assert still_signed_in(idp, browser, sp)


def test_logout_request_from_an_unknown_sp_is_refused(idp: Any, sp: dict[str, Any]) -> None:
    browser, auth = signed_in(idp, sp)
    stranger = python3_saml_settings(requests.get(idp.url + "/saml/metadata", timeout=10).content,
                                     entity_id="https://stranger.example.test/metadata", security=SECURITY)
    url, _ = logout_url(stranger, auth)
    hop = browser.get(url)
    assert hop.response.status_code == 400
    event = refusal("unknown SP")
    assert event.sp == "https://stranger.example.test/metadata"
    assert still_signed_in(idp, browser, sp)


def test_replayed_logout_request_is_refused(idp: Any, sp: dict[str, Any]) -> None:
    browser, auth = signed_in(idp, sp)
    url, start = logout_url(sp, auth)
    assert browser.get(url).destination == SP_SLO_URL
    # Signed in again, the same captured request must not end the new session.
    browser.password = PASSWORD
    python3_saml_sign_in(browser, sp)
    hop = browser.get(url)
    refusal("replayed")
    assert still_signed_in(idp, browser, sp)
    # The request is the SP's own, to us: it hears the refusal (SAML Profiles 4.4.3.4) at its SLO endpoint, a
    # LogoutResponse it can verify, rather than its user being left on an error page here.
    assert hop.destination == SP_SLO_URL
    at_sp = OneLogin_Saml2_Auth(p3_request(hop.redirect), sp)
    at_sp.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert at_sp.get_errors() == ["logout_not_success"], at_sp.get_last_error_reason()  # its signature held
    xml = zlib.decompress(base64.b64decode(parse_qs(urlsplit(hop.redirect).query)["SAMLResponse"][0]), -15)
    codes = lxml.etree.fromstring(xml).xpath("//*[local-name()='StatusCode']/@Value")
    assert codes == [f"urn:oasis:names:tc:SAML:2.0:status:{c}" for c in ("Requester", "RequestDenied")]


def test_logout_without_a_session_still_answers_success(idp: Any, sp: dict[str, Any]) -> None:
    browser, auth = signed_in(idp, sp)
    url, _ = logout_url(sp, auth)
    assert browser.get(url).destination == SP_SLO_URL
    # Logging out again (another tab, a second click): nothing left to end, and the SP still hears Success.
    url, start = logout_url(sp, auth)
    hop = browser.get(url)
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), sp)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == [], done.get_last_error_reason()
    db.session.expire_all()
    events = audit.events(type="saml.logout")
    assert [e.details["session_found"] for e in events] == [False, True]  # newest first


def test_a_signed_request_naming_the_session_index_ends_it_without_the_cookie(idp: Any, sp: dict[str, Any]) -> None:
    """An SP posting across sites does not get our SameSite=Lax cookie sent along; its signed request naming
    the SessionIndex we gave it is enough to find the session."""
    browser, auth = signed_in(idp, sp)
    url, start = logout_url(sp, auth)
    hop = Browser(idp.url).get(url)
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), sp)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == [], done.get_last_error_reason()
    assert not still_signed_in(idp, browser, sp)


def test_a_signed_request_without_a_session_index_ends_every_session_of_its_subject(
        idp: Any, sp: dict[str, Any]) -> None:
    """SAML Core 3.7.3.2: no SessionIndex means every session of that subject there, not whichever one the store
    lists first (a stale session on another device ended, the live one left, and Success answered)."""
    sp2 = register(idp, entity_id=f"{SP2}/metadata", acs_url=f"{SP2}/acs", slo_url=f"{SP2}/slo",
                   keys=sp_keys("second python3-saml sp"))
    laptop, auth = signed_in(idp, sp)
    phone, _ = signed_in(idp, sp)
    for browser in (laptop, phone):
        python3_saml_sign_in(browser, sp2, return_to=f"{SP2}/app")
    start = OneLogin_Saml2_Auth(p3_request(SP_SLO_URL), sp)
    url = start.logout(return_to="https://sp.example.test/bye", name_id=auth.get_nameid(),
                       name_id_format=auth.get_nameid_format())  # no session_index
    elsewhere = Browser(idp.url)
    hop = elsewhere.get(url)
    # The second SP, in both sessions, hears once: without a SessionIndex (both of its sessions), not twice
    # with one ID (an SP keeping a replay cache would refuse the second).
    assert hop.destination == f"{SP2}/slo"
    assert b"SessionIndex" not in _inflated(hop.redirect)
    hop = elsewhere.get(answer_hop(idp, hop.redirect, sp2))
    assert hop.destination == SP_SLO_URL
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), sp)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == [], done.get_last_error_reason()
    assert not still_signed_in(idp, laptop, sp) and not still_signed_in(idp, phone, sp)


def test_an_sp_answering_with_an_error_makes_the_logout_partial(idp: Any, sp: dict[str, Any]) -> None:
    sp2 = register(idp, entity_id=f"{SP2}/metadata", acs_url=f"{SP2}/acs", slo_url=f"{SP2}/slo",
                   keys=sp_keys("second python3-saml sp"))
    browser, auth = signed_in(idp, sp)
    python3_saml_sign_in(browser, sp2, return_to=f"{SP2}/app")

    url, start = logout_url(sp, auth)
    hop = browser.get(url)
    assert hop.destination == f"{SP2}/slo"
    # The second SP validates our LogoutRequest but answers Responder (say its session store is down).
    at_sp2 = OneLogin_Saml2_Auth(p3_request(hop.redirect), sp2)
    request_id = at_sp2.get_last_request_id() or _request_id(hop.redirect)
    answer = OneLogin_Saml2_Logout_Response(at_sp2.get_settings())
    answer.build(request_id, status=RESPONDER)
    params = {"SAMLResponse": answer.get_response(), "RelayState": hop.message.relay_state}
    at_sp2.add_response_signature(params, SECURITY.get("signatureAlgorithm", sp2["security"]["signatureAlgorithm"]))
    hop = browser.get(at_sp2.redirect_to(idp.url + "/saml/slo", params))

    assert hop.destination == SP_SLO_URL
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), sp)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == [], done.get_last_error_reason()  # top-level Success: the IdP session ended
    assert b"urn:oasis:names:tc:SAML:2.0:status:PartialLogout" in done.get_last_response_xml().encode()
    assert not still_signed_in(idp, browser, sp)
    db.session.expire_all()
    (event,) = audit.events(type="saml.logout")
    assert event.outcome == "partial"
    assert event.details["notified"] == [{"sp": f"{SP2}/metadata", "result": "Responder"}]


def answer_hop(idp: Any, hop_url: str, settings: dict[str, Any]) -> str:
    """The URL of an SP's signed success LogoutResponse to the LogoutRequest at ``hop_url``."""
    at_sp = OneLogin_Saml2_Auth(p3_request(hop_url), settings)
    answer = OneLogin_Saml2_Logout_Response(at_sp.get_settings())
    answer.build(_request_id(hop_url))
    params = {"SAMLResponse": answer.get_response(), "RelayState": parse_qs(urlsplit(hop_url).query)["RelayState"][0]}
    at_sp.add_response_signature(params, settings["security"]["signatureAlgorithm"])
    return str(at_sp.redirect_to(idp.url + "/saml/slo", params))


def test_two_copies_of_one_logout_response_move_the_logout_on_alike(
        idp: Any, sp: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    sp2 = register(idp, entity_id=f"{SP2}/metadata", acs_url=f"{SP2}/acs", slo_url=f"{SP2}/slo",
                   keys=sp_keys("second python3-saml sp"))
    sp3 = register(idp, entity_id=f"{SP3}/metadata", acs_url=f"{SP3}/acs", slo_url=f"{SP3}/slo",
                   keys=sp_keys("third python3-saml sp"))
    browser, auth = signed_in(idp, sp)
    python3_saml_sign_in(browser, sp2, return_to=f"{SP2}/app")
    python3_saml_sign_in(browser, sp3, return_to=f"{SP3}/app")
    hop = browser.get(logout_url(sp, auth)[0])
    assert hop.destination == f"{SP2}/slo"
    url = answer_hop(idp, hop.redirect, sp2)

    # The browser sends the answer twice (a double click, a retry to another instance); both copies read the
    # logout's state before either moves it on.
    read = slo.pending.get

    def twice_at_once(url: str) -> list[requests.Response]:
        both_read, reads = threading.Barrier(2, timeout=10), itertools.count()

        def at_once(kind: str, pending_id: str) -> Any:
            found = read(kind, pending_id)
            if next(reads) < 2:  # each copy's first read
                both_read.wait()
            return found

        with monkeypatch.context() as patched:
            patched.setattr(slo.pending, "get", at_once)
            with ThreadPoolExecutor(2) as pool:
                return list(pool.map(lambda _: requests.get(url, allow_redirects=False, timeout=30), range(2)))

    copies = twice_at_once(url)
    # Whichever the browser shows, it is sent on to SP3 with the request the logout now expects an answer to.
    assert [c.status_code for c in copies] == [302, 302]
    assert all(c.headers["Location"].startswith(f"{SP3}/slo?") for c in copies)
    first, second = (_request_id(c.headers["Location"]) for c in copies)
    assert first == second
    # SP3's answer sent twice at once as well: both copies finish, answering the SP that asked, and the logout
    # is audited once.
    finished = twice_at_once(answer_hop(idp, copies[1].headers["Location"], sp3))
    assert [urlsplit(f.headers["Location"])._replace(query="").geturl() for f in finished] == [SP_SLO_URL] * 2
    db.session.expire_all()
    (event,) = audit.events(type="saml.logout")
    assert (event.outcome, [r["result"] for r in event.details["notified"]]) == ("success", ["success", "success"])


def test_a_copy_of_an_answer_that_comes_late_cannot_take_the_logout_back(
        idp: Any, sp: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    others = {n: register(idp, entity_id=f"https://sp{n}.example.test/metadata", acs_url=f"https://sp{n}.example.test/acs",
                          slo_url=f"https://sp{n}.example.test/slo", keys=sp_keys(f"python3-saml sp {n}"))
              for n in (2, 3, 4)}
    browser, auth = signed_in(idp, sp)
    for n, settings in others.items():
        python3_saml_sign_in(browser, settings, return_to=f"https://sp{n}.example.test/app")
    hop = browser.get(logout_url(sp, auth)[0])
    assert hop.destination == "https://sp2.example.test/slo"
    answered = answer_hop(idp, hop.redirect, others[2])
    # One copy of SP2's answer reads the logout's state, then stalls (a slow proxy, a retry); the other goes on.
    held, go = threading.Event(), threading.Event()
    read, reads = slo.pending.get, itertools.count()

    def first_read_stalls(kind: str, pending_id: str) -> Any:
        found = read(kind, pending_id)
        if next(reads) == 0:
            held.set()
            assert go.wait(10)
        return found

    monkeypatch.setattr(slo.pending, "get", first_read_stalls)
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(requests.get, answered, allow_redirects=False, timeout=30)
        assert held.wait(10)
        hop = browser.get(answered)
        assert hop.destination == "https://sp3.example.test/slo"
        hop = browser.get(answer_hop(idp, hop.redirect, others[3]))
        assert hop.destination == "https://sp4.example.test/slo"
        go.set()
        assert late.result(30).status_code == 400
    assert refusal("logout state changed meanwhile").sp == "https://sp2.example.test/metadata"
    # The logout expects SP4's answer still, and finishes with it.
    assert browser.get(answer_hop(idp, hop.redirect, others[4])).destination == SP_SLO_URL
    db.session.expire_all()
    (event,) = audit.events(type="saml.logout")
    assert [r["result"] for r in event.details["notified"]] == ["success"] * 3


def test_an_sp_without_slo_endpoint_makes_the_logout_partial(idp: Any, sp: dict[str, Any]) -> None:
    no_slo = register(idp, entity_id=f"{SP2}/metadata", acs_url=f"{SP2}/acs", slo_url=None,
                      keys=sp_keys("second python3-saml sp"))
    browser, auth = signed_in(idp, sp)
    python3_saml_sign_in(browser, no_slo, return_to=f"{SP2}/app")
    url, start = logout_url(sp, auth)
    hop = browser.get(url)
    assert hop.destination == SP_SLO_URL  # nobody else to visit: straight back
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), sp)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == []
    assert b"PartialLogout" in done.get_last_response_xml().encode()
    db.session.expire_all()
    (event,) = audit.events(type="saml.logout")
    assert event.details["notified"] == [{"sp": f"{SP2}/metadata", "result": "no SLO endpoint"}]


def test_a_logout_response_for_no_logout_in_progress_is_refused(idp: Any, sp: dict[str, Any]) -> None:
    settings = OneLogin_Saml2_Auth(p3_request(SP_SLO_URL), sp)
    answer = OneLogin_Saml2_Logout_Response(settings.get_settings())
    answer.build("_not_a_request_we_sent")
    params = {"SAMLResponse": answer.get_response(), "RelayState": "made-up"}
    settings.add_response_signature(params, sp["security"]["signatureAlgorithm"])
    hop = Browser(idp.url).get(settings.redirect_to(idp.url + "/saml/slo", params))
    assert hop.response.status_code == 400
    assert refusal("unknown logout state").sp == SP_ENTITY_ID


def _inflated(url: str) -> bytes:
    """The LogoutRequest a Redirect-binding URL carries."""
    return zlib.decompress(base64.b64decode(parse_qs(urlsplit(url).query)["SAMLRequest"][0]), -15)


def _request_id(url: str) -> str:
    xml = _inflated(url)
    start = xml.index(b' ID="') + 5
    return xml[start:xml.index(b'"', start)].decode()


def answer_confirmation(browser: Browser, hop: Any, answer: str) -> Any:
    """The page an unsigned LogoutRequest gets: the user's answer posted with the form (its CSRF token)."""
    assert hop.redirect is None and "Sign out?" in hop.response.text, hop.response.text[:500]
    form = lxml.html.fromstring(hop.response.text).forms[0]
    fields = {i.get("name"): i.get("value") or "" for i in form.xpath(".//input[@name]")}
    return browser.post(urljoin(hop.response.url, form.get("action")), {**fields, "answer": answer})


def test_an_unsigned_request_without_the_cookie_ends_nothing_and_says_partial(idp: Any) -> None:
    """An SP with no signing key can only log out the browser that carries our cookie, and only once the user
    confirms it (any page could send that browser here with a request naming them): a request from elsewhere
    cannot say which session it means, so the session stays and the SP hears PartialLogout."""
    unsigned = {"logoutRequestSigned": False, "logoutResponseSigned": False, "wantMessagesSigned": True}
    register_sp(python3_saml_metadata(keys=(b"", b""), security=unsigned))
    db.session.commit()
    metadata = requests.get(idp.url + "/saml/metadata", timeout=10).content
    settings = python3_saml_settings(metadata, keys=(b"", b""), security=unsigned)
    browser, auth = signed_in(idp, settings)

    url, start = logout_url(settings, auth)
    hop = Browser(idp.url).get(url)  # no cookie: another browser, or a cross-site POST
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), settings)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert b"urn:oasis:names:tc:SAML:2.0:status:PartialLogout" in done.get_last_response_xml().encode()
    assert still_signed_in(idp, browser, settings)

    # The user's own browser, sent by a page of someone else's perhaps: asked first. Staying signed in is a
    # partial logout for the SP.
    url, start = logout_url(settings, auth)
    hop = answer_confirmation(browser, browser.get(url), "stay")
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), settings)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert b"urn:oasis:names:tc:SAML:2.0:status:PartialLogout" in done.get_last_response_xml().encode()
    assert still_signed_in(idp, browser, settings)
    # The form cannot be posted from another site (no CSRF token), nor answered twice.
    page = browser.get(logout_url(settings, auth)[0])
    action = urljoin(page.response.url, lxml.html.fromstring(page.response.text).forms[0].get("action"))
    assert browser.session.post(action, data={"answer": "logout"}, timeout=10).status_code == 400
    assert still_signed_in(idp, browser, settings)

    url, start = logout_url(settings, auth)
    first = browser.get(url)
    hop = answer_confirmation(browser, first, "logout")  # confirmed: the session ends, fully
    assert answer_confirmation(browser, first, "logout").response.status_code == 400  # answered already
    done = OneLogin_Saml2_Auth(p3_request(hop.redirect), settings)
    done.process_slo(request_id=start.get_last_request_id(), keep_local_session=True)
    assert done.get_errors() == [], done.get_last_error_reason()
    assert b"PartialLogout" not in done.get_last_response_xml().encode()
    assert not still_signed_in(idp, browser, settings)
