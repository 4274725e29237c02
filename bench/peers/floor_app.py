"""The floor of this stack for a client-credentials token: a minimal Flask token endpoint doing only what such an
endpoint must (HTTP Basic client authentication against a secret digest compared in constant time, the grant
type checked, an RS256 JWT access token signed with a key parsed once, one audit row inserted and committed in
SQLite with the bridge's pragmas), run by gunicorn as `idp serve` runs the bridge. Not the bridge: a reference
for how much of its cost is the stack's and how much its own. Started by :func:`peers.floor.token_floor`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from pathlib import Path

from authlib.jose import JsonWebKey, jwt
from flask import Flask, Response, request

from peers.floor_db import connection

app = Flask("floor")
_KEY = JsonWebKey.import_key(Path(os.environ["FLOOR_KEY_FILE"]).read_bytes(), {"kty": "RSA", "kid": "floor"})
_CLIENT_ID = os.environ["FLOOR_CLIENT_ID"]
_DIGEST = hashlib.sha256(os.environ["FLOOR_CLIENT_SECRET"].encode()).digest()
_ISSUER = os.environ["FLOOR_ISSUER"]


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
    digest = hashlib.sha256(secret.encode()).digest()
    return client_id if client_id == _CLIENT_ID and hmac.compare_digest(digest, _DIGEST) else None


@app.post("/token")
def token() -> Response:
    client_id = _client_id()
    if client_id is None:
        return _json({"error": "invalid_client"}, 401)
    if request.form.get("grant_type") != "client_credentials":
        return _json({"error": "unsupported_grant_type"}, 400)
    now = int(time.time())
    claims = {"iss": _ISSUER, "sub": client_id, "aud": _ISSUER, "client_id": client_id, "iat": now,
              "exp": now + 3600, "jti": secrets.token_urlsafe(16)}
    access_token = jwt.encode({"alg": "RS256", "typ": "at+jwt", "kid": "floor"}, claims, _KEY).decode()
    conn = connection()
    conn.execute("BEGIN")
    conn.execute("INSERT INTO audit_events VALUES (?, ?, ?, ?)",
                 (time.time(), "oidc.token", client_id, json.dumps({"grant_type": "client_credentials"})))
    conn.execute("COMMIT")
    return _json({"access_token": access_token, "token_type": "Bearer", "expires_in": 3600}, 200)
