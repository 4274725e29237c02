"""The floor of this stack for the OIDC token flows: a minimal Flask OP doing only what each answer must, run by
gunicorn as `idp serve` runs the bridge. Not the bridge: a reference for how much of its cost is the stack's and
how much its own. Started by :func:`peers.floor.token_floor`.

- client credentials: HTTP Basic client authentication against a secret digest compared in constant time, the
  grant type checked, an RS256 JWT access token signed with a key parsed once, one audit row inserted and
  committed in SQLite with the bridge's pragmas;
- the code flow: the authorization request answered for the session cookie looked up by its digest (client,
  exact redirect URI, PKCE S256 required), the code stored by its digest; the code exchanged once (deleted as it
  is read), PKCE verified, the access and refresh tokens stored by their digests with one audit row in one
  committed transaction, an RS256 ID token;
- refresh: the refresh token revoked as it is read (rotation), the new tokens stored and audited in one committed
  transaction; no ID token, as the bridge answers a refresh.

Its sign-in exists only to give the benchmark's clients a session and is not measured. One registered client and
one user: a code is not bound to its client and redirect URI in its row, since there is only one of each to compare
with. What it leaves out that the bridge does: reading the user (whether they still exist, are enabled, may use the
client) and their profile claims, and consent, revocation lists and logout bookkeeping.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

from authlib.jose import JsonWebKey, jwt
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from flask import Flask, Response, request

from peers.floor_db import connection, digest

app = Flask("floor")
_KEY = JsonWebKey.import_key(Path(os.environ["FLOOR_KEY_FILE"]).read_bytes(), {"kty": "RSA", "kid": "floor"})
_CLIENT_ID = os.environ["FLOOR_CLIENT_ID"]
_DIGEST = hashlib.sha256(os.environ["FLOOR_CLIENT_SECRET"].encode()).digest()
_ISSUER = os.environ["FLOOR_ISSUER"]
_REDIRECT_URI = os.environ["FLOOR_REDIRECT_URI"]
_USER = os.environ["FLOOR_USER"]
_PASSWORD_DIGEST = hashlib.sha256(os.environ["FLOOR_PASSWORD"].encode()).digest()
_REFRESH_SECONDS = 14 * 86400  # the bridge's refresh token lifetime


def _json(body: dict[str, object], status: int) -> Response:
    return Response(json.dumps(body), status, mimetype="application/json", headers={"Cache-Control": "no-store"})


def _client_id() -> str | None:
    auth = request.headers.get("Authorization", "")
    if not auth.startswith("Basic "):
        return None
    try:
        client_id, _, secret = base64.b64decode(auth[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    given = hashlib.sha256(secret.encode()).digest()
    return client_id if client_id == _CLIENT_ID and hmac.compare_digest(given, _DIGEST) else None



@app.post("/login")
def login() -> Response:
    given = hashlib.sha256(request.form.get("password", "").encode()).digest()
    if request.form.get("username") != _USER or not hmac.compare_digest(given, _PASSWORD_DIGEST):
        return _json({"error": "access_denied"}, 401)
    session_id = secrets.token_urlsafe(32)
    connection().execute("INSERT INTO sessions VALUES (?, ?, ?, ?)",
                         (digest(session_id), _USER, time.time(), time.time() + 3600))
    resp = _json({}, 200)
    resp.set_cookie("floor_session", session_id, httponly=True, samesite="Lax")
    return resp


@app.get("/authorize")
def authorize() -> Response:
    args = request.args
    if args.get("client_id") != _CLIENT_ID or args.get("redirect_uri") != _REDIRECT_URI:
        return _json({"error": "invalid_request"}, 400)  # never redirected to an unregistered URI
    if (args.get("response_type") != "code" or args.get("code_challenge_method") != "S256"
            or not args.get("code_challenge") or "openid" not in args.get("scope", "").split()):
        return _json({"error": "invalid_request"}, 400)
    row = connection().execute("SELECT username, authn_at FROM sessions WHERE digest = ? AND expires_at > ?",
                               (digest(request.cookies.get("floor_session", "")), time.time())).fetchone()
    if row is None:
        return _json({"error": "login_required"}, 401)
    code = secrets.token_urlsafe(32)
    connection().execute("INSERT INTO codes VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (digest(code), row[0], row[1], args["code_challenge"], args.get("nonce"),
                          args.get("scope"), time.time() + 60))
    query = urlencode({"code": code, **({"state": args["state"]} if "state" in args else {})})
    return Response(status=302, headers={"Location": f"{_REDIRECT_URI}?{query}", "Cache-Control": "no-store"})


def _issue(conn: sqlite3.Connection, client_id: str, username: str, scope: str, family: str,
           grant_type: str) -> dict[str, object]:
    """New access and refresh tokens stored by their digests, and the audit row, in the caller's transaction."""
    access, refresh, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
    conn.execute("INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (digest(access), digest(refresh), client_id, username, scope, family, now + _REFRESH_SECONDS, 0))
    conn.execute("INSERT INTO audit_events VALUES (?, ?, ?, ?)",
                 (now, "oidc.token", client_id, json.dumps({"grant_type": grant_type, "scope": scope})))
    return {"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh,
            "scope": scope}


@contextlib.contextmanager
def _transaction() -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE on this thread's connection; rolled back if the caller raises or has not committed."""
    conn = connection()
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _code_grant(client_id: str) -> Response:
    form = request.form
    with _transaction() as conn:
        row = conn.execute("DELETE FROM codes WHERE digest = ? AND expires_at > ? "
                           "RETURNING username, authn_at, challenge, nonce, scope",
                           (digest(form.get("code", "")), time.time())).fetchone()
        if (row is None or form.get("redirect_uri") != _REDIRECT_URI
                or not hmac.compare_digest(create_s256_code_challenge(form.get("code_verifier", "")), row[2])):
            return _json({"error": "invalid_grant"}, 400)
        body = _issue(conn, client_id, row[0], row[4], secrets.token_hex(16), "authorization_code")
        conn.execute("COMMIT")
    now = int(time.time())
    claims = {"iss": _ISSUER, "sub": row[0], "aud": client_id, "iat": now, "exp": now + 600,
              "auth_time": int(row[1]), **({"nonce": row[3]} if row[3] is not None else {})}
    body["id_token"] = jwt.encode({"alg": "RS256", "typ": "JWT", "kid": "floor"}, claims, _KEY).decode()
    return _json(body, 200)


def _refresh_grant(client_id: str) -> Response:
    with _transaction() as conn:
        row = conn.execute("UPDATE tokens SET revoked = 1 WHERE refresh_digest = ? AND client_id = ? AND revoked = 0 "
                           "AND refresh_expires_at > ? RETURNING username, scope, family",
                           (digest(request.form.get("refresh_token", "")), client_id, time.time())).fetchone()
        if row is None:
            return _json({"error": "invalid_grant"}, 400)
        body = _issue(conn, client_id, row[0], row[1], row[2], "refresh_token")
        conn.execute("COMMIT")
    return _json(body, 200)


def _client_credentials_grant(client_id: str) -> Response:
    now = int(time.time())
    claims = {"iss": _ISSUER, "sub": client_id, "aud": _ISSUER, "client_id": client_id, "iat": now,
              "exp": now + 3600, "jti": secrets.token_urlsafe(16)}
    access_token = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "floor"}, claims, _KEY).decode()
    with _transaction() as conn:
        conn.execute("INSERT INTO audit_events VALUES (?, ?, ?, ?)",
                     (time.time(), "oidc.token", client_id, json.dumps({"grant_type": "client_credentials"})))
        conn.execute("COMMIT")
    return _json({"access_token": access_token, "token_type": "Bearer", "expires_in": 3600}, 200)


_GRANTS = {"authorization_code": _code_grant, "refresh_token": _refresh_grant,
           "client_credentials": _client_credentials_grant}


@app.post("/token")
def token() -> Response:
    client_id = _client_id()
    if client_id is None:
        return _json({"error": "invalid_client"}, 401)
    grant = _GRANTS.get(request.form.get("grant_type", ""))
    if grant is None:
        return _json({"error": "unsupported_grant_type"}, 400)
    return grant(client_id)
