"""Logging set-up: JSON lines with a request id, and a filter that masks secrets."""

from __future__ import annotations

import json
import logging
import re
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, current_app, has_request_context, request

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy's request id may be to be logged: it goes into log lines as it is.
_FORWARDED_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_TRUST_FORWARDED = "idp.trust_forwarded_request_id"
_ENVIRON_KEY = "idp.request_id"

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
        record.request_id = request_id() if has_request_context() else None
        record.forwarded_request_id = forwarded_request_id() if has_request_context() else None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "forwarded_request_id"):
            if getattr(record, name, None):
                out[name] = getattr(record, name)
        if hasattr(record, "audit"):
            out["audit"] = record.audit
        if hasattr(record, "http"):  # gunicorn's access line, as fields
            out["http"] = record.http
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str, fmt: str) -> None:
    """The app's log lines, and Python's warnings once ``capture_warnings`` routes them to logging (as ``idp
    serve`` does), in one format: a log pipeline reading the server's output meets one kind of line."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestId())
    handler.addFilter(MaskSecrets())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    for name in ("idp", "py.warnings"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())


def capture_warnings() -> None:
    """Python's warnings (a library's, such as joserfc's on a short RSA key) as log lines of the app's format,
    not as plain text on stderr. Only for the server: under a test runner, warnings are the runner's to record."""
    logging.captureWarnings(True)


def as_json(handler: logging.Handler) -> None:
    """Another library's handler (gunicorn's) writing the app's JSON lines, secrets masked."""
    handler.addFilter(MaskSecrets())
    handler.setFormatter(JsonFormatter())


def request_id_of(environ: dict[str, Any]) -> str | None:
    """The id a request was given (``request_id``), read after it was answered, outside its context."""
    value = environ.get(_ENVIRON_KEY)
    return value if isinstance(value, str) else None


def request_id() -> str:
    """This request's id, made on first use: a hook that refuses the request (a CSRF failure, a body too large)
    may run before any of ours."""
    # In the request's environ, not in g: an app context (and its g) may outlive one request, as in tests.
    value: str = request.environ.setdefault(_ENVIRON_KEY, secrets.token_hex(8))
    return value


def forwarded_request_id() -> str | None:
    """The id the trusted proxy in front sent with this request (ingress-nginx's X-Request-ID), when plain enough
    to log as it is; None without a trusted proxy. Logged beside ours, never instead: a proxy may pass on one
    that its client chose."""
    if not current_app.extensions.get(_TRUST_FORWARDED):
        return None
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _FORWARDED_ID.fullmatch(given) else None


def init_request_ids(app: Flask, *, trust_forwarded: bool) -> None:
    """Every request has an id: in its log lines, in its answer's X-Request-ID, and on an error page for the user
    to quote. Behind trusted proxies the proxy's own id is logged beside it, so that its log and ours meet."""
    app.extensions[_TRUST_FORWARDED] = trust_forwarded
    app.jinja_env.globals["request_id"] = request_id

    @app.after_request
    def _tell(resp: Response) -> Response:
        resp.headers[REQUEST_ID_HEADER] = request_id()
        return resp
