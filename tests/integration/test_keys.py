"""Key rotation as SPs see it (metadata) and as the IdP uses it (which key signs), and key-file errors."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from helpers import audit_insert_lost
from lxml import etree

from idp import audit, create_app
from idp.cli import cli
from idp.config import Settings
from idp.keys import EC, RSA, KeyError_, generate_key_pair
from idp.runtime import keystore
from idp.saml import signing, xmlsafe
from idp.saml.signing import SignatureInvalid

MD = "urn:oasis:names:tc:SAML:2.0:metadata"
DS = "http://www.w3.org/2000/09/xmldsig#"
IDP_COMMAND = str(Path(sys.executable).parent / "idp")  # the installed console script


def metadata_certs(app: Flask) -> list[str]:
    resp = app.test_client().get("/saml/metadata")
    root = etree.fromstring(resp.data)
    return ["".join(c.text.split()) for c in root.iterfind(
        f"{{{MD}}}IDPSSODescriptor/{{{MD}}}KeyDescriptor[@use='signing']/{{{DS}}}KeyInfo/{{{DS}}}X509Data/"
        f"{{{DS}}}X509Certificate")]


def signing_cert(app: Flask, candidates: list[str]) -> str:
    """Which published certificate verifies what the IdP signs now."""
    with app.app_context():
        root = xmlsafe.parse(b'<r xmlns="urn:x" ID="_x"><v>1</v></r>')
        signing.sign(root, keystore().ring().active)
    verified = []
    for cert in candidates:
        try:
            if signing.verify_posted(root, [cert], allow_sha1=False):
                verified.append(cert)
        except SignatureInvalid:
            pass
    assert len(verified) == 1
    return verified[0]


def rotate(app: Flask) -> str:
    result = app.test_cli_runner().invoke(cli, ["keys", "rotate"])
    assert result.exit_code == 0, result.output
    return result.output


def test_rotation_publishes_first_then_signs_then_drops_the_old_key(generated_app: Flask, frozen_clock: Any) -> None:
    app = generated_app
    (original,) = metadata_certs(app)
    assert signing_cert(app, [original]) == original

    assert "not signing yet" in rotate(app)
    certs = metadata_certs(app)
    assert len(certs) == 2 and certs[0] == original
    new = certs[1]
    assert signing_cert(app, certs) == original  # published, not yet used

    assert "now signing with key" in rotate(app)
    certs = metadata_certs(app)
    assert certs == [new, original]  # the old one stays published for SPs with old metadata
    assert signing_cert(app, certs) == new
    # Each step is an admin change, audited with the key it concerns (both rings rotate by default).
    with app.app_context():
        steps = [(e.details["type"], e.details["step"]) for e in reversed(audit.events(type="keys.rotate"))]
        kids = {e.details["kid"] for e in audit.events(type="keys.rotate") if e.details["type"] == "rsa"}
        assert kids == {keystore().ring().active.kid}
    assert steps == [("rsa", "published"), ("ec", "published"), ("rsa", "signing"), ("ec", "signing")]

    # Rotating again at once publishes a third key, but what the original signed may still be in use.
    rotate(app)
    certs = metadata_certs(app)
    assert certs[0] == new and original in certs and len(certs) == 3
    assert signing_cert(app, certs) == new

    # A day on, the original has outlived anything it signed: the next rotation drops it.
    frozen_clock.advance(days=1, seconds=1)
    rotate(app)
    certs = metadata_certs(app)
    assert original not in certs and len(certs) == 2
    assert signing_cert(app, certs) != original


def test_a_rotation_the_database_cannot_audit_is_done_and_said_so(generated_app: Flask) -> None:
    """The key files change before the event is written: the operator is told what was rotated, and that it was
    not audited, for each ring, rather than a bare error that invites running the command again."""
    with generated_app.app_context():
        with audit_insert_lost():
            result = generated_app.test_cli_runner().invoke(cli, ["keys", "rotate"])
        published = {kind: len(keystore(kind).ring().published) for kind in (RSA, EC)}
    assert result.exit_code == 1, result.output
    assert result.output.count("it is not signing yet") == 2  # both rings, each said as it was done
    assert "rsa: rotated, but not audited: " in result.output and "ec: rotated, but not audited: " in result.output
    assert "Traceback" not in result.output and published == {RSA: 2, EC: 2}


def test_a_running_server_sees_a_rotation_made_by_another_process(generated_app: Flask,
                                                                   make_app: Callable[..., Flask]) -> None:
    (original,) = metadata_certs(generated_app)
    # A second app on the same data dir stands for the CLI process.
    other = make_app(signing_key_file=None, signing_cert_file=None)
    rotate(other)
    rotate(other)
    certs = metadata_certs(generated_app)
    assert len(certs) == 2 and certs[1] == original
    assert signing_cert(generated_app, certs) == certs[0]


def write_pair(tmp_path: Path, key: bytes, cert: bytes) -> tuple[Path, Path]:
    (tmp_path / "k.pem").write_bytes(key)
    (tmp_path / "c.pem").write_bytes(cert)
    return tmp_path / "k.pem", tmp_path / "c.pem"


def test_key_files_replaced_in_place_are_signed_with_and_published_without_a_restart(
        make_settings: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key, cert = write_pair(tmp_path, *generate_key_pair("idp"))
    app = create_app(make_settings(signing_key_file=key, signing_cert_file=cert))
    (first,) = metadata_certs(app)
    rotated_key, rotated_cert = generate_key_pair("idp, rotated")
    # Half-way through a rotation by hand: the key replaced, its certificate not yet. The pair in use stays.
    key.write_bytes(rotated_key)
    assert metadata_certs(app) == [first]
    assert signing_cert(app, [first]) == first
    assert "IDP_SIGNING_KEY_FILE changed, but the key in use is kept" in caplog.text
    cert.write_bytes(rotated_cert)
    (second,) = metadata_certs(app)
    assert second != first and second in "".join(rotated_cert.decode().splitlines())
    assert signing_cert(app, [first, second]) == second


@pytest.mark.parametrize("case, message", [
    ("garbage key", "IDP_SIGNING_KEY_FILE: {key} is not an unencrypted PEM private key"),
    ("garbage cert", "IDP_SIGNING_CERT_FILE: {cert} is not a PEM certificate"),
    ("mismatch", "IDP_SIGNING_CERT_FILE: {cert} does not match the key in IDP_SIGNING_KEY_FILE"),
    ("garbage published", "IDP_SIGNING_PUBLISHED_CERT_FILES: {published} is not a PEM certificate"),
    ("ec published", "IDP_SIGNING_PUBLISHED_CERT_FILES: {published} does not hold an RSA key"),
])
def test_bad_key_files_are_named_at_start_up(make_settings: Callable[..., Settings], tmp_path: Path,
                                             case: str, message: str) -> None:
    key_pem, cert_pem = generate_key_pair("idp")
    published = tmp_path / "published.crt"
    published.write_bytes(generate_key_pair("next")[1])
    if case == "garbage key":
        key_pem = b"not a key\n"
    elif case == "garbage cert":
        cert_pem = b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
    elif case == "mismatch":
        cert_pem = generate_key_pair("someone else")[1]
    elif case == "garbage published":
        published.write_bytes(b"not a certificate\n")
    else:
        published.write_bytes(generate_key_pair("next", EC)[1])
    key, cert = write_pair(tmp_path, key_pem, cert_pem)
    with pytest.raises(KeyError_) as info:
        create_app(make_settings(signing_key_file=key, signing_cert_file=cert,
                                 signing_published_cert_files=str(published)))
    assert str(info.value) == message.format(key=key, cert=cert, published=published)


def test_published_certificates_are_in_metadata_once_and_never_signed_with(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    key, cert = write_pair(tmp_path, *generate_key_pair("idp"))
    published = tmp_path / "published.crt"
    published.write_bytes(generate_key_pair("next")[1])
    # The signing certificate listed too (left there after a swap) and one listed twice: each published once.
    listed = f"{published},{cert},{published}"
    app = create_app(make_settings(signing_key_file=key, signing_cert_file=cert, signing_published_cert_files=listed))
    certs = metadata_certs(app)
    assert len(certs) == 2 and certs[1] in "".join(published.read_text().splitlines())
    assert signing_cert(app, certs) == certs[0]
    with app.app_context():
        ring = keystore().ring().published
    assert [k.state for k in ring] == ["active", "published"]
    # Listed by the ids their JWKS entries carry (both would be "external" otherwise).
    listed = app.test_cli_runner().invoke(cli, ["keys", "list"]).output.splitlines()
    assert listed[:2] == [f"{ring[0].jwk_kid}\tactive\trsa", f"{ring[1].jwk_kid}\tpublished\trsa"]


def test_a_published_certificate_gone_at_runtime_is_left_out_and_holds_up_no_swap(
        make_app: Callable[..., Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key, cert = write_pair(tmp_path, *generate_key_pair("idp"))
    published = tmp_path / "published.crt"
    published.write_bytes(generate_key_pair("old")[1])
    app = make_app(signing_key_file=key, signing_cert_file=cert, signing_published_cert_files=str(published))
    assert len(metadata_certs(app)) == 2
    # The old certificate deleted but still listed, then the pair swapped: the swap takes.
    published.unlink()
    new_key, new_cert = generate_key_pair("idp, next")
    key.write_bytes(new_key)
    cert.write_bytes(new_cert)
    (only,) = metadata_certs(app)
    assert only in "".join(new_cert.decode().splitlines()) and signing_cert(app, [only]) == only
    assert f"IDP_SIGNING_PUBLISHED_CERT_FILES: cannot read {published}" in caplog.text
    assert "; not published" in caplog.text


def test_the_cli_reports_an_unreadable_key_file_and_exits(tmp_path: Path) -> None:
    key, cert = write_pair(tmp_path, b"garbage", generate_key_pair("idp")[1])
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path / "inst"), "IDP_SIGNING_KEY_FILE": str(key),
           "IDP_SIGNING_CERT_FILE": str(cert), "IDP_LOG_FORMAT": "text"}
    result = subprocess.run([IDP_COMMAND, "keys", "list"], env=env, capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 2
    assert f"Error: IDP_SIGNING_KEY_FILE: {key} is not an unencrypted PEM private key" in result.stderr
    assert "Traceback" not in result.stderr
    missing = {**env, "IDP_SIGNING_KEY_FILE": str(tmp_path / "missing.key")}
    result = subprocess.run([IDP_COMMAND, "keys", "list"], env=missing, capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 2
    assert "IDP_SIGNING_KEY_FILE" in result.stderr and "Traceback" not in result.stderr


def test_a_key_file_others_can_read_is_warned_about(make_settings: Callable[..., Settings], tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    key, cert = write_pair(tmp_path, *generate_key_pair("idp"))
    key.chmod(0o600)
    create_app(make_settings(signing_key_file=key, signing_cert_file=cert))
    assert "readable by other users" not in caplog.text
    key.chmod(0o644)
    create_app(make_settings(signing_key_file=key, signing_cert_file=cert))
    assert "readable by other users (mode 644)" in caplog.text


def test_a_generated_ring_damaged_on_disk_is_named_at_start_up_and_unready_while_running(
        generated_app: Flask, make_settings: Callable[..., Settings]) -> None:
    ring_dir = generated_app.extensions["idp.keys"].dir
    manifest = ring_dir / "manifest.json"
    good = manifest.read_text()
    client = generated_app.test_client()
    assert client.get("/readyz").get_json()["checks"]["keys"] == "ok"
    manifest.unlink()  # a clean-up that went too far: every signature would fail
    ready = client.get("/readyz")
    assert (ready.status_code, ready.get_json()["checks"]["keys"]) == (503, "error")
    manifest.write_text(good)
    assert client.get("/readyz").status_code == 200

    settings = make_settings(signing_key_file=None, signing_cert_file=None)
    key_file = ring_dir / f"{json.loads(good)['keys'][0]['kid']}.key"
    rsa_pem = key_file.read_bytes()
    for damage, said in (
        (lambda: manifest.write_text("{not json"), f"cannot read the key ring in {ring_dir}: JSONDecodeError"),
        (lambda: manifest.write_text(good.replace('"active"', '"retired"')),
         f"the key ring in {ring_dir} must have exactly one active key"),
        (lambda: key_file.write_bytes(b""), f"{key_file} is not an RSA private key in PEM"),
        # Restored into the other ring's folder, or only its public half.
        (lambda: key_file.write_bytes(generate_key_pair("idp", EC)[0]), f"{key_file} is not an RSA private key"),
        (lambda: key_file.write_bytes(serialization.load_pem_private_key(rsa_pem, None).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)),
         f"{key_file} is not an RSA private key"),
    ):
        damage()
        with pytest.raises(KeyError_) as err:
            create_app(settings)
        assert str(err.value).startswith(said), err.value
        manifest.write_text(good)


def test_a_data_dir_that_cannot_be_used_is_named_by_the_cli(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    env = {**os.environ, "IDP_DATA_DIR": str(tmp_path / "a-file"), "IDP_LOG_FORMAT": "text"}
    result = subprocess.run([IDP_COMMAND, "keys", "list"], env=env, capture_output=True, text=True, check=False,
                            timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"Error: IDP_DATA_DIR: {tmp_path / 'a-file'} is not a directory" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_secret_whose_write_fails_midway_leaves_no_file_to_take_for_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = tmp_path / "inst"

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", disk_full)
        with pytest.raises(KeyError_, match=r"cannot use .*secret_key \(No space left on device\)"):
            create_app(Settings(data_dir=inst, log_format="text"))
    assert sorted(p.name for p in inst.iterdir()) == [".lock"]  # neither an empty secret_key nor a temporary file
    (inst / "secret_key").write_text("")  # as such a crash left it before
    app = create_app(Settings(data_dir=inst, log_format="text"))
    assert len(app.secret_key or "") == 64 and (inst / "secret_key").read_text() == app.secret_key


@pytest.mark.skipif(os.geteuid() != 0, reason="acting for another user takes root (CI runs as root)")
def test_a_rotation_by_root_in_a_ring_another_user_owns_leaves_that_user_the_files(generated_app: Flask) -> None:
    # `sudo idp keys rotate` beside a server running as its own user: a key of root's, mode 0600, would be
    # unreadable to the server.
    data_dir = generated_app.extensions["idp.keys"].settings.data_dir
    for path in (data_dir, *data_dir.rglob("*")):
        os.chown(path, 65534, 65534)
    rotate(generated_app)
    assert {(p.name, p.stat().st_uid, p.stat().st_gid) for p in data_dir.rglob("*") if p.stat().st_uid != 65534
            and p.name != "idp.db"} == set()
    with generated_app.app_context():
        assert len(keystore(RSA).ring().published) == 2 and len(keystore(EC).ring().published) == 2
