"""The portal in a real headless Chromium (Debian's, driven by Playwright): sign in through the login form, land
on /portal, see exactly the accounts, roles and apps the decision grants, filter them live, and launch them:
a python3-saml SP validates the Response the browser posts to it, and AWS sign-in (intercepted) receives a
Response python3-saml accepts for AWS's entity ID, with the role of the account clicked.

Nothing leaves the machine: the SP's and AWS's addresses are answered by Playwright's request routing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from access_rows import account, assign, assign_app, ou, permission_set
from helpers import make_user
from oidc_peers import DEVICE_GRANT, device_authorization, poll, register
from saml_peers import OneLoginSp, PostedForm, idp_metadata

from idp import clock
from idp.access.decide import EVERYTHING, authorize
from idp.authn.principal import principal_from_user
from idp.oidc import clients
from idp.saml import providers
from idp.store import User

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = "/usr/bin/chromium"
# As root, Debian's Chromium needs these, or it stalls on the closed network (docs: services.md). Playwright
# adds --headless and a fresh --user-data-dir itself (and refuses a --user-data-dir given here).
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]
PASSWORD = "correct horse battery"
WIKI = "https://wiki.example.test"
AWS_SIGNIN = "https://signin.aws.amazon.com/saml"
SEARCH = "Search accounts, roles and applications"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the whole module; each test opens its own contexts (fresh cookies)."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing (Debian packages chromium, chromium-driver)")
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium chromium-driver")
    with playwright.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def world(live_server: Any) -> dict[str, Any]:
    """alice (engineers) holds a role directly (ending in 30 days) and one through her group on an OU; one of
    hers has ended. bob (finance) holds another. Apps: a python3-saml SP for engineers, an OIDC client for
    alice, one for finance, one assigned to nobody."""
    alice = make_user("alice", PASSWORD, groups=["engineers"], display_name="Alice Anderson")
    bob = make_user("bob", PASSWORD, groups=["finance"], display_name="Bob Brown")
    now = clock.now()
    production = ou("Production")
    shared = account("111111111111", "Shared services")
    payments = account("222222222222", "Payments prod", in_ou=production)
    sandbox = account("333333333333", "Sandbox")
    admin, readonly, billing = permission_set("AdministratorAccess"), permission_set("ReadOnly", 8), \
        permission_set("Billing", 12)
    assign(admin, user=alice, account=shared, until=now + timedelta(days=30))
    assign(readonly, group="engineers", ou=production)
    assign(billing, user=alice, account=sandbox, until=now - timedelta(hours=1))
    assign(billing, group="finance", account=shared)
    assign(admin, user=bob, account=payments, until=now - timedelta(hours=1))

    wiki = OneLoginSp(idp_metadata(live_server.url), entity_id=WIKI + "/metadata", acs_url=WIKI + "/acs")
    assign_app(providers.add(wiki.metadata(), None, providers.SpOptions(name="Team wiki"), actor="test"),
               group="engineers")
    for name, login_url, who in [("Dashboards", "https://dash.example.test/start", {"user": alice}),
                                 ("Expenses", "https://expenses.example.test/", {"group": "finance"}),
                                 ("Secret project", "https://secret.example.test/", None)]:
        client = clients.get(register(name=name, login_url=login_url, open_to_all=False).client_id)
        if who is not None:
            assign_app(client, **who)  # type: ignore[arg-type]
    return {"alice": alice, "bob": bob, "wiki": wiki}


class Portal:
    """A browser context signed in as one user, on the portal; console errors (CSP refusals among them) kept."""

    def __init__(self, browser: Any, base_url: str, username: str) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.goto(base_url + "/login")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(base_url + "/portal")

    def _console(self, msg: Any) -> None:
        # The bridge serves no favicon; Chromium asks for one anyway.
        if msg.type == "error" and not msg.location.get("url", "").endswith("/favicon.ico"):
            self.errors.append(f"{msg.text} ({msg.location.get('url')})")

    def visible(self) -> tuple[set[tuple[str, str, str]], set[str]]:
        """({(account name, account id, permission set)}, {app name}) as the user sees them now."""
        roles = self.page.locator("[data-account]:visible [data-role]:visible").evaluate_all(
            """items => items.map(li => {
                 const account = li.closest("[data-account]");
                 return [account.querySelector(".account-name").innerText,
                         account.querySelector(".account-id").innerText, li.querySelector("a").innerText];
               })""")
        apps = self.page.locator("[data-app]:visible").evaluate_all(
            "items => items.map(li => (li.querySelector('a') || li.querySelector('.app-name')).innerText)")
        return {tuple(r) for r in roles}, set(apps)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def sign_in(browser: Any, live_server: Any) -> Iterator[Any]:
    opened: list[Portal] = []

    def open_as(username: str) -> Portal:
        opened.append(Portal(browser, live_server.url, username))
        return opened[-1]

    yield open_as
    for portal in opened:
        portal.close()


def granted(user: User) -> tuple[set[tuple[str, str, str]], set[str]]:
    """What the one decision grants ``user`` now, in the shape of :meth:`Portal.visible`."""
    grant = authorize(principal_from_user(user, clock.now()), EVERYTHING, clock.now())
    return {(r.account_name, r.account_id, r.permission_set) for r in grant.roles}, {a.name for a in grant.apps}


def test_each_user_sees_exactly_what_the_decision_grants(world: dict[str, Any], sign_in: Any) -> None:
    alice = sign_in("alice")
    assert alice.visible() == granted(world["alice"]) == (
        {("Shared services", "111111111111", "AdministratorAccess"), ("Payments prod", "222222222222", "ReadOnly")},
        {"Team wiki", "Dashboards"},
    )
    assert alice.page.get_by_role("heading", level=1).inner_text() == "Your accounts and applications"
    assert "Signed in as Alice Anderson" in alice.page.locator("header").inner_text()
    assert alice.page.get_by_role("link", name="Sign out").is_visible()
    shared = alice.page.locator("[data-account]", has_text="Shared services")
    assert "1 hour session · until" in shared.inner_text()

    bob = sign_in("bob")
    assert bob.visible() == granted(world["bob"]) == (
        {("Shared services", "111111111111", "Billing")}, {"Expenses"})
    assert "12 hours session" in bob.page.locator("[data-account]").inner_text()
    assert alice.errors == [] and bob.errors == []


def test_the_search_box_filters_as_the_user_types_and_without_javascript(world: dict[str, Any], sign_in: Any
                                                                         ) -> None:
    alice = sign_in("alice")
    everything = alice.visible()
    box = alice.page.get_by_label(SEARCH)
    no_match = alice.page.get_by_text("Nothing matches your search.")
    cases = [
        ("prod", ({("Payments prod", "222222222222", "ReadOnly")}, set())),  # an account's name
        ("1111", ({("Shared services", "111111111111", "AdministratorAccess")}, set())),  # an account's id
        ("ADMIN", ({("Shared services", "111111111111", "AdministratorAccess")}, set())),  # a role's name
        ("wiki", (set(), {"Team wiki"})),  # an app's name
        ("wiki.example.test/metadata", (set(), {"Team wiki"})),  # an app's entity ID
        ("s", everything),
    ]
    for query, expected in cases:
        box.fill(query)
        assert alice.visible() == expected, query
        assert alice.page.url.endswith("/portal") and not no_match.is_visible()
    assert alice.page.get_by_role("heading", name="AWS accounts").is_visible()

    box.fill("no such thing")
    assert alice.visible() == (set(), set()) and no_match.is_visible()
    assert not alice.page.get_by_role("heading", name="AWS accounts").is_visible()
    box.fill("")
    assert alice.visible() == everything and not no_match.is_visible()

    # Enter submits the form: the server's ?q= answers the same.
    box.fill("prod")
    box.press("Enter")
    alice.page.wait_for_url("**/portal?q=prod")
    assert alice.visible() == cases[0][1] and box.input_value() == "prod"
    assert alice.errors == []

    # Without JavaScript the form alone does it.
    context = alice.page.context.browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.context.add_cookies(alice.context.cookies())
    page.goto(alice.page.url.split("?")[0])
    page.get_by_label(SEARCH).fill("wiki")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/portal?q=wiki")
    assert page.locator("[data-app]").all_inner_texts() == ["Team wiki"]
    assert page.locator("[data-account]").count() == 0
    context.close()


def test_an_app_link_signs_the_user_in_at_the_app(world: dict[str, Any], sign_in: Any) -> None:
    alice = sign_in("alice")
    posted: list[Any] = []

    def at_the_sp(route: Any) -> None:
        posted.append(route.request)
        route.fulfill(status=200, content_type="text/html", body="<h1>Welcome to the wiki</h1>")

    alice.context.route(WIKI + "/**", at_the_sp)
    with alice.context.expect_page() as opened:
        alice.page.get_by_role("link", name="Team wiki").click()
    tab = opened.value
    tab.get_by_text("Welcome to the wiki").wait_for()
    (request,) = posted
    assert request.method == "POST" and request.url == WIKI + "/acs"
    fields = {k: v[0] for k, v in parse_qs(request.post_data).items()}
    auth = world["wiki"].process_response(PostedForm(request.url, fields), None)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.is_authenticated()

    # An OIDC client's link is its own login URL.
    alice.context.route("https://dash.example.test/**",
                        lambda route: route.fulfill(status=200, content_type="text/html", body="<h1>Dashboards</h1>"))
    with alice.context.expect_page() as opened:
        alice.page.get_by_role("link", name="Dashboards").click()
    opened.value.get_by_role("heading", name="Dashboards").wait_for()
    assert opened.value.url == "https://dash.example.test/start"


def test_an_app_whose_acs_redirects_to_another_origin_is_reached(world: dict[str, Any], sign_in: Any) -> None:
    """Many SPs answer the posted Response with a redirect to the app on another host; Chromium holds a form's
    redirects to the posting page's form-action too, so that must not name the ACS's origin alone."""
    alice = sign_in("alice")
    alice.context.route(WIKI + "/acs", lambda route: route.fulfill(
        status=303, headers={"Location": "https://app.wiki-cdn.example.test/home"}))
    alice.context.route("https://app.wiki-cdn.example.test/**", lambda route: route.fulfill(
        status=200, content_type="text/html", body="<h1>Your wiki home</h1>"))
    with alice.context.expect_page() as opened:
        alice.page.get_by_role("link", name="Team wiki").click()
    opened.value.get_by_text("Your wiki home").wait_for(timeout=10_000)
    assert opened.value.url == "https://app.wiki-cdn.example.test/home"


def test_an_aws_link_posts_a_response_for_that_account_and_role(live_server: Any, world: dict[str, Any],
                                                               sign_in: Any) -> None:
    alice = sign_in("alice")
    posted: list[Any] = []

    def at_aws(route: Any) -> None:
        posted.append(route.request)
        route.fulfill(status=200, content_type="text/html", body="<h1>AWS Management Console</h1>")

    alice.context.route("https://signin.aws.amazon.com/**", at_aws)
    shared = alice.page.locator("[data-account]", has_text="Shared services")
    with alice.context.expect_page() as opened:
        shared.get_by_role("link", name="AdministratorAccess").click()
    opened.value.get_by_text("AWS Management Console").wait_for()
    (request,) = posted
    assert request.method == "POST" and request.url == AWS_SIGNIN
    fields = {k: v[0] for k, v in parse_qs(request.post_data).items()}

    # python3-saml, standing in for AWS sign-in, checks signature, audience, recipient and validity.
    aws = OneLoginSp(idp_metadata(live_server.url), entity_id="urn:amazon:webservices", acs_url=AWS_SIGNIN)
    auth = aws.process_response(PostedForm(request.url, fields), None)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    attributes = auth.get_attributes()
    assert attributes["https://aws.amazon.com/SAML/Attributes/Role"] == [
        "arn:aws:iam::111111111111:role/AdministratorAccess,arn:aws:iam::111111111111:saml-provider/bridge"]
    assert attributes["https://aws.amazon.com/SAML/Attributes/SessionDuration"] == ["3600"]


def test_a_device_connected_in_the_browser_is_disconnected_from_the_portal(
        world: dict[str, Any], sign_in: Any, live_server: Any) -> None:
    """The device flow's pages and the portal's Disconnect button in a real browser: alice types the TV's code,
    allows it, finds it on the portal under the devices she connected, and disconnects it; the TV's refresh
    token is then refused."""
    tv = register(name="Living-room TV", public=True, redirect_uris=(), first_party=True,
                  grant_types=(DEVICE_GRANT, "refresh_token"))
    grant = device_authorization(live_server, tv.client_id)
    alice = sign_in("alice")
    page = alice.page
    page.goto(live_server.url + "/device")
    page.get_by_label("Enter the code shown on your device").fill(grant["user_code"].lower().replace("-", " "))
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Allow").click()
    assert "Device connected" in page.content()
    token = poll(live_server, tv.client_id, grant["device_code"]).json()

    page.goto(live_server.url + "/portal")
    devices = page.locator("ul.allowed-apps li", has_text="Living-room TV")
    assert devices.count() == 1
    with page.expect_navigation():
        devices.get_by_role("button", name="Disconnect").click()
    assert page.locator("ul.allowed-apps li", has_text="Living-room TV").count() == 0
    refused = requests.post(live_server.url + "/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"], "client_id": tv.client_id})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert alice.errors == []
