"""The admin API's applications: SAML service providers (from metadata XML, a metadata URL, fields or a preset),
OIDC clients (the secret shown once) and app assignments, driven with real admin tokens; every refusal answers
with the field or the reason and changes nothing, and every change is an audit event naming the token."""

from __future__ import annotations

import base64
import hashlib
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from admin_api import bearer
from flask import Flask
from flask.testing import FlaskClient
from helpers import audit_insert_lost, committed_elsewhere, make_user
from joserfc.jwk import RSAKey
from saml_peers import SP_ENTITY_ID, cert_b64, python3_saml_metadata, sp_keys
from sqlalchemy import false as sql_false
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from idp import clock
from idp.access import assignments
from idp.admin import tokens
from idp.extensions import db
from idp.saml import presets, providers
from idp.saml.metadata import MetadataError
from idp.store import AppAssignment, AuditRecord, OidcClient, ServiceProvider
from idp.store.oidc import digest

EMAIL = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"


class Api:
    """The test client with an admin token; ``expect`` asserts the status and returns the JSON body."""

    def __init__(self, client: FlaskClient, scope: str, name: str) -> None:
        self.client, self.headers = client, bearer(scope, name=name)
        self.actor = tokens.actor_of(next(t for t in tokens.all_tokens() if t.name == name))  # as audited

    def call(self, method: str, path: str, expect: int, **kwargs: Any) -> Any:
        resp: TestResponse = self.client.open("/api/v1" + path, method=method, headers=self.headers, **kwargs)
        assert resp.status_code == expect, (resp.status_code, resp.get_data(as_text=True))
        if expect == 204:
            assert resp.data == b""
            return None
        return resp.get_json()

    def get(self, path: str, expect: int = 200, **kwargs: Any) -> Any:
        return self.call("GET", path, expect, **kwargs)

    def post(self, path: str, body: Any = None, expect: int = 201) -> Any:
        return self.call("POST", path, expect, json=body)

    def patch(self, path: str, body: Any, expect: int = 200) -> Any:
        return self.call("PATCH", path, expect, json=body)

    def delete(self, path: str, expect: int = 204) -> Any:
        return self.call("DELETE", path, expect)


@pytest.fixture
def api(app: Flask, client: FlaskClient) -> Api:
    return Api(client, "write", "ticketing")


@pytest.fixture
def reader(app: Flask, client: FlaskClient) -> Api:
    return Api(client, "read", "dashboard")


def events(type_: str) -> list[AuditRecord]:
    return list(db.session.scalars(select(AuditRecord).where(AuditRecord.type == type_).order_by(AuditRecord.id)))


def count(model: Any) -> int:
    return int(db.session.scalar(select(func.count()).select_from(model)))


def sp_metadata(entity_id: str = SP_ENTITY_ID, acs_url: str = "https://sp.example.test/acs", **kwargs: Any) -> str:
    return python3_saml_metadata(entity_id=entity_id, acs_url=acs_url, **kwargs).decode()


def fingerprint(cert_pem: bytes) -> str:
    digest_hex = hashlib.sha256(base64.b64decode(cert_b64(cert_pem))).hexdigest().upper()
    return ":".join(digest_hex[i:i + 2] for i in range(0, len(digest_hex), 2))


# --- SAML service providers -------------------------------------------------------------------------------


def test_an_sp_registered_from_its_metadata_is_read_back_and_listed(api: Api) -> None:
    created = api.post("/service-providers", {
        "metadata_xml": sp_metadata(), "name": "Wiki", "nameid_format": "email", "sign_response": False,
        "attribute_map": [{"attribute": "email", "name": "mail"},
                          {"attribute": "roles", "name": "role", "name_format": "uri",
                           "roles": {"engineers": ["editor"]}}],
    })
    assert created["entity_id"] == SP_ENTITY_ID and created["name"] == "Wiki"
    assert created["nameid_format"] == EMAIL and created["sign_response"] is False
    assert created["sign_assertion"] is True and created["open_to_all"] is False
    assert created["attribute_map"] == [
        {"attribute": "email", "name": "mail", "name_format": BASIC},
        {"attribute": "roles", "name": "role", "name_format": URI, "roles": {"engineers": ["editor"]}}]
    assert created["acs"][0]["location"] == "https://sp.example.test/acs"
    assert created["signing_certificates"] == [fingerprint(sp_keys()[1])]
    assert created["metadata_source"] is None

    assert api.get(f"/service-providers/{created['id']}") == created
    page = api.get("/service-providers")
    assert page["total"] == 1 and page["items"] == [created]
    [event] = events("sp.add")
    assert event.actor == api.actor and event.sp == SP_ENTITY_ID


