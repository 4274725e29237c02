"""The admin pages for applications (/admin/sps, /admin/clients) with Flask's test client, driven the way a
browser submits their forms (every field the page renders, its CSRF token included): registering a SAML app
from a file, pasted XML, a URL or a preset, with the parser's reason when its metadata is refused; editing,
assigning, opening and deleting it; registering an OIDC client whose secret is shown once and works at the token
endpoint, editing, rotating and deleting it. Every change is audited as the admin; a non-admin gets 403 on
every page and every POST. The browser side is tests/interop/test_admin_chromium.py."""

from __future__ import annotations

import functools
import html
import io
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import lxml.html
import pytest
from admin_ui import by_admin, field_errors, form_errors, sign_in_admin
from conftest import Clock
from flask import Flask, g
from flask.testing import FlaskClient
from helpers import DEFAULT_PASSWORD, csrf_token, login, make_user
from saml_peers import python3_saml_metadata
from sqlalchemy import select
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from idp.access import assignments
from idp.audit import events
from idp.extensions import db
from idp.oidc import clients
from idp.saml import providers
from idp.saml.metadata import NAMEID_PERSISTENT, MetadataError, parse_sp_metadata
from idp.store import AppAssignment, OidcClient, ServiceProvider
from idp.store.oidc import digest

ENTITY_ID = "https://wiki.example.test/metadata"
ACTOR = "admin:root"


@functools.cache
def metadata() -> bytes:
    """python3-saml's metadata for the SP the tests register (made on first use, not at collection)."""
    return python3_saml_metadata(entity_id=ENTITY_ID, acs_url="https://wiki.example.test/acs")


class Browser:
    """A test client that submits the forms of the page it is on, as a browser would."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.page: TestResponse | None = None

    def get(self, path: str, status: int = 200) -> TestResponse:
        g.pop("csrf_token", None)  # the app fixture's one app context would share it between clients
        self.page = self.client.get(path)
        assert self.page.status_code == status, (path, self.page.status_code)
        return self.page

    def submit(self, action: str, changes: dict[str, Any] | None = None, files: dict[str, Any] | None = None,
               ) -> TestResponse:
        """Post the form of the current page whose action is ``action`` with these fields changed: a string or
        a list sets, True ticks a checkbox, False or None clears."""
        assert self.page is not None
        doc = lxml.html.fromstring(self.page.get_data(as_text=True))
        forms = [f for f in doc.forms if f.get("action") == action]
        assert forms, f"no form posting to {action}: {[f.get('action') for f in doc.forms]}"
        data = MultiDict(forms[0].form_values())
        for name, value in (changes or {}).items():
            if value is None or value is False:
                data.poplist(name)
            elif value is True:
                data[name] = "y"
            elif isinstance(value, list):
                data.setlist(name, value)
            else:
                data[name] = value
        for name, (content, filename) in (files or {}).items():
            data[name] = (io.BytesIO(content), filename)
        return self.client.post(action, data=data, headers={"Referer": self.page.request.url})

    def follow(self, resp: TestResponse) -> TestResponse:
        assert resp.status_code == 303, (resp.status_code, resp.get_data(as_text=True)[:3000])
        return self.get(resp.headers["Location"])


def visible(resp: TestResponse) -> str:
    """The page's text as a reader sees it, whitespace collapsed."""
    return " ".join(lxml.html.fromstring(resp.get_data(as_text=True)).text_content().split())


@pytest.fixture
def admin(app: Flask) -> Browser:
    return Browser(sign_in_admin(app.test_client()))


def registered(entity_id: str = ENTITY_ID) -> ServiceProvider:
    db.session.expire_all()
    sp = db.session.scalar(select(ServiceProvider).where(ServiceProvider.entity_id == entity_id))
    assert sp is not None
    return sp


def sp_count() -> int:
    return len(db.session.scalars(select(ServiceProvider.id)).all())


# --- registering a SAML app ------------------------------------------------------------------------------


