"""``/healthz``, ``/readyz`` and ``/metrics``.

A ``/readyz`` answer is also when this instance announces itself to the others (idp.ops.instances): once it is
sent, when the database answered, at most every 30 s.

``/readyz`` and ``/metrics`` are for the kubelet and Prometheus, which ask a pod directly. Behind trusted proxies
(``IDP_TRUSTED_PROXY_HOPS`` above 0) a request carrying X-Forwarded-For came in through them, from the public
side: it gets 404, so that nobody outside reads the figures (SP entity IDs, client ids, failure counts) or makes
every pod probe its directories at will. ``/healthz`` asks nothing of anyone and stays open.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, jsonify, request

from idp.ops import health, instances
from idp.ops.metrics import exposition
from idp.runtime import settings

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


def _inside_only() -> None:
    if settings().trusted_proxy_hops and "X-Forwarded-For" in request.headers:
        log.info("%s asked through the proxy: refused (ask the pod directly)", request.path)
        abort(404)


@bp.get("/healthz")
def healthz() -> Response:
    """The process serves requests; nothing else is asked (a restart would not mend a database outage)."""
    return Response("ok\n", mimetype="text/plain")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    _inside_only()
    found = health.check()
    checks: dict[str, object] = {"keys": found.keys, "database": found.database}
    if found.redis is not None:
        checks["redis"] = found.redis
    checks["directories"] = found.directories
    if found.uncounted:
        checks["not_counted"] = sorted(found.uncounted)
    body = {"status": "ready" if found.ready else "unavailable", "checks": checks}
    resp = jsonify(body)
    if found.database == health.OK:
        # Once the answer is sent: it must not wait for, or fail on, this.
        instances.announce_after(resp)
    return resp, 200 if found.ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    _inside_only()
    data, content_type = exposition()
    return Response(data, content_type=content_type)
