"""Prometheus metrics: request latency per endpoint, and counters kept from the audit events as they are
committed (sign-ins, SAML responses, OIDC tokens, refusals).

prometheus_client decides once, when it is first imported, whether values live in this process or in files
shared by every worker (``PROMETHEUS_MULTIPROC_DIR``). ``idp serve`` sets that folder after the app is built
and before gunicorn forks its workers, so the library is imported here on first use, in the worker, never at
module load.

Every label is bounded: endpoints are Flask's endpoint names (not paths), methods a known set, statuses a
class; SPs and clients only those that got a response or a token (registered ones); refusal reasons are cut
to their fixed part and capped per event type, since some carry what a client sent.
"""

from __future__ import annotations

import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request
from sqlalchemy import event
from sqlalchemy.orm import Session

from idp.store import AuditRecord

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a millisecond (a metadata or JWKS answer) to a slow directory's timeout.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A reason's fixed part: what comes before the first detail ("directory unavailable: corp: ...").
_REASON_END = re.compile(r"[:(\[{'\"\d]")
_MAX_REASONS_PER_EVENT = 40
_PENDING = "idp.ops.audit"


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.latency: Histogram = Histogram(
            "idp_http_request_duration_seconds", "Time to answer a request, by Flask endpoint.",
            ["endpoint", "method", "status"], buckets=_BUCKETS)
        self.signins: Counter = Counter(
            "idp_signins", "Password sign-ins by result (success, failure, locked, unavailable) and source "
            "(the directory that signed the user in; unknown for a refusal).", ["result", "source"])
        self.saml_responses: Counter = Counter(
            "idp_saml_responses", "SAML responses with an assertion, by service provider.", ["sp"])
        self.oidc_tokens: Counter = Counter(
            "idp_oidc_tokens", "OIDC/OAuth tokens issued, by client and grant type.", ["client", "grant_type"])
        self.refusals: Counter = Counter(
            "idp_refusals", "Refused requests and failed sign-ins (audit events with outcome failure), by event "
            "type and reason.", ["event", "reason"])
        self._reasons: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def reason_label(self, event_type: str, reason: str | None) -> str:
        label = _REASON_END.split(reason or "", maxsplit=1)[0].strip().lower()[:60] or "unspecified"
        with self._lock:
            seen = self._reasons.setdefault(event_type, set())
            if label not in seen:
                if len(seen) >= _MAX_REASONS_PER_EVENT:
                    return "other"
                seen.add(label)
        return label


_metrics: _Metrics | None = None
_created = threading.Lock()


def metrics() -> _Metrics:
    global _metrics
    if _metrics is None:
        with _created:
            if _metrics is None:
                _metrics = _Metrics()
    return _metrics


def init_app(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.ops_started = time.perf_counter()

    @app.after_request
    def _observe(resp: Response) -> Response:
        started = g.get("ops_started")
        if started is not None:
            rule = request.url_rule
            method = request.method if request.method in _METHODS else "other"
            metrics().latency.labels(rule.endpoint if rule is not None else "unmatched", method,
                                     f"{resp.status_code // 100}xx").observe(time.perf_counter() - started)
        return resp

    if not event.contains(Session, "after_flush", _audit_flushed):
        event.listen(Session, "after_flush", _audit_flushed)
        event.listen(Session, "after_commit", _audit_committed)
        event.listen(Session, "after_rollback", _audit_rolled_back)


# --- audit events -----------------------------------------------------------------------------------------
# idp.audit has no listener hook: the events are counted as their rows are committed, so a refusal rolled back
# with its transaction is not counted, and every path that records an event is covered.

def _audit_flushed(session: Session, _context: Any) -> None:
    # The values, not the rows: a committed row is expired, and reading it again would cost a query.
    events = [(obj.type, obj.outcome, obj.sp, obj.reason, dict(obj.details or {}))
              for obj in session.new if isinstance(obj, AuditRecord)]
    if events:
        session.info.setdefault(_PENDING, []).extend(events)


def _audit_committed(session: Session) -> None:
    for type_, outcome, sp, reason, details in session.info.pop(_PENDING, ()):
        count(type_, outcome, sp=sp, reason=reason, details=details)


def _audit_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def count(type_: str, outcome: str, *, sp: str | None, reason: str | None, details: dict[str, Any]) -> None:
    """One committed audit event into the counters it feeds."""
    m = metrics()
    if type_ == "login":
        if outcome == "success":
            m.signins.labels("success", str(details.get("source") or "unknown")).inc()
        elif reason == "locked out":
            m.signins.labels("locked", "unknown").inc()
        elif (reason or "").startswith("directory unavailable"):
            m.signins.labels("unavailable", "unknown").inc()
        else:
            m.signins.labels("failure", "unknown").inc()
    elif type_ == "saml.response" and outcome == "success":
        m.saml_responses.labels(sp or "unknown").inc()
    elif type_ in ("oidc.token", "oidc.refresh") and outcome == "success":
        m.oidc_tokens.labels(sp or "unknown", str(details.get("grant_type") or "unknown")).inc()
    if outcome == "failure":
        m.refusals.labels(type_, m.reason_label(type_, reason)).inc()


# --- exposition -------------------------------------------------------------------------------------------

def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus text format: this process's, or every worker's when they share a folder."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    metrics()  # so that a scrape before the first request shows the families, empty
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