def test_register_by_uploading_the_metadata_file(admin: Browser) -> None:
    admin.get("/admin/sps/new")
    resp = admin.submit("/admin/sps/new/file", {"file-name": "Team wiki"},
                        files={"file-metadata": (metadata(), "wiki-metadata.xml")})
    sp = registered()
    assert resp.headers["Location"] == f"/admin/sps/{sp.id}"
    page = admin.follow(resp)
    assert "Registered Team wiki." in visible(page) and ENTITY_ID in visible(page)
    assert (sp.name, sp.metadata_source, sp.open_to_all) == ("Team wiki", None, False)
    (event,) = by_admin("sp.add")
    assert event.sp == ENTITY_ID

    listing = admin.get("/admin/sps")
    (row,) = lxml.html.fromstring(listing.get_data(as_text=True)).xpath("//table[@class='list']/tbody/tr")
    assert [" ".join(td.text_content().split()) for td in row.findall("td")] == [
        "Team wiki", ENTITY_ID, "0 assignments"]


def test_pasted_metadata_is_refused_with_the_parsers_reason_then_registered(admin: Browser) -> None:
    broken = metadata().replace(b"AssertionConsumerService", b"AssertionConsumer")
    with pytest.raises(MetadataError) as reason:
        parse_sp_metadata(broken)
    admin.get("/admin/sps/new")
    resp = admin.submit("/admin/sps/new/xml", {"xml-metadata": broken.decode()})
    assert resp.status_code == 422
    assert field_errors(resp, "xml-metadata") == reason.value.message
    assert sp_count() == 0
    # What was pasted is still there to be corrected.
    assert html.escape(ENTITY_ID) in resp.get_data(as_text=True)

    admin.page = resp
    assert admin.submit("/admin/sps/new/xml", {"xml-metadata": metadata().decode()}).status_code == 303
    assert registered().name == ENTITY_ID  # no name given, none in the metadata: its entity ID

    admin.get("/admin/sps/new")
    again = admin.submit("/admin/sps/new/xml", {"xml-metadata": metadata().decode()})
    assert again.status_code == 422
    assert field_errors(again, "xml-metadata") == f"service provider '{ENTITY_ID}' is already registered"
    assert admin.submit("/admin/sps/new/xml").status_code == 422  # nothing pasted
    assert sp_count() == 1


@pytest.fixture
def metadata_url() -> Iterator[str]:
    class Serve(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/metadata.xml"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "application/samlmetadata+xml")
            self.end_headers()
            if found:
                self.wfile.write(metadata())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Serve)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/metadata.xml"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_register_from_a_url(admin: Browser, metadata_url: str) -> None:
    admin.get("/admin/sps/new")
    for url, reason in [(metadata_url.replace("metadata.xml", "missing.xml"), "returned HTTP 404"),
                        ("file://localhost/etc/passwd", "An http:// or https:// address."),
                        ("http://127.0.0.1:9/metadata.xml", "cannot fetch http://127.0.0.1:9/metadata.xml: "
                                                            "ConnectionError")]:
        resp = admin.submit("/admin/sps/new/url", {"url-metadata": url})
        assert resp.status_code == 422, url
        assert reason in field_errors(resp, "url-metadata"), url
    assert sp_count() == 0
    admin.follow(admin.submit("/admin/sps/new/url", {"url-metadata": metadata_url}))
    sp = registered()
    assert sp.metadata_source == metadata_url  # what a refresh re-reads
    page = admin.follow(admin.submit(f"/admin/sps/{sp.id}/refresh"))
    assert "The metadata of " + ENTITY_ID + " has not changed." in visible(page)
    assert [e.details["source"] for e in by_admin("sp.refresh")] == [metadata_url]


