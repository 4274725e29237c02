"""The admin pages in a real headless Chromium (Debian's, driven by Playwright): an admin signs in through the
login form, registers a python3-saml SP by uploading the metadata file python3-saml wrote, assigns it to a
group and signs out; a member of that group then signs in through that SP (SP-initiated, HTTP-Redirect) and
python3-saml validates the Response the browser posts to its ACS; someone outside the group is refused by the
sign-in, and is refused /admin too.

Nothing leaves the machine: the SP's address is answered by Playwright's request routing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from helpers import make_user
from saml_peers import OneLoginSp, PostedForm, idp_metadata
from test_portal_chromium import browser  # noqa: F401 - the module's one Chromium

from idp.audit import events
from idp.saml import providers

PASSWORD = "correct horse battery"
WIKI = "https://wiki.example.test"


class Session:
    """One browser context (its own cookies) that records what reaches the SP's ACS and the console's errors."""

    def __init__(self, chromium: Any, base_url: str) -> None:
        self.base_url = base_url
        self.context = chromium.new_context()
        self.page = self.context.new_page()
        self.posted: list[Any] = []
        self.errors: list[str] = []
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error"
                     and not msg.location.get("url", "").endswith("/favicon.ico") else None)
        self.context.route(WIKI + "/**", self._at_the_sp)

    def _at_the_sp(self, route: Any) -> None:
        self.posted.append(route.request)
        route.fulfill(status=200, content_type="text/html", body="<h1>Welcome to the wiki</h1>")

    def sign_in(self, username: str) -> None:
        """Fill in the login form the page is on."""
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()

    def close(self) -> None:
        self.context.close()


def test_an_admin_registers_and_assigns_an_sp_that_its_group_then_signs_in_to(
        browser: Any, live_server: Any, tmp_path: Path) -> None:  # noqa: F811 - the imported fixture
    make_user("root", PASSWORD, groups=["idp-admins"], display_name="Root Admin")
    make_user("alice", PASSWORD, groups=["engineers"])
    make_user("bob", PASSWORD, groups=["finance"])
    wiki = OneLoginSp(idp_metadata(live_server.url), entity_id=WIKI + "/metadata", acs_url=WIKI + "/acs")
    metadata_file = tmp_path / "wiki-metadata.xml"
    metadata_file.write_bytes(wiki.metadata())
    url = live_server.url

    # The admin: /admin asks for a sign-in first, then comes back.
    admin = Session(browser, url)
    admin.page.goto(url + "/admin")
    admin.sign_in("root")
    admin.page.wait_for_url(url + "/admin/")
    admin.page.get_by_role("navigation", name="Admin").get_by_role("link", name="SAML apps").click()
    admin.page.get_by_role("link", name="Register a SAML app").click()
    upload = admin.page.locator("section", has=admin.page.get_by_role("heading", name="Upload its metadata file"))
    upload.get_by_label("Metadata file").set_input_files(metadata_file)
    upload.get_by_label("Name").fill("Team wiki")
    upload.get_by_role("button", name="Register from file").click()
    sp = providers.get(WIKI + "/metadata")
    assert sp is not None and sp.name == "Team wiki"
    admin.page.wait_for_url(f"{url}/admin/sps/{sp.id}")
    assert "Registered Team wiki." in admin.page.get_by_role("status").inner_text()

    # Closed until assigned; then assigned to engineers.
    assert not sp.open_to_all
    admin.page.get_by_label("Assign to").select_option("group")
    admin.page.get_by_label("Group or user name").fill("engineers")
    admin.page.get_by_role("button", name="Assign", exact=True).click()
    admin.page.get_by_text("Assigned Team wiki to group engineers.").wait_for()
    assert admin.page.get_by_role("row", name="group engineers").is_visible()
    assert [(e.actor, e.details["principal"]) for e in events(type="access.app.assign")] == [
        ("admin:root", "group engineers")]

    admin.page.get_by_role("link", name="Sign out").click()
    admin.page.get_by_role("button", name="Sign out").click()
    admin.page.get_by_role("heading", name="You are signed out").wait_for()
    assert admin.errors == []  # no CSP refusal, no script error on any admin page
    admin.close()

    # A member of engineers signs in through the SP: python3-saml accepts what the browser posts to its ACS.
    alice = Session(browser, url)
    login_url, request_id = wiki.redirect_login(WIKI + "/after")
    alice.page.goto(login_url)
    alice.sign_in("alice")
    alice.page.get_by_text("Welcome to the wiki").wait_for()
    (post,) = alice.posted
    assert post.method == "POST" and post.url == WIKI + "/acs"
    fields = {k: v[0] for k, v in parse_qs(post.post_data).items()}
    auth = wiki.process_response(PostedForm(post.url, fields), request_id)
    assert auth.get_errors() == [], auth.get_last_error_reason()
    assert auth.is_authenticated() and auth.get_attributes()["username"] == ["alice"]
    assert fields["RelayState"] == WIKI + "/after"
    alice.close()

    # bob is in no group the SP is assigned to: the sign-in stops at the bridge, nothing reaches the SP.
    bob = Session(browser, url)
    login_url, _ = wiki.redirect_login(WIKI + "/after")
    bob.page.goto(login_url)
    with bob.page.expect_response(lambda r: r.status == 403) as refused:
        bob.sign_in("bob")
    # The login form's POST itself answers the parked request (no hop back through /saml/continue).
    assert refused.value.request.method == "POST" and refused.value.url.startswith(url + "/login")
    assert bob.posted == []
    bob.page.get_by_role("heading", name="Not allowed").wait_for()
    assert "access.denied" in {e.type for e in events(username="bob")}

    # ...and /admin is not for him.
    answer = bob.page.goto(url + "/admin")
    assert answer is not None and answer.status == 403
    assert "The admin pages are for administrators" in bob.page.inner_text("body")
    assert [e.details["path"] for e in events(type="admin.denied")] == ["/admin/"]
    bob.close()
