"""SAML bindings: getting a message off the wire (HTTP-Redirect, HTTP-POST) and putting one back on (POST form).

Decoding is bounded: a Redirect message is inflated at most ``saml_max_message_bytes`` (plus one byte, to
notice that there is more), so a deflate bomb costs that much memory and no more. The XML itself is
parsed later, by :mod:`idp.saml.xmlsafe`.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import zlib
from dataclasses import dataclass

from flask import Response, current_app, request
from markupsafe import escape

from idp.errors import BadRequest

REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"

# The spec asks for at most 80 bytes; SPs commonly send a return URL instead, so allow that, but bound it.
MAX_RELAY_STATE = 2048

_WHITESPACE = re.compile(rb"\s+")


class MessageRefused(BadRequest):
    """A SAML message that cannot even be decoded: bad base64, bad DEFLATE, too large."""


@dataclass(frozen=True)
class Inbound:
    """A SAML message as received, before its XML is looked at."""

    binding: str
    xml: bytes
    relay_state: str | None
    # The raw query string of a Redirect-binding message: its detached signature is computed over it.
    query_string: bytes | None = None


def _b64decode(value: str | bytes, limit: int) -> bytes:
    raw = value.encode("ascii", "replace") if isinstance(value, str) else value
    # Some SPs wrap base64 at 64 or 76 columns; whitespace is not data.
    raw = _WHITESPACE.sub(b"", raw)
    if len(raw) > (limit * 4) // 3 + 4:
        raise MessageRefused("The SAML message is too large.", "message too large")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MessageRefused("The SAML message is not valid base64.", "bad base64") from exc


def inflate(data: bytes, limit: int) -> bytes:
    """Raw DEFLATE (RFC 1951, no zlib header) as the Redirect binding uses, refusing more than ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise MessageRefused("The SAML message is not valid DEFLATE data.", "bad deflate") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise MessageRefused("The SAML message is too large.", "inflated message too large")
    return out


def _relay_state(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_RELAY_STATE:
        raise MessageRefused("The RelayState is too long.", "relay state too long")
    return value or None


def decode_redirect(message: str, relay_state: str | None, query_string: bytes, limit: int) -> Inbound:
    """A message from the HTTP-Redirect binding: base64, then raw DEFLATE."""
    xml = inflate(_b64decode(message, limit), limit)
    return Inbound(REDIRECT, xml, _relay_state(relay_state), query_string)


def decode_post(message: str, relay_state: str | None, limit: int) -> Inbound:
    """A message from the HTTP-POST binding: base64 of the XML."""
    xml = _b64decode(message, limit)
    if len(xml) > limit:
        raise MessageRefused("The SAML message is too large.", "message too large")
    return Inbound(POST, xml, _relay_state(relay_state))


def encode_post(xml: bytes) -> str:
    return base64.b64encode(xml).decode("ascii")


# The auto-posting page, formatted here rather than by Jinja: it answers every SSO and was a twentieth of an SSO
# answer's CPU through render_template (context processors, template inheritance, escaping a base64 message that
# has nothing to escape). Its head matches templates/base.html.
_POST_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Continuing · Identity bridge</title>
  <link rel="stylesheet" href="{stylesheet}">
</head>
<body>
  <main class="card">
<h1>Continuing to the application</h1>
<form method="post" action="{action}" id="saml-post">
  <input type="hidden" name="{field}" value="{message}">
  {relay_state}<p class="muted">If nothing happens, press Continue.</p>
  <button type="submit">Continue</button>
</form>
<script nonce="{nonce}">document.getElementById("saml-post").submit();</script>
  </main>
</body>
</html>
"""


def post_form(action: str, field: str, xml: bytes, relay_state: str | None) -> Response:
    """The auto-posting form of the HTTP-POST binding.

    ``field`` is ``SAMLResponse`` or ``SAMLRequest``. ``action`` must already be a trusted endpoint from the
    peer's metadata. The page submits itself with one inline script allowed by a nonce, and shows a
    Continue button for browsers without JavaScript. Its own CSP allows its one script and no framing.
    """
    nonce = secrets.token_urlsafe(16)
    relay = f'<input type="hidden" name="RelayState" value="{escape(relay_state)}">\n  ' if relay_state else ""
    # The stylesheet's address as url_for("static") gives it, without building a URL through the routing map.
    stylesheet = f"{request.script_root}{current_app.static_url_path}/style.css"
    # Base64's alphabet needs no HTML escaping; everything else from outside is escaped.
    html = _POST_PAGE.format(stylesheet=escape(stylesheet), action=escape(action),
                             field=escape(field), message=encode_post(xml), relay_state=relay, nonce=nonce)
    resp = Response(html, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; "
        # form-action * : Chromium holds the form's redirects to it too, and an ACS may redirect anywhere (to the
        # app on another host); the page posts only to ``action``, which comes from metadata.
        "form-action *; frame-ancestors 'none'; base-uri 'none'"
    )
    return resp