def test_register_from_a_preset_with_its_parameters_and_roles(admin: Browser) -> None:
    page = admin.get("/admin/sps/new")
    assert "Datadog" in visible(page)
    admin.get("/admin/sps/presets/datadog")
    resp = admin.submit("/admin/sps/presets/datadog", {"param_site": "not a host!"})
    assert resp.status_code == 422
    assert field_errors(resp, "param_site") == ("parameter 'site': 'not a host!' is not a host name (letters, "
                                                "digits, hyphens and dots)")
    admin.page = resp
    resp = admin.submit("/admin/sps/presets/datadog", {
        "param_site": "app.datadoghq.eu", "roles-0-group": "engineers", "roles-0-role": "Datadog Standard Role"})
    sp = registered("https://app.datadoghq.eu/account/saml/metadata.xml")
    assert resp.headers["Location"] == f"/admin/sps/{sp.id}"
    assert sp.name == "Datadog" and sp.nameid_format.endswith(":emailAddress")
    assert sp.attribute_map[-1] == {"attribute": "roles", "name": "idp_role",
                                    "name_format": providers.NAME_FORMATS["basic"],
                                    "roles": {"engineers": ["Datadog Standard Role"]}}
    assert [r["attribute"] for r in sp.attribute_map] == ["email", "family_name", "given_name", "roles"]
    admin.get("/admin/sps/presets/no-such-preset", status=404)

    # AWS's preset is its metadata file; its accounts are reached through account assignments, not the app's.
    admin.get("/admin/sps/presets/aws")
    page = admin.follow(admin.submit("/admin/sps/presets/aws"))
    assert "AWS sign-in is not assigned as an app" in visible(page)
    assert not [f for f in lxml.html.fromstring(page.get_data(as_text=True)).forms
                if f.get("action").endswith(("/assign", "/access"))]
    assert "AWS accounts (through account assignments)" in visible(admin.get("/admin/sps"))


def test_a_form_without_its_csrf_token_is_refused(admin: Browser) -> None:
    sp = providers.add(metadata(), None, providers.SpOptions(), actor="test")
    for path, data in [("/admin/sps/new/xml", {"xml-metadata": metadata().decode()}),
                       (f"/admin/sps/{sp.id}", {"name": "Renamed"}),
                       (f"/admin/sps/{sp.id}/delete", {"confirm": "y"}),
                       (f"/admin/sps/{sp.id}/assign", {"assign-kind": "group", "assign-name": "staff"}),
                       ("/admin/clients/new", {"name": "x", "kind": "public", "grant_types": "device_code"})]:
        assert admin.client.post(path, data=data).status_code == 400, path
    assert [s.name for s in providers.all_providers()] == [ENTITY_ID]
    assert db.session.scalar(select(AppAssignment.id)) is None and clients.all_clients() == []


# --- editing, assigning and deleting ---------------------------------------------------------------------


def test_edits_persist_and_are_by_admin(admin: Browser) -> None:
    sp = providers.add(metadata(), None, providers.SpOptions(name="Wiki"), actor="test")
    page = admin.get(f"/admin/sps/{sp.id}")
    rows = lxml.html.fromstring(page.get_data(as_text=True)).xpath("//input[starts-with(@name,'attributes-')]"
                                                                   "[contains(@name,'-name')]")
    assert [r.get("value") for r in rows] == ["username", "email", "given_name", "family_name", "display_name",
                                              "groups", "", ""]  # the map, then two empty rows
    resp = admin.submit(f"/admin/sps/{sp.id}", {
        "name": "Team wiki", "nameid_format": NAMEID_PERSISTENT, "sign_response": False,
        "attributes-1-name": "mail", "attributes-1-name_format": providers.NAME_FORMATS["uri"],
        "attributes-5-attribute": "", "attributes-5-name": "",  # cleared: groups no longer released
        "roles-0-name": "role", "roles-0-group": "engineers", "roles-0-role": "editor",
        "roles-1-name": "role", "roles-1-group": "staff", "roles-1-role": "viewer",
    })
    page = admin.follow(resp)
    assert "Saved Team wiki: changed name, nameid format, sign response, attribute map." in visible(page)
    sp = registered()
    assert (sp.name, sp.nameid_format, sp.sign_response, sp.sign_assertion) == (
        "Team wiki", NAMEID_PERSISTENT, False, True)
    assert [(r["attribute"], r["name"], r["name_format"].rsplit(":", 1)[1]) for r in sp.attribute_map] == [
        ("username", "username", "basic"), ("email", "mail", "uri"), ("given_name", "given_name", "basic"),
        ("family_name", "family_name", "basic"), ("display_name", "display_name", "basic"),
        ("roles", "role", "basic")]
    assert sp.attribute_map[-1]["roles"] == {"engineers": ["editor"], "staff": ["viewer"]}
    (event,) = by_admin("sp.update")
    assert set(event.details["changed"]) == {"name", "nameid_format", "sign_response", "attribute_map"}
    assert "roles=role {engineers=editor staff=viewer}" in event.details["changed"]["attribute_map"]["to"]

    # The page shows the roles as rows again; saving it unchanged changes (and audits) nothing.
    page = admin.follow(admin.submit(f"/admin/sps/{sp.id}"))
    assert "Nothing changed." in visible(page) and len(by_admin("sp.update")) == 1