def test_an_sp_registered_from_a_url_is_refreshed_from_it(api: Api, http_dir: tuple[str, Path]) -> None:
    base, folder = http_dir
    (folder / "sp.xml").write_text(sp_metadata())
    created = api.post("/service-providers", {"metadata_url": f"{base}/sp.xml", "open_to_all": True})
    assert created["metadata_source"] == f"{base}/sp.xml" and created["open_to_all"] is True
    api.patch(f"/service-providers/{created['id']}", {"sign_assertion": False})

    (folder / "sp.xml").write_text(sp_metadata(acs_url="https://sp.example.test/new-acs"))
    refreshed = api.post(f"/service-providers/{created['id']}/refresh", expect=200)
    assert refreshed["metadata_changed"] is True
    assert [e["location"] for e in refreshed["acs"]] == ["https://sp.example.test/new-acs"]
    assert refreshed["sign_assertion"] is False  # settings are kept
    assert api.post(f"/service-providers/{created['id']}/refresh", expect=200)["metadata_changed"] is False
    assert [e.actor for e in events("sp.refresh")] == [api.actor, api.actor]

    # Gone from the URL: refused with the reason; what is stored stays.
    (folder / "sp.xml").unlink()
    error = api.post(f"/service-providers/{created['id']}/refresh", expect=422)
    assert "HTTP 404" in error["message"]
    assert api.get(f"/service-providers/{created['id']}")["acs"][0]["location"] == "https://sp.example.test/new-acs"
    error = api.post("/service-providers", {"metadata_url": f"{base}/missing.xml"}, expect=422)
    assert "HTTP 404" in error["message"]


def test_a_metadata_url_that_redirects_is_refused_naming_where_it_points(api: Api,
                                                                          http_dir: tuple[str, Path]) -> None:
    base, folder = http_dir
    # The file server redirects a folder asked without its final slash (301, Location: /moved/); the folder's
    # index is good metadata, which following the redirect would register.
    (folder / "moved").mkdir()
    (folder / "moved" / "index.html").write_text(sp_metadata())
    error = api.post("/service-providers", {"metadata_url": f"{base}/moved"}, expect=422)
    assert "redirected to '/moved/'" in error["message"] and "not followed" in error["message"]
    assert count(ServiceProvider) == 0

    # Refresh re-reads the recorded URL the same way.
    (folder / "sp.xml").write_text(sp_metadata())
    created = api.post("/service-providers", {"metadata_url": f"{base}/sp.xml"})
    (folder / "sp.xml").unlink()
    (folder / "sp.xml").mkdir()
    (folder / "sp.xml" / "index.html").write_text(sp_metadata(acs_url="https://sp.example.test/elsewhere"))
    error = api.post(f"/service-providers/{created['id']}/refresh", expect=422)
    assert "redirected to '/sp.xml/'" in error["message"]
    assert api.get(f"/service-providers/{created['id']}")["acs"][0]["location"] == "https://sp.example.test/acs"


def test_a_metadata_url_with_credentials_is_refused_and_not_echoed(api: Api, http_dir: tuple[str, Path]) -> None:
    base, folder = http_dir
    (folder / "sp.xml").write_text(sp_metadata())
    url = base.replace("http://", "http://admin:s3cret-pw@") + "/sp.xml"
    error = api.post("/service-providers", {"metadata_url": url}, expect=422)
    assert "user name or password" in error["message"] and "s3cret-pw" not in str(error)
    assert count(ServiceProvider) == 0
    assert "s3cret-pw" not in repr([(e.reason, e.details) for e in db.session.scalars(select(AuditRecord))])


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 written as one number: caught once resolved
    "http://[fe80::1]/metadata.xml",
    "http://0.0.0.0/metadata.xml",
    "http://[::]/metadata.xml",
])
def test_a_metadata_url_reaching_a_link_local_or_unspecified_address_is_refused(api: Api, url: str) -> None:
    error = api.post("/service-providers", {"metadata_url": url}, expect=422)
    assert "link-local or unspecified address" in error["message"], error
    assert count(ServiceProvider) == 0


def test_the_fetch_service_refuses_what_the_api_schema_lets_through_to_it(app: Flask) -> None:
    # The admin UI calls it too, with URLs no schema has looked at.
    for url in ("http://[::ffff:169.254.169.254]/latest/meta-data/", "http://[fe80::1%25lo]:8080/md.xml"):
        with pytest.raises(MetadataError, match="link-local or unspecified address"):
            providers.fetch_url(url)
    with pytest.raises(MetadataError, match="user name or password") as refused:
        providers.fetch_url("https://:token-value@sp.example.test/md.xml")
    assert "token-value" not in str(refused.value)
    for url in ("http://[sp.example.test]/md.xml", "http://[::1/md.xml", "https://sp.example.test:70000/md.xml"):
        with pytest.raises(MetadataError, match="host is not a valid address or its port not a number"):
            providers.fetch_url(url)


