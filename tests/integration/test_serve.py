"""`idp serve` runs gunicorn with the same settings as every other command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

IDP = str(Path(sys.executable).with_name("idp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_gunicorn_on_the_base_url_port(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": f"http://127.0.0.1:{port}",
           "IDP_WORKERS": "1"}
    proc = subprocess.Popen([IDP, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/saml/metadata", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert resp.status_code == 200
        assert resp.headers["Server"].startswith("gunicorn")
        assert f'entityID="http://127.0.0.1:{port}/saml/metadata"'.encode() in resp.content
    finally:
        proc.terminate()
        proc.wait(10)
    # The instance the server ran is the one the CLI sees: same data dir, same keys.
    assert any((tmp_path / "keys").glob("*.key"))


def test_bad_settings_are_all_reported_before_start(tmp_path: Path) -> None:
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path), "IDP_BASE_URL": "not a url",
           "IDP_LOGIN_MAX_FAILURES": "many", "IDP_WORKERS": "0"}
    out = subprocess.run([IDP, "serve"], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    for name in ("IDP_BASE_URL", "IDP_LOGIN_MAX_FAILURES", "IDP_WORKERS"):
        assert name in out.stderr
    assert "Traceback" not in out.stderr