def test_refused_edits_say_why_next_to_the_field_and_change_nothing(admin: Browser) -> None:
    sp = providers.add(metadata(), None, providers.SpOptions(name="Wiki"), actor="test")
    admin.get(f"/admin/sps/{sp.id}")
    resp = admin.submit(f"/admin/sps/{sp.id}", {"encrypt_assertion": True, "name": "Renamed"})
    assert resp.status_code == 422
    assert field_errors(resp, "encrypt_assertion") == (
        f"cannot encrypt assertions for '{ENTITY_ID}': its metadata has no encryption certificate (an RSA one: "
        "the assertion's key is wrapped with RSA-OAEP)")
    resp = admin.submit(f"/admin/sps/{sp.id}", {"attributes-1-name": "", "roles-0-name": "role",
                                                "roles-0-group": "engineers"})
    assert resp.status_code == 422
    assert field_errors(resp, "attributes-1-name") == ("attribute 'email' needs a SAML name (at most 1024 "
                                                       "characters)")
    assert field_errors(resp, "roles-0-name") == "a role rule needs a group and a role"
    assert field_errors(resp, "attributes-0-name") == ""
    resp = admin.submit(f"/admin/sps/{sp.id}", {"name": ""})
    assert resp.status_code == 422 and field_errors(resp, "name") == "The app needs a name."
    assert registered().name == "Wiki" and not registered().encrypt_assertion and by_admin("sp.update") == []


def test_assign_open_and_unassign_with_confirmation(admin: Browser) -> None:
    sp = providers.add(metadata(), None, providers.SpOptions(name="Wiki"), actor="test")
    make_user("carol")
    page = f"/admin/sps/{sp.id}"
    admin.get(page)
    refused = admin.submit(page + "/assign", {"assign-kind": "user", "assign-name": "nobody"})
    assert refused.status_code == 422
    assert field_errors(refused, "assign-name").startswith("no user 'nobody'")
    refused = admin.submit(page + "/assign", {"assign-name": "engineers", "assign-until": "next week"})
    assert refused.status_code == 422 and "neither an ISO date" in field_errors(refused, "assign-until")
    refused = admin.submit(page + "/assign", {"assign-name": "engineers", "assign-until": "2001-01-01"})
    assert refused.status_code == 422 and "is already past" in field_errors(refused, "assign-until")

    admin.follow(admin.submit(page + "/assign", {"assign-name": "engineers", "assign-until": "2099-12-31"}))
    shown = admin.follow(admin.submit(page + "/assign", {"assign-kind": "user", "assign-name": "carol"}))
    assert "Assigned Wiki to user carol." in visible(shown)
    assert "group engineers 2100-01-01 00:00 UTC admin:root" in visible(shown) and "user carol no end" in visible(shown)
    conflict = admin.submit(page + "/assign", {"assign-name": "engineers"})
    assert conflict.status_code == 422 and form_errors(conflict).startswith("Wiki is already assigned")
    assert [e.details["principal"] for e in by_admin("access.app.assign")] == ["user carol", "group engineers"]
    assert "2 assignments" in visible(admin.get("/admin/sps"))

    admin.get(page)
    admin.follow(admin.submit(page + "/access", {"access-open_to_all": True}))
    assert registered().open_to_all and len(by_admin("access.app.open_to_all")) == 1
    assert "Open to all" in visible(admin.get("/admin/sps"))

    confirm = admin.get(page + "/unassign?principal=group%3Aengineers")
    assert "Yes, Wiki is no longer for group engineers" in visible(confirm)
    action = page + "/unassign?principal=group%3Aengineers"
    assert admin.submit(action, {"confirm": False}).status_code == 422
    assert len(db.session.scalars(select(AppAssignment)).all()) == 2
    done = admin.follow(admin.submit(action, {"confirm": True}))
    assert "Wiki is no longer assigned to group engineers." in visible(done)
    assert [a.user_id is not None for a in db.session.scalars(select(AppAssignment))] == [True]
    assert [e.details["principal"] for e in by_admin("access.app.unassign")] == ["group engineers"]


