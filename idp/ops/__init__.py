"""What operators and orchestrators ask of a running bridge: ``/healthz`` (the process serves), ``/readyz``
(its database and directories answer), ``/metrics`` (Prometheus: request latency per endpoint, and counters
from the audit events), and the gunicorn side of metrics when several worker processes serve (serving.py).

The three endpoints take no authentication, no CSRF token and no session: a load balancer, a kubelet and a
Prometheus scraper call them without cookies. Put them behind the network policy of your cluster, not on the
public ingress, if their answers should stay internal (see deploy/README.md).
"""

from __future__ import annotations

from flask import Flask

from idp.extensions import csrf
from idp.ops import metrics
from idp.ops.views import bp


def init_ops(app: Flask) -> None:
    metrics.init_app(app)
    csrf.exempt(bp)
    app.register_blueprint(bp)
