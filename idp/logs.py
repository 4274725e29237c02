"""Logging set-up: JSON lines with a request id, and a filter that masks secrets."""

from __future__ import annotations

import json
import logging
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy's request id may be to be kept: it goes as it is into log lines and a header.
_FORWARDED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

# Whatever the message, these never reach a log: passwords, secrets, tokens and whole SAML messages.
_SECRET = re.compile(
    r"(?i)((?:password|passwd|secret|token|SAMLRequest|SAMLResponse|Signature)[\"']?\s*[=:]\s*[\"']?)"
    r"([^\s&\"',}]+)"
)


def mask(text: str) -> str:
    return _SECRET.sub(r"\1***", text)


class MaskSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = mask(str(record.msg))
        return True


class RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id") if has_request_context() else None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            out["request_id"] = record.request_id  # type: ignore[attr-defined]
        if hasattr(record, "audit"):
            out["audit"] = record.audit
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestId())
    handler.addFilter(MaskSecrets())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger("idp")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def init_request_ids(app: Flask, trust_forwarded: bool) -> None:
    """Every request gets an id: in its log lines, in its answer's X-Request-ID, and on an error page for the
    user to quote. Behind trusted proxies (``trust_forwarded``) the id the proxy sent is kept when it is plain
    (ingress-nginx sends its own), so that the proxy's log and ours name the request alike."""

    @app.before_request
    def _assign() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "") if trust_forwarded else ""
        g.request_id = given if _FORWARDED_ID.fullmatch(given) else secrets.token_hex(8)

    @app.after_request
    def _tell(resp: Response) -> Response:
        if "request_id" in g:
            resp.headers[REQUEST_ID_HEADER] = g.request_id
        return resp