def test_an_unassignment_must_say_whom(admin: Browser) -> None:
    sp = providers.add(metadata(), None, providers.SpOptions(name="Wiki"), actor="test")
    reg = clients.add(clients.ClientOptions(name="Reports", redirect_uris=("https://r.example.test/cb",)),
                      actor="test")
    for page, key in ((f"/admin/sps/{sp.id}", ENTITY_ID), (f"/admin/clients/{reg.client_id}", reg.client_id)):
        assignments.assign_app(key, "group:engineers", actor="test")
        action = page + "/unassign?principal=group%3Aengineers"
        admin.get(action)
        refused = admin.submit(action, {"principal": None, "confirm": True})  # the hidden field left out
        assert refused.status_code == 400 and "Say which one: ?principal=group:NAME." in visible(refused), page
        assert "Say which one" in visible(admin.get(page + "/unassign", status=400))
    assert len(db.session.scalars(select(AppAssignment)).all()) == 2 and by_admin("access.app.unassign") == []


def test_change_when_an_app_assignment_ends(admin: Browser, frozen_clock: Clock) -> None:
    sp = providers.add(metadata(), None, providers.SpOptions(name="Wiki"), actor="test")
    reg = clients.add(clients.ClientOptions(name="Reports", redirect_uris=("https://r.example.test/cb",)),
                      actor="test")
    wiki = assignments.assign_app(ENTITY_ID, "group:engineers", until=frozen_clock() + timedelta(days=1),
                                  actor="test")
    reports = assignments.assign_app(reg.client_id, "group:engineers", actor="test")
    page, change = f"/admin/sps/{sp.id}", f"/admin/sps/{sp.id}/assignments/{wiki.id}"
    assert f'href="{change}"' in admin.get(page).get_data(as_text=True)
    # Another app's assignment is not this app's to change.
    admin.get(f"/admin/sps/{sp.id}/assignments/{reports.id}", status=404)

    form = admin.get(change)
    assert "End of Wiki for group engineers" in visible(form)
    refused = admin.submit(change, {"until": "2001-01-01"})
    assert refused.status_code == 422 and "is already past" in field_errors(refused, "until")
    refused = admin.submit(change, {"until": "next week"})
    assert refused.status_code == 422 and "neither an ISO date" in field_errors(refused, "until")
    assert by_admin("access.app.update") == []

    shown = admin.follow(admin.submit(change, {"until": "2099-12-31"}))
    assert "Wiki is assigned to group engineers until 2100-01-01 00:00 UTC." in visible(shown)
    assert "group engineers 2100-01-01 00:00 UTC" in visible(shown)
    [event] = by_admin("access.app.update")
    assert event.details["until"]["to"] == "2100-01-01T00:00:00+00:00"

    # The OIDC client's page works the same way; an emptied field means no end.
    client_change = f"/admin/clients/{reg.client_id}/assignments/{reports.id}"
    admin.get(client_change)
    admin.follow(admin.submit(client_change, {"until": "2099-01-01T12:00:00+02:00"}))
    db.session.expire_all()
    assert db.session.get(AppAssignment, reports.id).until == datetime(2099, 1, 1, 10, 0, tzinfo=UTC)
    admin.get(change)
    admin.follow(admin.submit(change, {"until": ""}))
    db.session.expire_all()
    assert db.session.get(AppAssignment, wiki.id).until is None
    assert "group engineers no end" in visible(admin.get(page))