def test_every_address_of_a_metadata_host_is_checked(api: Api, http_dir: tuple[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    base, folder = http_dir
    (folder / "sp.xml").write_text(sp_metadata())
    port = int(base.rsplit(":", 1)[1])
    real = socket.getaddrinfo

    def dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        # A name whose DNS answer lists loopback first and the cloud metadata service second; others as usual.
        if host != "sp-metadata.example.test":
            return real(host, *args, **kwargs)
        return [*real("127.0.0.1", *args, **kwargs), *real("169.254.169.254", *args, **kwargs)]

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    error = api.post("/service-providers", {"metadata_url": f"http://sp-metadata.example.test:{port}/sp.xml"},
                     expect=422)
    assert "resolves to 169.254.169.254" in error["message"]
    # Loopback and private addresses stay allowed: intranet SPs, metadata served beside the bridge.
    assert api.post("/service-providers", {"metadata_url": f"{base}/sp.xml"})["entity_id"] == SP_ENTITY_ID


def test_a_recorded_metadata_source_is_checked_again_on_refresh(api: Api, http_dir: tuple[str, Path]) -> None:
    base, folder = http_dir
    (folder / "sp.xml").write_text(sp_metadata())
    created = api.post("/service-providers", {"metadata_url": f"{base}/sp.xml"})
    # A source recorded before these checks existed.
    db.session.get(ServiceProvider, created["id"]).metadata_source = "http://169.254.169.254/latest/meta-data/"
    db.session.commit()
    error = api.post(f"/service-providers/{created['id']}/refresh", expect=422)
    assert "link-local or unspecified address" in error["message"]


def test_an_sp_registered_from_fields_gets_metadata_with_its_urls_and_certificate(api: Api) -> None:
    cert_pem = sp_keys()[1]
    created = api.post("/service-providers", {
        "entity_id": "https://crm.example.test", "acs_urls": ["https://crm.example.test/saml/acs",
                                                             "https://crm.example.test/saml/acs2"],
        "slo_url": "https://crm.example.test/saml/slo", "certificate": cert_pem.decode(),
        "name": "CRM", "nameid_format": PERSISTENT, "require_signed_requests": True, "encrypt_assertion": True,
    })
    assert created["entity_id"] == "https://crm.example.test" and created["name"] == "CRM"
    assert [(e["location"], e["is_default"]) for e in created["acs"]] == [
        ("https://crm.example.test/saml/acs", True), ("https://crm.example.test/saml/acs2", False)]
    assert [e["location"] for e in created["slo"]] == ["https://crm.example.test/saml/slo"]
    assert created["signing_certificates"] == created["encryption_certificates"] == [fingerprint(cert_pem)]
    assert created["nameid_format"] == PERSISTENT
    assert created["require_signed_requests"] is True and created["encrypt_assertion"] is True
    assert created["metadata_source"] is None

    # Without a certificate there is nothing to check signed requests with: the service refuses.
    error = api.post("/service-providers", {"entity_id": "https://other.example.test",
                                            "acs_urls": ["https://other.example.test/acs"],
                                            "require_signed_requests": True}, expect=422)
    assert "no signing certificate" in error["message"]
    error = api.post("/service-providers", {"entity_id": "https://other.example.test",
                                            "acs_urls": ["https://other.example.test/acs"],
                                            "certificate": "-----BEGIN CERTIFICATE-----\nnope\n"}, expect=422)
    assert "not a PEM X.509 certificate" in error["message"]
    # The base64 body alone, as vendors' pages often show a certificate, is the same certificate.
    body = "".join(cert_pem.decode().strip().splitlines()[1:-1])
    other = api.post("/service-providers", {"entity_id": "https://other.example.test", "certificate": body,
                                            "acs_urls": ["https://other.example.test/acs"]})
    assert other["signing_certificates"] == [fingerprint(cert_pem)]
    # Nothing to refresh from.
    error = api.post(f"/service-providers/{created['id']}/refresh", expect=422)
    assert "no recorded metadata source" in error["message"]


def test_an_sp_registered_from_a_preset_takes_its_values(api: Api, reader: Api) -> None:
    listed = {p["name"]: p for p in reader.get("/presets", query_string={"per_page": 200})["items"]}
    datadog = listed["datadog"]
    assert {p["name"]: p["required"] for p in datadog["parameters"]} == {"site": False, "idp_initiated_id": False}
    assert datadog["role_attribute"] == {"name": "idp_role", "name_format": BASIC}

    created = api.post("/service-providers", {"preset": "datadog", "params": {"site": "app.datadoghq.eu"}})
    assert created["entity_id"] == "https://app.datadoghq.eu/account/saml/metadata.xml"
    assert created["name"] == "Datadog" and created["nameid_format"] == EMAIL
    assert [r["name"] for r in created["attribute_map"]] == [a["name"] for a in datadog["attributes"]]
    assert [e["location"] for e in created["acs"]] == ["https://app.datadoghq.eu/account/saml/assertion"]

    error = api.post("/service-providers", {"preset": "pagerduty", "params": {"subdomain": "a/b"}}, expect=422)
    assert "subdomain" in error["message"]
    error = api.post("/service-providers", {"preset": "no-such-app"}, expect=404)
    assert "no preset 'no-such-app'" in error["message"] and "datadog" in error["message"]
    assert str(presets.presets_dir()) not in error["message"] and "/" not in error["message"]
    assert count(ServiceProvider) == 1


def test_a_new_sp_needs_exactly_one_source_and_good_metadata(api: Api) -> None:
    error = api.post("/service-providers", {"name": "nothing"}, expect=422)
    assert "exactly one of metadata_xml, metadata_url" in str(error["errors"]["json"]["_schema"])
    error = api.post("/service-providers", {"metadata_xml": sp_metadata(), "preset": "aws"}, expect=422)
    assert set(error["errors"]["json"]) == {"metadata_xml", "preset"}
    error = api.post("/service-providers", {"metadata_xml": sp_metadata(), "acs_urls": ["https://x.test/a"]},
                     expect=422)
    assert error["errors"]["json"] == {"acs_urls": ["goes with entity_id"]}
    error = api.post("/service-providers", {"entity_id": "https://x.test"}, expect=422)
    assert set(error["errors"]["json"]) == {"acs_urls"}
    error = api.post("/service-providers", {"entity_id": "https://x.test", "acs_urls": ["ftp://x.test/a"]},
                     expect=422)
    assert set(error["errors"]["json"]) == {"acs_urls"}
    error = api.post("/service-providers", {"metadata_url": "file:///etc/passwd"}, expect=422)
    assert set(error["errors"]["json"]) == {"metadata_url"}
    error = api.post("/service-providers", {"metadata_xml": sp_metadata(), "nameid_format": "kerberos",
                                            "attribute_map": [{"attribute": "salary", "name": "s"}]}, expect=422)
    assert set(error["errors"]["json"]) == {"nameid_format", "attribute_map"}

    # The metadata parser's reason.
    error = api.post("/service-providers", {"metadata_xml": "<not-xml"}, expect=422)
    assert error["message"].startswith("metadata is not usable XML")
    no_acs = sp_metadata().replace("AssertionConsumerService", "ArtifactResolutionService")
    error = api.post("/service-providers", {"metadata_xml": no_acs}, expect=422)
    assert "metadata" in error["message"]
    assert count(ServiceProvider) == 0 and events("sp.add") == []

    api.post("/service-providers", {"metadata_xml": sp_metadata()})
    error = api.post("/service-providers", {"metadata_xml": sp_metadata(), "name": "again"}, expect=409)
    assert SP_ENTITY_ID in error["message"]
    error = api.post("/service-providers", {"entity_id": SP_ENTITY_ID, "acs_urls": ["https://x.test/acs"]},
                     expect=409)
    assert count(ServiceProvider) == 1


def refused_field(error: dict[str, Any], location: str = "json") -> str:
    """The one field a service's refusal names, as a schema's refusal would (its reason the message)."""
    ((field, reasons),) = error["errors"][location].items()
    assert reasons == [error["message"]]
    return str(field)


def test_a_services_refusal_of_an_sp_names_the_field(api: Api, http_dir: tuple[str, Path]) -> None:
    # The schema passes these on; the services refuse them, and the answer names the field in the request.
    error = api.post("/service-providers", {"metadata_xml": sp_metadata(), "attribute_map": [
        {"attribute": "email", "name": "mail", "name_format": "kerberos"}]}, expect=422)
    assert refused_field(error) == "attribute_map" and "name format 'kerberos'" in error["message"]
    error = api.post("/service-providers", {"metadata_xml": "<not-xml"}, expect=422)
    assert refused_field(error) == "metadata_xml" and error["message"].startswith("metadata is not usable XML")
    # Past the schema's check of printable text (U+FFFE is printable to it; role values are not looked at):
    # either would fail every assertion that releases it, as XML cannot carry it.
    for rule in ({"attribute": "email", "name": "mail\ufffe"},
                 {"attribute": "roles", "name": "Role", "roles": {"staff": ["dev\u0001"]}}):
        error = api.post("/service-providers", {"metadata_xml": sp_metadata(), "attribute_map": [rule]}, expect=422)
        assert refused_field(error) == "attribute_map" and "control character" in error["message"], error
    base, _ = http_dir
    error = api.post("/service-providers", {"metadata_url": f"{base}/missing.xml"}, expect=422)
    assert refused_field(error) == "metadata_url" and "HTTP 404" in error["message"]
    error = api.post("/service-providers", {"entity_id": "https://crm.example.test", "certificate": "nope",
                                            "acs_urls": ["https://crm.example.test/acs"]}, expect=422)
    assert refused_field(error) == "certificate"
    error = api.post("/service-providers", {"preset": "pagerduty", "params": {"subdomain": "a/b"}}, expect=422)
    assert refused_field(error) == "params" and "subdomain" in error["message"]
    error = api.post("/service-providers", {"entity_id": "https://crm.example.test", "require_signed_requests": True,
                                            "acs_urls": ["https://crm.example.test/acs"]}, expect=422)
    assert refused_field(error) == "require_signed_requests" and "no signing certificate" in error["message"]
    assert count(ServiceProvider) == 0

    sp = api.post("/service-providers", {"metadata_xml": sp_metadata()})
    error = api.patch(f"/service-providers/{sp['id']}", {"encrypt_assertion": True}, expect=422)
    assert refused_field(error) == "encrypt_assertion" and "no encryption certificate" in error["message"]
    # About the SP as it is, not a value the request sent: the message alone.
    error = api.post(f"/service-providers/{sp['id']}/refresh", expect=422)
    assert "no recorded metadata source" in error["message"] and "errors" not in error
    aws = api.post("/service-providers", {"preset": "aws"})
    error = api.patch(f"/service-providers/{aws['id']}", {"open_to_all": True}, expect=422)
    assert "account assignments" in error["message"] and "errors" not in error


def test_a_services_refusal_of_a_client_or_an_app_assignment_names_the_field(api: Api) -> None:
    for body, field, reason in (
            ({"redirect_uris": ["javascript:alert(1)"]}, "redirect_uris", "cannot be a redirect target"),
            ({"redirect_uris": ["https://wiki.test/cb#x"]}, "redirect_uris", "must not have a fragment"),
            # What urlsplit cannot read (an unclosed or non-IPv6 bracket, a port out of range): refused, not a 500.
            ({"redirect_uris": ["http://[::1"]}, "redirect_uris", "is not a valid URI"),
            ({"redirect_uris": ["https://[wiki]/cb"]}, "redirect_uris", "is not a valid URI"),
            ({"redirect_uris": ["https://wiki.test:99999/cb"]}, "redirect_uris", "is not a valid URI"),
            ({"redirect_uris": ["https://wiki.test/cb"], "login_url": "http://wiki.test/login"}, "login_url",
             "must use https"),
            ({"grant_types": ["client_credentials"], "public": True}, "grant_types", "cannot use client_credentials")):
        error = api.post("/oidc-clients", {"name": "Wiki", **body}, expect=422)
        assert (refused_field(error), reason in error["message"]) == (field, True), error
    assert count(OidcClient) == 0

    created = api.post("/oidc-clients", {"name": "Wiki", "redirect_uris": ["https://wiki.test/cb"]})
    path = f"/oidc-clients/{created['client_id']}"
    assert refused_field(api.patch(path, {"public": True}, expect=422)) == "public"
    error = api.patch(path, {"redirect_uris": []}, expect=422)
    assert refused_field(error) == "redirect_uris" and "needs at least one" in error["message"]

    # The service's app_text is the request's app, in a body and in a query string.
    api.post("/service-providers", {"metadata_xml": sp_metadata(), "name": "Wiki"})
    error = api.post("/app-assignments", {"app": "Wiki", "principal": "group:staff"}, expect=422)
    assert refused_field(error) == "app" and "names several applications" in error["message"]
    error = api.get("/app-assignments", query_string={"app": "Wiki"}, expect=422)
    assert refused_field(error, "query") == "app"
    assert count(AppAssignment) == 0


def test_an_sp_is_changed_and_removed(api: Api) -> None:
    sp = api.post("/service-providers", {"metadata_xml": sp_metadata()})
    path = f"/service-providers/{sp['id']}"
    changed = api.patch(path, {"name": "Renamed", "nameid_format": "persistent", "open_to_all": True,
                               "attribute_map": [{"attribute": "username", "name": "uid"}]})
    assert changed["name"] == "Renamed" and changed["nameid_format"] == PERSISTENT and changed["open_to_all"]
    assert changed["attribute_map"] == [{"attribute": "username", "name": "uid", "name_format": BASIC}]
    assert changed["sign_response"] is True  # left out: unchanged
    assert api.get(path) == changed
    [update] = events("sp.update")
    assert update.actor == api.actor and set(update.details["changed"]) == {"name", "nameid_format", "attribute_map"}
    [opened] = events("access.app.open_to_all")
    assert opened.actor == api.actor and opened.sp == SP_ENTITY_ID and opened.details["open_to_all"] is True
    api.patch(path, {})  # nothing given: nothing changes, nothing recorded
    assert len(events("sp.update")) == 1

    error = api.patch(path, {"encrypt_assertion": True}, expect=422)
    assert "no encryption certificate" in error["message"]
    error = api.patch(path, {"sign_response": "maybe", "name": ""}, expect=422)
    assert set(error["errors"]["json"]) == {"sign_response", "name"}
    error = api.patch(path, {"entity_id": "https://elsewhere.test"}, expect=422)
    assert set(error["errors"]["json"]) == {"entity_id"}  # the entity ID comes with the metadata
    assert api.get(path) == changed

    api.patch("/service-providers/999", {"name": "x"}, expect=404)
    api.delete(path)
    api.get(path, expect=404)
    api.delete(path, expect=404)
    api.post(f"{path}/refresh", expect=404)
    [removed] = events("sp.remove")
    assert removed.actor == api.actor and removed.sp == SP_ENTITY_ID


def test_aws_sign_in_is_not_opened_as_an_app_and_a_refused_change_changes_nothing(api: Api) -> None:
    aws = api.post("/service-providers", {"preset": "aws"})
    error = api.patch(f"/service-providers/{aws['id']}", {"name": "AWS console", "open_to_all": True}, expect=422)
    assert "account assignments" in error["message"]
    assert api.get(f"/service-providers/{aws['id']}") == aws and events("sp.update") == []

def test_a_read_token_reads_but_changes_nothing(api: Api, reader: Api) -> None:
    sp = api.post("/service-providers", {"metadata_xml": sp_metadata()})
    client = api.post("/oidc-clients", {"name": "Portal", "redirect_uris": ["https://portal.test/cb"]})
    assert reader.get(f"/service-providers/{sp['id']}")["entity_id"] == SP_ENTITY_ID
    assert reader.get("/oidc-clients")["total"] == 1
    reader.post("/service-providers", {"metadata_xml": sp_metadata(entity_id="https://other.test")}, expect=403)
    reader.patch(f"/service-providers/{sp['id']}", {"name": "x"}, expect=403)
    reader.delete(f"/service-providers/{sp['id']}", expect=403)
    reader.post(f"/oidc-clients/{client['client_id']}/secret", expect=403)
    reader.post("/app-assignments", {"app": SP_ENTITY_ID, "principal": "group:staff"}, expect=403)
    assert count(ServiceProvider) == 1 and api.get(f"/service-providers/{sp['id']}")["name"] == sp["name"]
    assert count(AppAssignment) == 0
    assert len(events("admin.api.denied")) == 5


# --- OIDC clients -----------------------------------------------------------------------------------------


def test_a_client_secret_is_shown_once_and_stored_as_a_digest(api: Api, client: FlaskClient) -> None:
    created = api.post("/oidc-clients", {"name": "Reports", "grant_types": ["client_credentials"],
                                         "scopes": ["groups"], "auth_method": "client_secret_post"})
    secret, client_id = created["client_secret"], created["client_id"]
    assert secret and created["auth_method"] == "client_secret_post" and created["grant_types"] == [
        "client_credentials"]
    row = db.session.scalar(select(OidcClient).where(OidcClient.client_id == client_id))
    assert row is not None and row.secret_hash == digest(secret) and secret not in row.secret_hash

    shown = api.get(f"/oidc-clients/{client_id}")
    assert "client_secret" not in shown and secret not in str(shown)
    assert shown == {k: v for k, v in created.items() if k != "client_secret"}
    assert secret not in str(api.get("/oidc-clients"))
    assert all(secret not in str(e.details) for e in db.session.scalars(select(AuditRecord)))

    def token(with_secret: str) -> int:
        return client.post("/oauth/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                 "client_secret": with_secret}).status_code

    assert token(secret) == 200  # the secret the API gave works at the token endpoint
    rotated = api.post(f"/oidc-clients/{client_id}/secret", expect=200)
    assert rotated["client_id"] == client_id and rotated["client_secret"] not in (None, secret)
    assert token(secret) == 401 and token(rotated["client_secret"]) == 200
    assert [e.actor for e in events("oidc.client.rotate_secret")] == [api.actor]
    [added] = events("oidc.client.add")
    assert added.actor == api.actor and added.sp == client_id


def test_a_client_is_changed_and_removed(api: Api) -> None:
    created = api.post("/oidc-clients", {"name": "Wiki", "redirect_uris": ["https://wiki.test/cb"]})
    path = f"/oidc-clients/{created['client_id']}"
    assert created["grant_types"] == ["authorization_code", "refresh_token"]
    assert created["auth_method"] == "client_secret_basic" and created["open_to_all"] is False
    changed = api.patch(path, {
        "redirect_uris": ["https://wiki.test/cb", "https://wiki.test/cb2"], "first_party": True,
        "claim_map": [{"attribute": "email", "name": "email", "scope": "email"},
                      {"attribute": "roles", "name": "wiki_roles", "scope": "groups",
                       "roles": {"staff": ["reader"]}}],
        "login_url": "https://wiki.test/login", "open_to_all": True,
    })
    assert changed["redirect_uris"] == ["https://wiki.test/cb", "https://wiki.test/cb2"]
    assert changed["first_party"] is True and changed["login_url"] == "https://wiki.test/login"
    assert changed["claim_map"][1] == {"attribute": "roles", "name": "wiki_roles", "scope": "groups",
                                       "roles": {"staff": ["reader"]}}
    assert changed["name"] == "Wiki" and changed["open_to_all"] is True and changed["require_pkce"] is False
    assert api.get(path) == changed
    [update] = events("oidc.client.update")
    assert update.actor == api.actor
    assert set(update.details["changed"]) == {"redirect_uris", "first_party", "claim_map", "login_url"}
    assert [e.actor for e in events("access.app.open_to_all")] == [api.actor]

    # Field checks name the field; the service's checks give the reason; nothing changes.
    error = api.patch(path, {"grant_types": ["password"], "id_token_alg": "none"}, expect=422)
    assert set(error["errors"]["json"]) == {"grant_types", "id_token_alg"}
    assert "must not have a fragment" in api.patch(path, {"redirect_uris": ["https://wiki.test/#x"]},
                                                   expect=422)["message"]
    assert "public and confidential" in api.patch(path, {"public": True}, expect=422)["message"]
    assert "needs at least one" in api.patch(path, {"redirect_uris": []}, expect=422)["message"]
    assert api.get(path) == changed
    api.post("/oidc-clients", {"redirect_uris": ["https://x.test/cb"]}, expect=422)

    api.delete(path)
    api.get(path, expect=404)
    api.patch(path, {"name": "x"}, expect=404)
    api.post(f"{path}/secret", expect=404)
    api.delete(path, expect=404)
    assert [e.actor for e in events("oidc.client.remove")] == [api.actor]


def test_a_client_is_made_to_require_pkce(api: Api) -> None:
    created = api.post("/oidc-clients", {"name": "Wiki", "redirect_uris": ["https://wiki.test/cb"],
                                         "require_pkce": True})
    assert created["require_pkce"] is True
    path = f"/oidc-clients/{created['client_id']}"
    assert api.patch(path, {"require_pkce": False})["require_pkce"] is False
    assert set(api.patch(path, {"require_pkce": "yes"}, expect=422)["errors"]["json"]) == {"require_pkce"}


def test_a_public_client_has_no_secret_to_rotate(api: Api) -> None:
    created = api.post("/oidc-clients", {"name": "SPA", "public": True, "redirect_uris": ["https://spa.test/"]})
    assert created["client_secret"] is None and created["auth_method"] == "none"
    error = api.post(f"/oidc-clients/{created['client_id']}/secret", expect=422)
    assert "not a secret" in error["message"]


def test_a_client_moving_to_private_key_jwt_loses_its_secret(api: Api) -> None:
    created = api.post("/oidc-clients", {"name": "Batch", "grant_types": ["client_credentials"]})
    path = f"/oidc-clients/{created['client_id']}"
    key = RSAKey.generate_key(2048, {"kid": "batch-1"}, private=True)
    error = api.patch(path, {"auth_method": "private_key_jwt", "jwks": {"keys": [key.as_dict(private=True)]}},
                      expect=422)
    assert "private key" in error["message"]
    changed = api.patch(path, {"auth_method": "private_key_jwt", "jwks": {"keys": [key.as_dict(private=False)]}})
    assert changed["auth_method"] == "private_key_jwt" and changed["jwks"]["keys"][0]["kid"] == "batch-1"
    row = db.session.scalar(select(OidcClient).where(OidcClient.client_id == created["client_id"]))
    assert row is not None and row.secret_hash is None  # the old secret no longer works
    [update] = events("oidc.client.update")
    assert update.details["changed"]["jwks"] == {"from": [], "to": ["batch-1"]}
    # Back to a secret: it would have none.
    error = api.patch(path, {"auth_method": "client_secret_basic", "jwks": None}, expect=422)
    assert "no secret" in error["message"]


# --- app assignments --------------------------------------------------------------------------------------


def test_apps_are_assigned_listed_and_taken_back(app: Flask, api: Api, frozen_clock: Any) -> None:
    make_user("alice", groups=["staff"])
    db.session.commit()
    api.post("/service-providers", {"metadata_xml": sp_metadata(), "name": "Wiki"})
    oidc = api.post("/oidc-clients", {"name": "Reports", "redirect_uris": ["https://reports.test/cb"]})
    until = (clock.now() + timedelta(days=30)).replace(microsecond=0)

    by_group = api.post("/app-assignments", {"app": SP_ENTITY_ID, "principal": "group:staff"})
    assert by_group["app"] == SP_ENTITY_ID and by_group["app_kind"] == "saml" and by_group["app_name"] == "Wiki"
    assert by_group["principal"] == "group:staff" and by_group["until"] is None and by_group["active"]
    assert by_group["created_by"] == api.actor
    by_user = api.post("/app-assignments", {"app": "Reports", "principal": "alice", "until": until.isoformat()})
    assert by_user["app"] == oidc["client_id"] and by_user["principal"] == "user:alice"
    assert by_user["until"] == until.isoformat()
    assert api.get(f"/app-assignments/{by_user['id']}") == by_user

    assert api.get("/app-assignments")["items"] == [by_group, by_user]
    assert api.get("/app-assignments", query_string={"app": oidc["client_id"]})["items"] == [by_user]
    assert api.get("/app-assignments", query_string={"principal": "group:staff"})["items"] == [by_group]
    assert api.get("/app-assignments", query_string={"per_page": 1, "page": 2})["items"] == [by_user]
    frozen_clock.advance(days=31)
    assert api.get(f"/app-assignments/{by_user['id']}")["active"] is False

    [assigned, _] = events("access.app.assign")
    assert assigned.actor == api.actor and assigned.sp == SP_ENTITY_ID

    api.delete(f"/app-assignments/{by_group['id']}")
    api.get(f"/app-assignments/{by_group['id']}", expect=404)
    api.delete(f"/app-assignments/{by_group['id']}", expect=404)
    [removed] = events("access.app.unassign")
    assert removed.actor == api.actor and removed.details["principal"] == "group staff"
    # Removing the application removes its assignments.
    api.delete(f"/oidc-clients/{oidc['client_id']}")
    assert api.get("/app-assignments")["total"] == 0


def test_an_app_assignments_end_is_set_and_cleared(app: Flask, api: Api, client: FlaskClient,
                                                   frozen_clock: Any) -> None:
    make_user("alice")
    db.session.commit()
    api.post("/service-providers", {"metadata_xml": sp_metadata(), "name": "Wiki"})
    made = api.post("/app-assignments", {"app": SP_ENTITY_ID, "principal": "alice", "until": "2031-05-02"})
    path = f"/app-assignments/{made['id']}"
    frozen_clock.current = datetime(2031, 5, 3, 1, 0, tzinfo=UTC)  # ended
    assert api.get("/access/alice")["apps"] == []

    extended = api.patch(path, {"until": "2031-06-01T09:00:00+02:00"})
    assert (extended["until"], extended["active"]) == ("2031-06-01T07:00:00+00:00", True)
    assert [a["key"] for a in api.get("/access/alice")["apps"]] == [SP_ENTITY_ID]
    cleared = api.patch(path, {"until": None})
    assert cleared["until"] is None and api.get(path) == cleared
    api.patch(path, {"until": None})  # no change: nothing recorded
    assert [(e.actor, e.username, e.sp, e.details["until"]) for e in events("access.app.update")] == [
        (api.actor, "alice", SP_ENTITY_ID, {"from": "2031-05-03T00:00:00+00:00", "to": "2031-06-01T07:00:00+00:00"}),
        (api.actor, "alice", SP_ENTITY_ID, {"from": "2031-06-01T07:00:00+00:00", "to": None})]

    error = api.patch(path, {"until": "2031-06-01T09:00:00"}, expect=422)
    assert "needs a zone" in error["errors"]["json"]["until"][0]
    api.patch(path, {}, expect=422)
    api.patch("/app-assignments/999", {"until": None}, expect=404)
    reader = Api(client, "read", "dashboard")
    reader.patch(path, {"until": "2032-01-01"}, expect=403)
    assert api.get(path)["until"] is None


def test_app_assignment_refusals(app: Flask, api: Api) -> None:
    make_user("alice")
    db.session.commit()
    api.post("/service-providers", {"metadata_xml": sp_metadata()})
    api.post("/app-assignments", {"app": SP_ENTITY_ID, "principal": "user:alice"})

    error = api.post("/app-assignments", {"app": SP_ENTITY_ID, "principal": "user:alice"}, expect=409)
    assert "already assigned" in error["message"]
    assert "no application" in api.post("/app-assignments", {"app": "https://nope.test", "principal": "alice"},
                                        expect=404)["message"]
    assert "no user 'bob'" in api.post("/app-assignments", {"app": SP_ENTITY_ID, "principal": "user:bob"},
                                       expect=404)["message"]
    error = api.post("/app-assignments", {"app": SP_ENTITY_ID, "principal": "group:staff",
                                          "until": "2001-01-01T00:00:00Z"}, expect=422)
    assert "already past" in error["errors"]["json"]["until"][0]
    error = api.post("/app-assignments", {"principal": "group:staff", "until": "soon"}, expect=422)
    assert set(error["errors"]["json"]) == {"app", "until"}
    api.get("/app-assignments", query_string={"app": "https://nope.test"}, expect=404)
    assert count(AppAssignment) == 1


def test_the_same_app_assignment_posted_twice_at_once_is_made_once(
        app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    make_user("alice", groups=["staff"])
    db.session.commit()
    api.post("/oidc-clients", {"name": "Reports", "redirect_uris": ["https://reports.test/cb"]})
    check = assignments._app_assignments

    def retried_elsewhere_meanwhile(*args: Any) -> Any:
        # A client's retry of the same POST reached another instance, and commits right after this one checked.
        monkeypatch.setattr(assignments, "_app_assignments", check)
        query = check(*args)
        db.session.scalar(query)
        committed_elsewhere(app, lambda: assignments.assign_app("Reports", "group:staff", actor="retry"))
        return query.where(sql_false())  # what this request read before the other committed: nothing

    monkeypatch.setattr(assignments, "_app_assignments", retried_elsewhere_meanwhile)
    error = api.post("/app-assignments", {"app": "Reports", "principal": "group:staff"}, expect=409)
    assert error["message"] == "Reports is already assigned to group staff"

    (made,) = api.get("/app-assignments")["items"]
    assert made["created_by"] == "retry"
    # One row: taking it back leaves none.
    api.delete(f"/app-assignments/{made['id']}")
    assert api.get("/app-assignments")["total"] == 0


@pytest.mark.parametrize("kind", ["service-providers", "oidc-clients"])
def test_a_patch_with_open_to_all_that_fails_midway_keeps_none_of_it(api: Api, kind: str) -> None:
    """The settings and the access change of one PATCH are one commit: the database lost while the second is
    written leaves the app as it was (not renamed, with its access unchanged)."""
    if kind == "service-providers":
        path = f"/service-providers/{api.post('/service-providers', {'metadata_xml': sp_metadata()})['id']}"
    else:
        client = api.post("/oidc-clients", {"name": "Wiki", "redirect_uris": ["https://wiki.test/cb"]})
        path = f"/oidc-clients/{client['client_id']}"
    before = api.get(path)
    with audit_insert_lost("access.app.open_to_all"):
        api.patch(path, {"name": "Renamed", "open_to_all": True}, expect=503)
    db.session.expire_all()
    assert api.get(path) == before
    assert events("sp.update") == [] and events("oidc.client.update") == []
