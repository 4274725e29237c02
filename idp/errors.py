"""One error hierarchy, mapped once to HTTP answers. Nothing here ever shows a stack trace."""

from __future__ import annotations

import json
import logging

import redis.exceptions
import sqlalchemy.exc
import sqlalchemy.orm.exc
from flask import Flask, Response, render_template, request
from werkzeug.exceptions import HTTPException

from idp.extensions import db
from idp.state import drop_idle_connections

log = logging.getLogger(__name__)


class IdpError(Exception):
    """An error with a message that is safe to show and a reason for the audit log. ``field``: the value the
    refusal is about, named as the refusing service's parameter (or the field of a settings object it takes);
    None when it is about the request as a whole. The admin API and UI show the message next to that field."""

    status = 500
    title = "Something went wrong"

    def __init__(self, message: str, reason: str | None = None, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or message
        self.field = field


class BadRequest(IdpError):
    status = 400
    title = "Bad request"


class Forbidden(IdpError):
    status = 403
    title = "Not allowed"


class NotFound(IdpError):
    status = 404
    title = "Not found"


class Conflict(IdpError):
    status = 409
    title = "Already exists"


class DirectoryUnavailable(IdpError):
    status = 503
    title = "Directory unavailable"

    def __init__(self, message: str, reason: str | None = None, *, source: str | None = None) -> None:
        super().__init__(message, reason)
        self.source = source  # the directory that could not be asked, when one sign-in names it


# What a lost database or Redis connection raises. Such a request is answered 503 (retry later), never 500:
# the dependency, not the request, is at fault, and what was committed before is whole on its own.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


# A unique or foreign key violated, as PostgreSQL (SQLSTATE) and SQLite (extended result code) name it. Other
# integrity errors (NOT NULL, CHECK) are a value no check caught: a bug here, left to the 500.
_DUPLICATE_KEY = frozenset({"23505", "SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
_MISSING_KEY = frozenset({"23503", "SQLITE_CONSTRAINT_FOREIGNKEY"})


def _violation(exc: sqlalchemy.exc.IntegrityError) -> str | None:
    return getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "sqlite_errorname", None)


def duplicate_key(exc: sqlalchemy.exc.IntegrityError) -> bool:
    """The row is there already (a unique key), not some other constraint."""
    return _violation(exc) in _DUPLICATE_KEY


def concurrent_change(exc: Exception) -> bool:
    """A write that a concurrent commit made impossible: the same row made, or a row referred to removed, by a
    request on another worker or instance after this one checked; or an UPDATE or DELETE of a row deleted since
    this request read it (or a row it read expired at a commit and found deleted when read again)."""
    if isinstance(exc, sqlalchemy.orm.exc.StaleDataError | sqlalchemy.orm.exc.ObjectDeletedError):
        return True
    return isinstance(exc, sqlalchemy.exc.IntegrityError) and _violation(exc) in _DUPLICATE_KEY | _MISSING_KEY


def first_line(exc: BaseException) -> str:
    """What a log line says of an exception: its first line. A SQLAlchemy error's next lines quote the statement
    (its parameters are hidden, idp.database), a driver's may describe the server."""
    return (str(exc).splitlines() or [""])[0]


def _wants_json() -> bool:
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return request.path.startswith("/api/") or best == "application/json"


def _render(status: int, title: str, message: str) -> Response:
    if _wants_json():
        # The admin API's shape (idp.admin.api.base) for its paths, also where no API view was reached (404, 405).
        body = ({"code": status, "status": title, "message": message} if request.path.startswith("/api/v1/")
                else {"error": title, "message": message})
        resp = Response(
            json.dumps(body),
            status=status,
            mimetype="application/json",
        )
    else:
        resp = Response(
            render_template("error.html", title=title, message=message), status=status
        )
    return resp


def register_error_handlers(app: Flask) -> None:
    app.before_request(_refuse_nul)

    @app.errorhandler(IdpError)
    def _idp_error(exc: IdpError) -> Response:
        log.info("request refused: %s (%s)", exc.reason, exc.status)
        return _render(exc.status, exc.title, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        resp = _render(status, exc.name, exc.description or exc.name)
        # Keep what the exception says in headers, such as a 405's Allow (RFC 9110 requires it).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp

    app.errorhandler(Exception)(unexpected)


def unexpected(exc: Exception) -> Response:
    """The answer to an exception no view handled (also to one raised after the view, by a hook that commits)."""
    if dependency_unavailable(exc):
        # One line, no trace: the driver's message names the host, which is for the log only.
        log.error("dependency unavailable on %s %s: %s: %s", request.method, request.path,
                  type(exc).__name__, first_line(exc))
        _rollback()
        if isinstance(exc, _REPLICA_REFUSALS):
            drop_idle_connections()
        resp = _render(503, "Service unavailable",
                       "The service is briefly unavailable. Please try again in a moment.")
        resp.headers["Retry-After"] = "5"
        return resp
    if isinstance(exc, sqlalchemy.exc.DataError):
        # A value the database cannot take that no check caught before (JSON bodies are checked by the
        # admin API): the request's fault, and nothing of it was stored.
        log.warning("refused on %s %s: the database cannot store a value: %s", request.method, request.path,
                    first_line(exc.orig or exc))
        _rollback()
        return _render(400, BadRequest.title, "The request holds a value that cannot be stored.")
    if concurrent_change(exc):
        # Nothing of this request was stored; the client can read the new state and decide again.
        log.warning("refused on %s %s: a concurrent change: %s: %s", request.method, request.path,
                    type(exc).__name__, first_line(getattr(exc, "orig", None) or exc))
        _rollback()
        return _render(409, "Conflict", "This conflicts with a change made at the same time. "
                                        "Reload to see the current state, then try again.")
    log.exception("unhandled error on %s %s", request.method, request.path)
    return _render(500, IdpError.title, "The server could not complete this request.")


_CHECKS_ITS_OWN = ("/admin", "/api/")


def _refuse_nul() -> None:
    """No parameter of the protocol and sign-in endpoints may hold a NUL character (PostgreSQL cannot even
    compare one), so a request that sends one in its path, query or form is refused at the door, whichever
    lookup it would have reached. Left alone: a password (never stored or looked up; a NUL in it is a wrong
    password the lockout counts) and the admin UI and API, which name the refused field themselves."""
    if request.path.startswith(_CHECKS_ITS_OWN):
        return
    form = request.method == "POST" and request.mimetype in ("application/x-www-form-urlencoded",
                                                              "multipart/form-data")
    fields: list[tuple[str, str]] = []
    # The path and query without parsing them in the common case: a NUL arrives as %00 or as the byte itself.
    if "\x00" in request.path or b"%00" in request.query_string or b"\x00" in request.query_string:
        fields += [(k, v) for k, v in (request.view_args or {}).items() if isinstance(v, str)]
        fields += request.args.items(multi=True)
    if form:  # parsed anyway (the CSRF check, the view)
        fields += [(k, v) for k, v in request.form.items(multi=True) if k != "password"]
    if any("\x00" in key or "\x00" in value for key, value in fields):
        raise BadRequest("The request contains a NUL character, which no field accepts.", "NUL in a parameter")


def _rollback() -> None:
    try:
        db.session.rollback()
    except Exception:  # the connection is gone; the pool replaces it on the next checkout
        log.debug("rollback after a lost connection failed", exc_info=True)


def dependency_unavailable(exc: Exception) -> bool:
    """The database or Redis down, refusing writes, or a statement over its timeout: not a bug here."""
    return (isinstance(exc, _UNAVAILABLE) or _redis_refuses_writes(exc)
            # What SQLAlchemy (or idp.database) judged a lost connection, whatever the driver's error class.
            or (isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated))


# A replica where the primary was: the connection is to the wrong server (idp.state.drop_idle_connections).
_REPLICA_REFUSALS = (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError)


def _redis_refuses_writes(exc: Exception) -> bool:
    """A full Redis under ``noeviction`` (OOM), a read-only replica, or one cut off from its master: unavailable
    for now, not a bug here. (redis-py strips the "OOM" prefix from the message: the class says it.)"""
    return isinstance(exc, (*_REPLICA_REFUSALS, redis.exceptions.OutOfMemoryError))