def test_delete_needs_confirmation(admin: Browser) -> None:
    sp = providers.add(metadata(), None, providers.SpOptions(name="Wiki"), actor="test")
    page = admin.get(f"/admin/sps/{sp.id}/delete")
    assert f"Yes, delete Wiki ({ENTITY_ID})" in visible(page) and sp_count() == 1
    resp = admin.submit(f"/admin/sps/{sp.id}/delete")
    assert resp.status_code == 422 and field_errors(resp, "confirm") == "Tick the box to confirm."
    assert sp_count() == 1
    listing = admin.follow(admin.submit(f"/admin/sps/{sp.id}/delete", {"confirm": True}))
    assert "Deleted Wiki." in visible(listing) and "No SAML app is registered yet." in visible(listing)
    assert sp_count() == 0 and [e.sp for e in by_admin("sp.remove")] == [ENTITY_ID]
    admin.get(f"/admin/sps/{sp.id}", status=404)
    # An id beyond what the column holds is no SP either (it was SQLite's overflow, a 500).
    for path in ("", "/delete", "/unassign"):
        admin.get(f"/admin/sps/{2**64}{path}", status=404)


# --- OIDC clients ----------------------------------------------------------------------------------------


def token(client: FlaskClient, client_id: str, secret: str) -> int:
    """The token endpoint's answer to the client_credentials grant with these credentials."""
    return client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "profile"},
                       auth=(client_id, secret)).status_code


def test_register_a_client_and_see_its_secret_once(admin: Browser) -> None:
    admin.get("/admin/clients/new")
    resp = admin.submit("/admin/clients/new", {"name": "Reports", "kind": "public",
                                               "redirect_uris": "https://reports.example.test/cb",
                                               "grant_types": ["authorization_code", "client_credentials"]})
    assert resp.status_code == 422
    assert field_errors(resp, "grant_types").startswith("a public client cannot use client_credentials")
    admin.page = resp
    resp = admin.submit("/admin/clients/new", {"kind": "confidential", "redirect_uris": ""})
    assert resp.status_code == 422 and "needs at least one" in field_errors(resp, "redirect_uris")
    assert clients.all_clients() == []

    admin.page = resp
    resp = admin.submit("/admin/clients/new", {
        "redirect_uris": "https://reports.example.test/cb\n\n https://reports.example.test/cb2 ",
        "grant_types": ["authorization_code", "client_credentials"], "scopes": ["openid", "profile"],
        "login_url": "https://reports.example.test/login"})
    assert resp.status_code == 200
    doc = lxml.html.fromstring(resp.get_data(as_text=True))
    client_id, secret = doc.get_element_by_id("client-id").text, doc.get_element_by_id("client-secret").text
    client = clients.get_or_404(client_id)
    assert client.secret_hash == digest(secret) and not client.public and not client.open_to_all
    assert client.redirect_uris == ["https://reports.example.test/cb", "https://reports.example.test/cb2"]
    assert (client.scopes, client.login_url) == (["openid", "profile"], "https://reports.example.test/login")
    assert [e.sp for e in by_admin("oidc.client.add")] == [client_id]
    assert token(admin.client, client_id, secret) == 200
    # Never shown again.
    assert secret not in admin.get(f"/admin/clients/{client_id}").get_data(as_text=True)
    assert secret not in admin.get("/admin/clients").get_data(as_text=True)
    assert "Reports" in visible(admin.page) and client_id in visible(admin.page)


