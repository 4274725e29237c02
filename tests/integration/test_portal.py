"""The portal page (/portal) with Flask's test client: sign-in first, exactly the accounts, roles and apps the
decision grants (direct, group and OU assignments; ended ones, other people's and unassigned apps left out),
the launch links, the server-side search, the empty state and escaping. The browser side is
tests/interop/test_portal_chromium.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import lxml.html
import pytest
from access_rows import account, assign, assign_app, ou, permission_set
from flask import Flask
from flask.testing import FlaskClient
from helpers import login, make_user
from oidc_peers import register
from saml_peers import python3_saml_metadata

from idp import clock
from idp.access.decide import EVERYTHING, authorize
from idp.authn.principal import principal_from_user
from idp.oidc import clients
from idp.saml import providers
from idp.store import OidcClient, ServiceProvider

PASSWORD = "correct horse battery"
EMPTY = "You have not been given access to any account or application yet. Ask your administrator."


def saml_app(name: str, host: str, *, open_to_all: bool = False) -> ServiceProvider:
    xml = python3_saml_metadata(entity_id=f"https://{host}/metadata?tenant=a+b", acs_url=f"https://{host}/acs")
    return providers.add(xml, None, providers.SpOptions(name=name, open_to_all=open_to_all), actor="test")


def oidc_app(name: str, login_url: str | None = None) -> OidcClient:
    client = clients.get(register(name=name, login_url=login_url, open_to_all=False).client_id)
    assert client is not None
    return client


@dataclass
class Page:
    """What the portal shows, read from its markup."""

    accounts: dict[tuple[str, str], list[tuple[str, str]]]  # (name, id) → [(permission set, link)]
    details: list[str]  # each role's and app's small print, in page order
    apps: dict[str, str | None]  # name → launch link (None: not clickable)
    text: str

    @classmethod
    def read(cls, html: str) -> Page:
        doc = lxml.html.fromstring(html)
        accounts = {
            (a.findtext(".//*[@class='account-name']"), a.findtext(".//*[@class='account-id']")): [
                (r.find("a").text_content(), r.find("a").get("href")) for r in a.xpath(".//li[@data-role]")]
            for a in doc.xpath("//li[@data-account]")
        }
        apps = {}
        for li in doc.xpath("//li[@data-app]"):
            link = li.find("a")
            name = link.text_content() if link is not None else li.findtext(".//*[@class='app-name']")
            apps[name] = link.get("href") if link is not None else None
        small_print = doc.xpath("//li[@data-role or @data-app]/span[@class='muted']")
        details = [" ".join(s.text_content().split()) for s in small_print]
        return cls(accounts, details, apps, " ".join(doc.text_content().split()))


@pytest.fixture
def world(app: Flask) -> dict[str, object]:
    """alice (group engineers) holds roles directly, through her group and through an OU with a sub-OU; some of
    her assignments have ended; other people hold things she must not see."""
    alice = make_user("alice", PASSWORD, groups=["engineers"], display_name="Alice Anderson")
    bob = make_user("bob", PASSWORD, groups=["finance"])
    now = clock.now()
    production = ou("Production")
    payments = ou("Payments", parent=production)
    shared = account("111111111111", "Shared services")
    payments_prod = account("222222222222", "Payments prod", in_ou=payments)
    account("333333333333", "Sandbox")
    legacy = account("444444444444", "Legacy")
    admin = permission_set("AdministratorAccess", hours=1)
    readonly = permission_set("ReadOnly", hours=8)
    billing = permission_set("Billing", hours=12)
    ends = now + timedelta(days=30)
    assign(admin, user=alice, account=shared, until=ends)
    assign(readonly, group="engineers", ou=production)  # reaches Payments prod through the sub-OU
    assign(billing, user=alice, account=legacy, until=now - timedelta(minutes=1))  # ended
    assign(billing, group="finance", account=shared)  # bob's, not alice's
    assign(admin, user=bob, account=payments_prod)

    wiki = saml_app("Wiki", "wiki.example.test")
    assign_app(wiki, group="engineers")
    payroll = saml_app("Payroll", "payroll.example.test")
    assign_app(payroll, user=bob)
    saml_app("Intranet", "intranet.example.test", open_to_all=True)
    saml_app("Unassigned", "nobody.example.test")
    assign_app(oidc_app("Dashboards", login_url="https://dash.example.test/login?from=portal"), user=alice,
               until=ends)
    assign_app(oidc_app("Terminal", login_url=None), group="engineers")
    assign_app(oidc_app("Old tracker", login_url="https://old.example.test/"), user=alice,
               until=now - timedelta(seconds=1))
    return {"alice": alice, "bob": bob, "ends": ends}


def launched(link: str | None) -> str | tuple[str, str] | None:
    """An IdP-initiated SAML link as ("saml", the SP's entity ID); any other link as it is."""
    parts = urlsplit(link or "")
    if parts.path != "/saml/init":
        return link
    (sp,) = parse_qs(parts.query)["sp"]
    return "saml", sp


def portal(client: FlaskClient, username: str, query: str | None = None) -> Page:
    login(client, username, PASSWORD)
    resp = client.get("/portal", query_string={"q": query} if query is not None else None)
    assert resp.status_code == 200
    assert "script-src" not in resp.headers["Content-Security-Policy"]  # the app's strict policy: no inline script
    return Page.read(resp.get_data(as_text=True))


def test_a_stranger_is_sent_to_sign_in_and_back(app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    resp = client.get("/portal", query_string={"q": "prod"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/login?next=/portal?q%3Dprod"
    signed_in = login(client, "alice", PASSWORD, next="/portal?q=prod")
    assert signed_in.headers["Location"] == "/portal?q=prod"
    assert client.get("/portal").status_code == 200


def test_signing_in_without_a_destination_lands_on_the_portal_which_is_also_the_home_page(
        app: Flask, client: FlaskClient) -> None:
    make_user("alice", PASSWORD)
    assert client.get("/").headers["Location"] == "/login?next=/"
    assert login(client, "alice", PASSWORD).headers["Location"] == "/portal"
    for path in ("/portal", "/"):
        page = client.get(path)
        assert page.status_code == 200 and b"Signed in as <strong>alice</strong>" in page.data, path
        assert b"<h1>Your accounts and applications</h1>" in page.data


def test_the_portal_shows_exactly_what_the_user_was_granted(world: dict[str, object], client: FlaskClient) -> None:
    page = portal(client, "alice")
    assert page.accounts == {
        ("Payments prod", "222222222222"): [("ReadOnly", "/portal/aws/222222222222/ReadOnly")],
        ("Shared services", "111111111111"): [("AdministratorAccess", "/portal/aws/111111111111/AdministratorAccess")],
    }
    assert {name: launched(link) for name, link in page.apps.items()} == {
        "Dashboards": "https://dash.example.test/login?from=portal",  # the OIDC client's own login URL
        "Intranet": ("saml", "https://intranet.example.test/metadata?tenant=a+b"),
        "Terminal": None,
        "Wiki": ("saml", "https://wiki.example.test/metadata?tenant=a+b"),
    }
    ends = world["ends"].strftime("%Y-%m-%d %H:%M")  # type: ignore[attr-defined]
    assert page.details == [
        "8 hours session",
        f"1 hour session · until {ends} UTC",
        f"until {ends} UTC",  # Dashboards
        "Start it from the application's own page: it has no sign-in link here.",  # Terminal
    ]
    assert "Signed in as Alice Anderson (alice)" in page.text and "Sign out" in page.text
    assert EMPTY not in page.text

    # The same as the one decision says, role for role and app for app.
    grant = authorize(principal_from_user(world["alice"], clock.now()), EVERYTHING, clock.now())  # type: ignore[arg-type]
    assert sorted((r.account_id, r.permission_set) for r in grant.roles) == sorted(
        (account_id, role) for (_, account_id), roles in page.accounts.items() for role, _ in roles)
    assert sorted(a.name for a in grant.apps) == sorted(page.apps)


def test_another_user_sees_their_own(world: dict[str, object], client: FlaskClient) -> None:
    page = portal(client, "bob")
    assert page.accounts == {
        ("Payments prod", "222222222222"): [("AdministratorAccess", "/portal/aws/222222222222/AdministratorAccess")],
        ("Shared services", "111111111111"): [("Billing", "/portal/aws/111111111111/Billing")],
    }
    assert sorted(page.apps) == ["Intranet", "Payroll"]


def test_an_assignment_stops_showing_when_it_ends(frozen_clock: object, world: dict[str, object],
                                                  client: FlaskClient) -> None:
    # frozen_clock first: the world's assignments end 30 days after the frozen now, to the second.
    assert ("Shared services", "111111111111") in portal(client, "alice").accounts
    frozen_clock.advance(days=29, hours=23, minutes=20)  # type: ignore[attr-defined]
    # The console session offered is cut to what is left of the assignment.
    assert portal(client, "alice").details[1].startswith("40 min session · until")
    frozen_clock.advance(minutes=40, seconds=1)  # type: ignore[attr-defined]
    page = portal(client, "alice")
    assert list(page.accounts) == [("Payments prod", "222222222222")]
    assert "Dashboards" not in page.apps


@pytest.mark.parametrize(("query", "accounts", "apps"), [
    # An account's name or id keeps all its roles; a role's name keeps that role; case does not matter.
    ("PROD", {("Payments prod", "222222222222"): ["ReadOnly"]}, []),
    ("1111", {("Shared services", "111111111111"): ["AdministratorAccess"]}, []),
    ("readonly", {("Payments prod", "222222222222"): ["ReadOnly"]}, []),
    ("a", {("Payments prod", "222222222222"): ["ReadOnly"],
           ("Shared services", "111111111111"): ["AdministratorAccess"]},
     ["Dashboards", "Intranet", "Terminal", "Wiki"]),
    ("wiki.example", {}, ["Wiki"]),  # an app's entity ID
    ("  dash ", {}, ["Dashboards"]),
])
def test_the_search_narrows_the_page_on_the_server(world: dict[str, object], client: FlaskClient, query: str,
                                                  accounts: dict[tuple[str, str], list[str]],
                                                  apps: list[str]) -> None:
    page = portal(client, "alice", query)
    assert {k: [role for role, _ in v] for k, v in page.accounts.items()} == accounts
    assert sorted(page.apps) == apps
    assert "Nothing matches your search." in page.text  # in the page for the live filter, hidden here
    assert EMPTY not in page.text


def test_a_search_that_finds_nothing_says_so(world: dict[str, object], client: FlaskClient) -> None:
    login(client, "alice", PASSWORD)
    html = client.get("/portal?q=zzz").get_data(as_text=True)
    doc = lxml.html.fromstring(html)
    (no_match,) = doc.xpath("//*[@id='portal-no-match']")
    assert no_match.get("hidden") is None and "Nothing matches your search." in no_match.text_content()
    assert doc.xpath("//input[@name='q']/@value") == ["zzz"]
    assert not doc.xpath("//li[@data-account or @data-app]")
    everything = lxml.html.fromstring(client.get("/portal").get_data(as_text=True))
    assert everything.get_element_by_id("portal-no-match").get("hidden") is not None


def test_someone_granted_nothing_is_told_whom_to_ask(app: Flask, client: FlaskClient) -> None:
    make_user("carol", PASSWORD)
    bob = make_user("bob", PASSWORD)
    assign(permission_set("ReadOnly"), user=bob, account=account("111111111111", "Shared services"))
    assign_app(saml_app("Wiki", "wiki.example.test"), user=bob)
    saml_app("Unassigned", "nobody.example.test")
    page = portal(client, "carol")
    assert EMPTY in page.text
    assert page.accounts == {} and page.apps == {}
    assert "Search" not in page.text and "Sign out" in page.text
    assert EMPTY not in portal(app.test_client(), "bob").text


def test_names_are_escaped(app: Flask, client: FlaskClient) -> None:
    mallory = make_user("mallory", PASSWORD, display_name="<img src=x onerror=alert(1)>")
    assign(permission_set("Admin"), user=mallory, account=account("555555555555", "<script>alert(1)</script> & Co"))
    assign_app(saml_app("<b>Bold</b>", "bold.example.test"), user=mallory)
    login(client, "mallory", PASSWORD)
    html = client.get("/portal").get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>Bold" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in html and "&lt;b&gt;Bold&lt;/b&gt;" in html
    page = Page.read(html)
    assert list(page.accounts) == [("<script>alert(1)</script> & Co", "555555555555")]
    assert list(page.apps) == ["<b>Bold</b>"]


def test_allowed_apps_stay_revocable_from_the_portal(app: Flask, client: FlaskClient) -> None:
    from idp.oidc import consent

    alice = make_user("alice", PASSWORD)
    printer = oidc_app("Photo printer")
    consent.remember(principal_from_user(alice, clock.now()), printer, "openid profile")
    login(client, "alice", PASSWORD)
    html = client.get("/portal").get_data(as_text=True)
    assert "Apps you allowed" in html and "Photo printer" in html
    assert f"/oauth/consent/{printer.client_id}/revoke" in html
