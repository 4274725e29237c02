import stat
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from idp import create_app
from idp.config import Settings
from idp.runtime import keystore


def test_first_start_generates_private_keys(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path / "inst", log_format="text"))
    with app.app_context():
        ring = keystore().ring()
    keyfile = tmp_path / "inst" / "keys" / f"{ring.active.kid}.key"
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "inst" / "secret_key").stat().st_mode) == 0o600
    assert (tmp_path / "inst" / "idp.db").exists()
    # A second start reuses the same key.
    app2 = create_app(Settings(data_dir=tmp_path / "inst", log_format="text"))
    with app2.app_context():
        assert keystore().ring().active.kid == ring.active.kid


def test_unknown_path_is_a_clean_404(client: FlaskClient, app: Flask) -> None:
    resp = client.get("/no/such/page")
    assert resp.status_code == 404
    assert b"Traceback" not in resp.data