def test_edit_rotate_assign_and_delete_a_client(admin: Browser) -> None:
    reg = clients.add(clients.ClientOptions(name="Reports", redirect_uris=("https://reports.example.test/cb",),
                                            grant_types=("authorization_code", "client_credentials")), actor="test")
    page = f"/admin/clients/{reg.client_id}"
    admin.get(page)
    resp = admin.submit(page, {"login_url": "http://reports.example.test/login"})
    assert resp.status_code == 422 and "must use https" in field_errors(resp, "login_url")
    admin.follow(admin.submit(page, {"name": "Quarterly reports", "first_party": True, "require_pkce": True,
                                     "post_logout_redirect_uris": "https://reports.example.test/bye"}))
    client = clients.get_or_404(reg.client_id)
    db.session.refresh(client)
    assert (client.name, client.first_party, client.require_pkce, client.post_logout_redirect_uris) == (
        "Quarterly reports", True, True, ["https://reports.example.test/bye"])
    (event,) = by_admin("oidc.client.update")
    assert set(event.details["changed"]) == {"name", "first_party", "require_pkce", "post_logout_redirect_uris"}

    admin.get(page)
    assert admin.submit(page + "/secret").status_code == 422  # not confirmed
    assert token(admin.client, reg.client_id, reg.client_secret or "") == 200
    resp = admin.submit(page + "/secret", {"rotate-confirm": True})
    new_secret = lxml.html.fromstring(resp.get_data(as_text=True)).get_element_by_id("client-secret").text
    assert token(admin.client, reg.client_id, reg.client_secret or "") == 401
    assert token(admin.client, reg.client_id, new_secret) == 200
    assert len(by_admin("oidc.client.rotate_secret")) == 1

    admin.get(page)
    shown = admin.follow(admin.submit(page + "/assign", {"assign-name": "analysts"}))
    assert "Assigned Quarterly reports to group analysts." in visible(shown)
    assert "1 assignment" in visible(admin.get("/admin/clients"))

    admin.get(page + "/delete")
    assert admin.submit(page + "/delete").status_code == 422 and clients.get(reg.client_id) is not None
    listing = admin.follow(admin.submit(page + "/delete", {"confirm": True}))
    assert "Deleted Quarterly reports." in visible(listing) and clients.get(reg.client_id) is None
    assert [e.sp for e in by_admin("oidc.client.remove")] == [reg.client_id]
    assert db.session.scalar(select(AppAssignment.id)) is None  # its assignments went with it


# --- who may use these pages -----------------------------------------------------------------------------


def test_non_admins_get_403_on_every_page_and_post(app: Flask) -> None:
    sp = providers.add(metadata(), None, providers.SpOptions(name="Wiki"), actor="test")
    reg = clients.add(clients.ClientOptions(name="Reports", redirect_uris=("https://r.example.test/cb",)),
                      actor="test")
    make_user("mallory", groups=["staff"])
    client = app.test_client()
    assert login(client, "mallory", DEFAULT_PASSWORD).status_code == 302
    g.pop("csrf_token", None)
    token_ = csrf_token(client.get("/login?force=1").get_data(as_text=True))
    ids = {"sp_id": sp.id, "client_id": reg.client_id, "via": "xml", "key": "datadog", "assignment_id": 1}
    mine = [r for r in app.url_map.iter_rules()
            if r.endpoint.removeprefix("admin.").startswith(("sp", "client")) and r.endpoint.startswith("admin.")]
    assert len(mine) >= 15
    for rule in mine:
        path = rule.build({k: v for k, v in ids.items() if k in rule.arguments})[1]
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            resp = client.open(path, method=method, data={"csrf_token": token_, "confirm": "y", "name": "x"})
            assert resp.status_code == 403, (method, path, resp.status_code)
    denied = events(type="admin.denied")
    assert len(denied) >= len(mine) and all(e.username == "mallory" for e in denied)
    assert sp_count() == 1 and clients.get(reg.client_id) is not None
    db.session.expire_all()
    assert db.session.get(OidcClient, clients.get_or_404(reg.client_id).id).name == "Reports"

    anonymous = app.test_client().get("/admin/sps")
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")
