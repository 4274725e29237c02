"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from idp.ops import health
from idp.ops.metrics import exposition

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process serves requests; nothing else is asked (a restart would not mend a database outage)."""
    return Response("ok\n", mimetype="text/plain")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    found = health.check()
    checks: dict[str, object] = {"database": found.database}
    if found.redis is not None:
        checks["redis"] = found.redis
    checks["directories"] = found.directories
    body = {"status": "ready" if found.ready else "unavailable", "checks": checks}
    return jsonify(body), 200 if found.ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    data, content_type = exposition()
    return Response(data, content_type=content_type)
