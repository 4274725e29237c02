"""`idp serve` runs gunicorn with the same settings as every other command."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from helpers import IDP, Aside, csrf_token, free_port, idp_process


def test_serve_runs_gunicorn_on_the_base_url_port(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": f"http://127.0.0.1:{port}",
           "IDP_WORKERS": "1"}
    with idp_process(["serve"], env, port, tmp_path / "out.log") as served:
        resp = requests.get(served.url + "/saml/metadata", timeout=10)
        assert resp.status_code == 200
        assert resp.headers["Server"].startswith("gunicorn")
        assert f'entityID="http://127.0.0.1:{port}/saml/metadata"'.encode() in resp.content
        assert requests.get(served.url + "/saml/sso?SAMLRequest=secret-message", timeout=10).status_code == 400
        assert requests.get(served.url + "/healthz", timeout=10).status_code == 200
    # Every line the server wrote, gunicorn's own included, is a JSON line (the default IDP_LOG_FORMAT): a log
    # pipeline meets one format.
    log = (tmp_path / "out.log").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    assert any(line["logger"] == "gunicorn.error" and "Booting worker" in line["message"] for line in lines), log
    # The access log: a line per request with client, method, path, status, bytes, time and the request's id (as
    # the answer's X-Request-ID); no query string (it carries SAML messages), no probes.
    access = [line["http"] for line in lines if line["logger"] == "gunicorn.access"]
    [metadata] = [a for a in access if a["path"] == "/saml/metadata"]
    assert metadata == {"client": "127.0.0.1", "method": "GET", "path": "/saml/metadata", "status": 200,
                        "bytes": len(resp.content), "request_id": resp.headers["X-Request-ID"], "ms": metadata["ms"]}
    assert isinstance(metadata["ms"], int)
    assert any(a["path"] == "/saml/sso" and a["status"] == 400 for a in access) and "secret-message" not in log
    assert not any(a["path"] == "/healthz" for a in access)
    # The instance the server ran is the one the CLI sees: same data dir, same keys.
    assert any((tmp_path / "keys").glob("*.key"))


def test_text_logs_stay_text(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": f"http://127.0.0.1:{port}",
           "IDP_WORKERS": "1", "IDP_LOG_FORMAT": "text"}
    with idp_process(["serve"], env, port, tmp_path / "out.log") as served:
        assert requests.get(served.url + "/saml/metadata", timeout=10).status_code == 200
    log = (tmp_path / "out.log").read_text()
    assert re.search(r'127\.0\.0\.1 "GET /saml/metadata" 200 \d+ \d+ms', log), log[-2000:]
    assert "Booting worker" in log and not log.lstrip().startswith("{")


def test_python_warnings_are_log_lines_of_the_servers_format(tmp_path: Path) -> None:
    """A library's warning (joserfc's on a short RSA key, say) in the server is a JSON line like the app's, with
    its secrets masked, not plain text among them. Run apart: under pytest, warnings are pytest's."""
    script = ("import warnings\n"
              "from idp.logs import capture_warnings, configure_logging\n"
              "configure_logging('INFO', 'json')\n"
              "capture_warnings()\n"
              "warnings.warn('a key with password=hunter2x is short')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stderr)
    assert line["logger"] == "py.warnings" and line["level"] == "WARNING"
    assert "UserWarning: a key with password=***" in line["message"] and "hunter2x" not in out.stderr


def test_a_local_peer_cannot_set_the_scheme_or_the_script_name(tmp_path: Path) -> None:
    """With no trusted proxy hop (the default), forwarded headers mean nothing, even from 127.0.0.1, where
    gunicorn trusts them by default: a same-host proxy would pass on what its clients sent."""
    port = free_port()
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": f"http://127.0.0.1:{port}",
           "IDP_WORKERS": "1"}
    with idp_process(["serve"], env, port, tmp_path / "out.log") as served:
        # SCRIPT_NAME would re-root every link the pages make.
        assert requests.get(served.url + "/elsewhere/login", headers={"SCRIPT_NAME": "/elsewhere"},
                            timeout=10).status_code == 404
        # An https scheme would make CSRF demand a Referer, refusing this plain-http form post.
        http = requests.Session()
        page = http.get(served.url + "/login", timeout=10)
        resp = http.post(served.url + "/login", headers={"X-Forwarded-Proto": "https"}, timeout=10,
                         data={"csrf_token": csrf_token(page.text), "username": "nobody", "password": "wrong"})
        assert resp.status_code == 200 and "Incorrect username or password." in resp.text


def test_bad_settings_are_all_reported_before_start(tmp_path: Path) -> None:
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": "not a url",
           "IDP_LOGIN_MAX_FAILURES": "many", "IDP_WORKERS": "0", "IDP_THREADS": "none"}
    out = subprocess.run([IDP, "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    for name in ("IDP_BASE_URL", "IDP_LOGIN_MAX_FAILURES", "IDP_WORKERS", "IDP_THREADS"):
        assert name in out.stderr
    assert "Traceback" not in out.stderr


def test_a_stop_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    """SIGTERM, as Kubernetes sends after a pod's preStop pause: the request being served finishes (up to idp
    serve's graceful timeout) rather than being cut, and the server exits once it has. Here that request is a
    sign-in held on the database: this test holds SQLite's write lock, which the sign-in's writes wait for."""
    port = free_port()
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": f"http://127.0.0.1:{port}",
           "IDP_WORKERS": "1"}
    with idp_process(["serve"], env, port, tmp_path / "out.log") as served:
        http = requests.Session()
        page = http.get(served.url + "/login", timeout=10)
        lock = sqlite3.connect(tmp_path / "idp.db", isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        signing_in = Aside(lambda: http.post(served.url + "/login", timeout=30, data={
            "csrf_token": csrf_token(page.text), "username": "nobody", "password": "wrong"}))
        time.sleep(1.0)  # the sign-in's failure is being recorded: it waits on the lock
        assert signing_in.pending()
        os.kill(served.pid, signal.SIGTERM)
        time.sleep(1.0)
        lock.execute("ROLLBACK")
        lock.close()
        answer = signing_in.answer(30)
        assert answer.status_code == 200 and "Incorrect username or password." in answer.text
        stopped = time.monotonic()
        while _running(served.pid):
            assert time.monotonic() - stopped < 10, "the server did not exit once its request was done"
            time.sleep(0.1)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A process that has exited stays until its parent (idp_process) reaps it: a zombie is not running.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_the_workers_inherit_no_database_connection_from_the_server_process(tmp_path: Path, command: str) -> None:
    """gunicorn forks its workers from the process that built the app and, on the embedded SQLite, migrated it
    (and, for the demo, seeded it): a connection left open there would be one connection shared by every
    worker, which SQLite warns corrupts the database (and PostgreSQL's protocol cannot survive)."""
    port = free_port()
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": f"http://127.0.0.1:{port}",
           "IDP_WORKERS": "2"}
    with idp_process([command], env, port, tmp_path / "out.log") as served:
        database = str((tmp_path / "idp.db").resolve())
        # Served: the workers open connections of their own.
        assert requests.get(served.url + "/login", timeout=10).status_code == 200
        held = [fd.name for fd in Path(f"/proc/{served.pid}/fd").iterdir() if os.readlink(fd) == database]
        assert held == [], f"the server process holds {database} open (fds {held}) for its workers to inherit"
