"""The floor of this stack for a SAML SSO with a session: a minimal Flask IdP endpoint doing only what such an
answer must (the session cookie looked up by its digest in SQLite, the AuthnRequest inflated and parsed by the
bridge's safe parser, its issuer and ACS URL matched exactly against a registered SP, its ID recorded as used
and an audit row inserted in one committed transaction, the response and its assertion signed as the bridge
signs them, with a key parsed once, an auto-posting form), run by gunicorn as `idp serve` runs the bridge. Not
the bridge: a reference for how much of an SSO response's cost is the stack's and how much the bridge's own.
Its sign-in exists only to give the benchmark's clients a session and is not measured.
Started by :func:`peers.floor.saml_floor`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import sqlite3
import time
import uuid
import zlib
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path

from flask import Flask, Response, request
from lxml import etree

from idp.keys import SigningKey
from idp.saml import xmlsafe
from idp.saml.signing import sign
from peers.floor_db import connection, digest

app = Flask("saml_floor")
# Signed as the bridge signs (idp.saml.signing: lxml's canonicalisation, cryptography's RSA), the cheapest way
# this stack has.
_KEY = SigningKey("floor", "active", Path(os.environ["FLOOR_KEY_FILE"]).read_bytes(),
                  Path(os.environ["FLOOR_CERT_FILE"]).read_bytes())
_SPS = {os.environ["FLOOR_SP_ENTITY_ID"]: os.environ["FLOOR_SP_ACS_URL"]}
_USER = os.environ["FLOOR_USER"]
_PASSWORD_DIGEST = hashlib.sha256(os.environ["FLOOR_PASSWORD"].encode()).digest()
_ISSUER = os.environ["FLOOR_ISSUER"]
_MAX_BYTES = 64 * 1024
_SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"
_SAML = "urn:oasis:names:tc:SAML:2.0:assertion"



def _text(body: str, status: int) -> Response:
    return Response(body, status, mimetype="text/plain")


def _request() -> tuple[str, str, str] | None:
    """The AuthnRequest's ID, issuer and ACS URL, or None when it is not one from the registered SP."""
    try:
        xml = zlib.decompress(base64.b64decode(request.values.get("SAMLRequest", ""), validate=True), -15)
        root = xmlsafe.parse(xml, _MAX_BYTES)  # the bridge's safe parser (a parser per call: threads)
    except (binascii.Error, zlib.error, xmlsafe.XmlRefused):
        return None
    request_id, issuer = root.get("ID"), root.findtext(f"{{{_SAML}}}Issuer")
    if root.tag != f"{{{_SAMLP}}}AuthnRequest" or not request_id or issuer not in _SPS:
        return None
    acs = root.get("AssertionConsumerServiceURL") or _SPS[issuer]
    return (request_id, issuer, acs) if acs == _SPS[issuer] else None


def _answer(username: str, request_id: str, issuer: str, acs: str) -> Response:
    conn = connection()
    conn.execute("BEGIN")
    try:
        conn.execute("INSERT INTO consumed_ids VALUES (?, ?)", (request_id[:512], time.time() + 600))
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK")
        return _text("This request was answered before.", 400)
    conn.execute("INSERT INTO audit_events VALUES (?, ?, ?, ?)", (time.time(), "saml.sso", username, issuer))
    conn.execute("COMMIT")
    now = datetime.now(UTC)
    instant, until = (t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in (now, now + timedelta(minutes=5)))
    name_id = hmac.new(_PASSWORD_DIGEST, f"{issuer}|{username}".encode(), hashlib.sha256).hexdigest()
    acs_attr, in_response_to = escape(acs), escape(request_id)
    xml = (
        f'<samlp:Response xmlns:samlp="{_SAMLP}" xmlns:saml="{_SAML}" ID="_{uuid.uuid4().hex}" Version="2.0" '
        f'IssueInstant="{instant}" Destination="{acs_attr}" InResponseTo="{in_response_to}">'
        f"<saml:Issuer>{escape(_ISSUER)}</saml:Issuer>"
        '<samlp:Status><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/></samlp:Status>'
        f'<saml:Assertion ID="_{uuid.uuid4().hex}" Version="2.0" IssueInstant="{instant}">'
        f"<saml:Issuer>{escape(_ISSUER)}</saml:Issuer><saml:Subject>"
        f'<saml:NameID Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent">{name_id}</saml:NameID>'
        '<saml:SubjectConfirmation Method="urn:oasis:names:tc:SAML:2.0:cm:bearer">'
        f'<saml:SubjectConfirmationData NotOnOrAfter="{until}" Recipient="{acs_attr}" '
        f'InResponseTo="{in_response_to}"/></saml:SubjectConfirmation></saml:Subject>'
        f'<saml:Conditions NotBefore="{instant}" NotOnOrAfter="{until}"><saml:AudienceRestriction>'
        f"<saml:Audience>{escape(issuer)}</saml:Audience></saml:AudienceRestriction></saml:Conditions>"
        f'<saml:AuthnStatement AuthnInstant="{instant}" SessionIndex="_{uuid.uuid4().hex}"><saml:AuthnContext>'
        "<saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
        "</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>"
        f'<saml:AttributeStatement><saml:Attribute Name="uid"><saml:AttributeValue>{escape(username)}'
        "</saml:AttributeValue></saml:Attribute></saml:AttributeStatement></saml:Assertion></samlp:Response>"
    )
    root = etree.fromstring(xml.encode())
    sign(root.find(f"{{{_SAML}}}Assertion"), _KEY)
    sign(root, _KEY)
    message = base64.b64encode(etree.tostring(root)).decode()
    nonce = secrets.token_urlsafe(16)
    page = (f'<!doctype html><html><body><form method="post" action="{acs_attr}" id="post">'
            f'<input type="hidden" name="SAMLResponse" value="{message}"><button>Continue</button></form>'
            f'<script nonce="{nonce}">document.getElementById("post").submit();</script></body></html>')
    return Response(page, mimetype="text/html", headers={
        "Cache-Control": "no-store",
        "Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'; form-action {acs_attr}"})


@app.get("/sso")
def sso() -> Response:
    found = _request()
    if found is None:
        return _text("Not an AuthnRequest from a registered SP.", 400)
    row = connection().execute("SELECT username FROM sessions WHERE digest = ? AND expires_at > ?",
                        (digest(request.cookies.get("floor_session", "")), time.time())).fetchone()
    if row is None:
        return Response(f'<!doctype html><form method="post" action="/login"><input type="hidden" '
                        f'name="SAMLRequest" value="{escape(request.args["SAMLRequest"])}"><input name="username">'
                        '<input name="password" type="password"><button>Sign in</button></form>',
                        mimetype="text/html")
    return _answer(str(row[0]), *found)


@app.post("/login")
def login() -> Response:
    found = _request()
    given = hashlib.sha256(request.form.get("password", "").encode()).digest()
    if found is None or request.form.get("username") != _USER or not hmac.compare_digest(given, _PASSWORD_DIGEST):
        return _text("Incorrect username or password.", 401)
    session_id = secrets.token_urlsafe(32)
    conn = connection()
    conn.execute("INSERT INTO sessions VALUES (?, ?, ?)", (digest(session_id), _USER, time.time() + 3600))
    resp = _answer(_USER, *found)
    resp.set_cookie("floor_session", session_id, httponly=True, samesite="Lax")
    return resp
