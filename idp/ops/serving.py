"""The gunicorn side of ``idp serve``: a metrics folder the workers share, its upkeep, and an access log
without the probes' lines."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger

from idp.ops.metrics import MULTIPROC_ENV

_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


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
    """The access log without health checks and scrapes, which would be most of its lines."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if environ.get("PATH_INFO") in _PROBES and str(resp.status).startswith("2"):
            return
        super().access(resp, req, environ, request_time)
