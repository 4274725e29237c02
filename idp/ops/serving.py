"""The gunicorn side of ``idp serve``: a metrics folder the workers share, its upkeep, an access log without the
probes' lines, and how long a stop waits for the requests in flight."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

from idp.logs import as_json, request_id_of
from idp.ops.metrics import MULTIPROC_ENV

_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})
# Seconds a stopping server (SIGTERM) gives the requests in flight; deploy/k8s's grace period allows for it.
GRACEFUL_SECONDS = 30


def share_metrics(data_dir: Path) -> Path | None:
    """Point prometheus_client at a fresh folder under the data dir, for the workers gunicorn is about to fork;
    returns it (to remove at exit), or None when PROMETHEUS_MULTIPROC_DIR was set already (then it is the
    operator's: prometheus_client asks that it be emptied before each start)."""
    if os.environ.get(MULTIPROC_ENV):
        return None
    parent = data_dir / "metrics"
    parent.mkdir(parents=True, exist_ok=True)
    # A folder per start: counts from an earlier run (or another server on this data dir) must not add in.
    folder = Path(tempfile.mkdtemp(prefix="serve-", dir=parent))
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def worker_exited(_server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: a dead worker's live gauges stop counting (its counters stay summed)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def remove_on_exit(folder: Path | None) -> Any:
    def on_exit(_server: Any) -> None:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    return on_exit


class QuietProbes(Logger):  # type: ignore[misc]
    """The access log without health checks and scrapes, which would be most of its lines; a line is the
    client, method and path (never the query: it carries SAML messages and signatures), status, bytes sent and
    milliseconds. Written directly rather than through gunicorn's access_log_format, whose atoms() copies every
    header and environ variable of every request to offer them all (a twentieth of a token request)."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if not self.access_log_enabled:
            return
        status = str(resp.status).split(None, 1)[0]
        path = environ.get("PATH_INFO")
        if path in _PROBES and status.startswith("2"):
            return
        sent = getattr(resp, "sent", None)
        millis = request_time.seconds * 1000 + request_time.microseconds // 1000
        client, method = environ.get("REMOTE_ADDR", "-"), environ.get("REQUEST_METHOD")
        fields = {"client": client, "method": method, "path": path, "bytes": sent, "ms": millis,
                  "status": int(status) if status.isdigit() else status, "request_id": request_id_of(environ)}
        self.access_log.info('%s "%s %s" %s %s %sms', client, method, path, status, "-" if sent is None else sent,
                             millis, extra={"http": fields})


class JsonLines(QuietProbes):
    """gunicorn's own lines (start, workers, errors) and its access lines as the app's JSON lines
    (IDP_LOG_FORMAT=json): one format on the server's output."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in (*self.error_log.handlers, *self.access_log.handlers):
            as_json(handler)
