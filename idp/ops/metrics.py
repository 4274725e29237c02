"""Prometheus metrics: request latency per endpoint, counters kept from the audit events as they are
committed (sign-ins, SAML responses, OIDC tokens, refusals), and directory latency and errors (fed by the LDAP
client, idp.authn.connectors.ldap).

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
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request

from idp import audit
from idp.audit import AuditEvent
from idp.authn import passwords
from idp.authn.connectors import ldap
from idp.authn.connectors.settings import NAME as DIRECTORY_NAME
from idp.ops import instances

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a millisecond (a metadata or JWKS answer) to a slow directory's timeout.
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# argon2id with OWASP's parameters costs about 20 ms; a larger memory or time cost moves it up by factors.
_HASH_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0)
# A reason's fixed part: what comes before the first detail ("directory unavailable: corp: ...") or the next
# directory's reason ("unknown user; corp: unknown user").
_REASON_END = re.compile(r"[:;(\[{'\"\d]")
# A sign-in's reason from one of several directories names it first ("corp: bad password"); the label is the
# reason, the source is a label of its own (idp_signins_total).
_DIRECTORY_PREFIX = re.compile(DIRECTORY_NAME.pattern + ": ")
_MAX_REASONS_PER_EVENT = 40


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.latency: Histogram = Histogram(
            "idp_http_request_duration_seconds", "Time to answer a request, by Flask endpoint.",
            ["endpoint", "method", "status"], buckets=_BUCKETS)
        self.signins: Counter = Counter(
            "idp_signins", "Password sign-ins by result (success, failure, locked, unavailable) and source (the "
            "directory that signed the user in or refused the password; none when no directory knows the name, "
            "unknown when none was asked or it is not known which).", ["result", "source"])
        self.saml_responses: Counter = Counter(
            "idp_saml_responses", "SAML responses with an assertion, by service provider.", ["sp"])
        self.oidc_tokens: Counter = Counter(
            "idp_oidc_tokens", "OIDC/OAuth tokens issued, by client and grant type.", ["client", "grant_type"])
        self.refusals: Counter = Counter(
            "idp_refusals", "Refused requests and failed sign-ins (audit events with outcome failure), by event "
            "type and reason.", ["event", "reason"])
        self.directory_latency: Histogram = Histogram(
            "idp_directory_operation_duration_seconds", "Time an LDAP or AD directory took to answer an operation "
            "(bind: a password check, search: a user or group search), failover included.",
            ["directory", "operation"], buckets=_BUCKETS)
        self.directory_errors: Counter = Counter(
            "idp_directory_errors", "Failed directory operations by directory and kind (timeout, unavailable, tls, "
            "busy, service_bind_refused, error_answer, bad_request, pool_exhausted), one per server that failed.",
            ["directory", "kind"])
        self.instance_differences: Counter = Counter(
            "idp_instance_differences", "Instances sharing this database found with another IDP_SECRET_KEY (secret) "
            "or signing with keys this one does not publish, or the other way round (keys): each counted once per "
            "process, instance and difference, as it is logged (idp.ops.instances).", ["about"])
        for about in ("secret", "keys"):
            self.instance_differences.labels(about)  # at 0 from the start, so that a first difference shows as a rise
        self.password_hash_cpu: Histogram = Histogram(
            "idp_password_hash_cpu_seconds", "CPU time of each argon2id password hash or verification in this "
            "process: the built-in directory's password checks, the hash that equalises the answer for a name no "
            "directory knows, passwords set. What the hash parameters cost on this hardware.",
            buckets=_HASH_BUCKETS)
        self._reasons: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def reason_label(self, event_type: str, reason: str | None) -> str:
        reason = reason or ""
        if event_type == "login" and (prefix := _DIRECTORY_PREFIX.match(reason)):
            reason = reason[prefix.end():]
        label = _REASON_END.split(reason, maxsplit=1)[0].strip().lower()[:60] or "unspecified"
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
        started = g.pop("ops_started", None)  # this request's own start (an app context may serve several)
        if started is not None:
            rule = request.url_rule
            method = request.method if request.method in _METHODS else "other"
            metrics().latency.labels(rule.endpoint if rule is not None else "unmatched", method,
                                     f"{resp.status_code // 100}xx").observe(time.perf_counter() - started)
        return resp

    audit.listen(count)
    ldap.watch(_DIRECTORIES)
    passwords.watch(_password_hashed)
    instances.watch(_instance_differs)


def _password_hashed(cpu_seconds: float) -> None:
    metrics().password_hash_cpu.observe(cpu_seconds)


def _instance_differs(about: str) -> None:
    metrics().instance_differences.labels(about).inc()


# --- audit events -----------------------------------------------------------------------------------------

def count(event: AuditEvent) -> None:
    """One committed audit event into the counters it feeds (an idp.audit listener: a refusal rolled back with
    its transaction is not counted, and every path that records an event is covered)."""
    m = metrics()
    details = event.details
    if event.type == "login":
        # Sources are configured directory names, "local", or "none" (no source knows the name).
        source = str(details.get("source") or "unknown")
        if event.outcome == "success":
            m.signins.labels("success", source).inc()
        elif event.reason == "locked out":
            m.signins.labels("locked", source).inc()
        elif (event.reason or "").startswith("directory unavailable"):
            m.signins.labels("unavailable", source).inc()
        else:
            m.signins.labels("failure", source).inc()
    elif event.type == "saml.response" and event.outcome == "success":
        m.saml_responses.labels(event.sp or "unknown").inc()
    elif event.type in ("oidc.token", "oidc.refresh") and event.outcome == "success":
        m.oidc_tokens.labels(event.sp or "unknown", str(details.get("grant_type") or "unknown")).inc()
    if event.outcome == "failure":
        m.refusals.labels(event.type, m.reason_label(event.type, event.reason)).inc()


# --- directories ------------------------------------------------------------------------------------------
# Labels are configured directory names (a short slug, see connectors.settings.NAME) and ldap's fixed kinds.

class _Directories:
    def operation(self, directory: str, operation: str, seconds: float) -> None:
        metrics().directory_latency.labels(directory, operation).observe(seconds)

    def error(self, directory: str, kind: str) -> None:
        metrics().directory_errors.labels(directory, kind).inc()


_DIRECTORIES = _Directories()


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
