"""Signing keys: generated on first start (or loaded from files), rotated, parsed once per process.

Keys live in ``<data_dir>/keys/``: ``<kid>.key`` (mode 0600), ``<kid>.crt`` and ``manifest.json``, which
records each key's state: ``next`` (published in metadata, not yet signing), ``active`` (signing and
published) or ``retired`` (still published so that SPs holding old metadata keep working until the next
rotation). A running server notices a rotation made by the CLI through the manifest's mtime.

There is one ring per key type, managed the same way: RSA (SAML signatures, RS256 ID tokens) in ``keys/`` and
EC P-256 (ES256 ID tokens) in ``keys/ec/``; either may instead be one key from a file the operator keeps
(IDP_SIGNING_KEY_FILE with its certificate, IDP_EC_SIGNING_KEY_FILE), which is how several instances share it;
certificates listed in IDP_SIGNING_PUBLISHED_CERT_FILES are published beside the RSA one (a rotation by hand
with an overlap).
Each key is parsed once per process, for SAML signatures and as a JWK, since re-parsing a PEM per signature costs a
factor of 100 (docs/performance.md).
"""

from __future__ import annotations

import base64
import fcntl
import json
import logging
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeyParameters, RSAKey

from idp import files
from idp.clock import now
from idp.config import Settings

log = logging.getLogger(__name__)

NEXT, ACTIVE, RETIRED = "next", "active", "retired"
# A certificate of IDP_SIGNING_PUBLISHED_CERT_FILES (in metadata and JWKS) or a key of
# IDP_EC_SIGNING_PUBLISHED_KEY_FILES (in the JWKS): published, never signing.
PUBLISHED = "published"
# Far longer than anything a key signs lives (ID tokens 10 min, SAML assertions minutes) and than relying
# parties cache metadata and JWKS for.
RETIRED_KEY_RETENTION = timedelta(days=1)
RSA, EC = "rsa", "ec"
# The JWS algorithm each key type signs ID tokens with.
JWS_ALGORITHMS = {RSA: "RS256", EC: "ES256"}


class KeyError_(Exception):
    """A key problem the admin must fix (unreadable file, rotation of a key we do not own)."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    state: str
    key_pem: bytes
    cert_pem: bytes
    kind: str = RSA
    # The key as read_private_key parsed it (the operator's file, checked at start-up), so that the JWK does not
    # parse it a second time.
    parsed: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | None = field(default=None, compare=False, repr=False)

    @property
    def alg(self) -> str:
        return JWS_ALGORITHMS[self.kind]

    @cached_property
    def jwk(self) -> RSAKey | ECKey:
        """The key as a JOSE key, parsed once (private; public only for a PUBLISHED one); ``kid`` is what every
        token header names. An external key has no kid of ours: its RFC 7638 thumbprint is stable and unique."""
        params: KeyParameters = {"alg": self.alg, "use": "sig"}
        if self.kid != "external":
            params["kid"] = self.kid
        parsed = self.parsed
        key: RSAKey | ECKey
        if self.kind == EC:
            key = ECKey.import_key(parsed if isinstance(parsed, ec.EllipticCurvePrivateKey) else self.key_pem, params)
        else:
            key = RSAKey.import_key(parsed if isinstance(parsed, rsa.RSAPrivateKey) else self.key_pem, params)
        key.ensure_kid()
        return key

    @cached_property
    def jwk_kid(self) -> str:
        return str(self.jwk.kid)

    def public_jwk(self) -> dict[str, Any]:
        return dict(self.jwk.as_dict(private=False))

    @cached_property
    def cert_b64(self) -> str:
        """The certificate's DER in base64, as it goes into ds:X509Certificate."""
        return base64.b64encode(x509.load_pem_x509_certificate(self.cert_pem).public_bytes(
            serialization.Encoding.DER)).decode()

    @cached_property
    def rsa_key(self) -> rsa.RSAPrivateKey:
        """The private key for SAML signatures: the one the JWK parsed (35 ms per parse, with its checks), which
        threads may share."""
        key = self.jwk.private_key
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyError_(f"key {self.kid} is not an RSA key; SAML signs with RSA")
        return key


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[SigningKey, ...]

    @property
    def active(self) -> SigningKey:
        return next(k for k in self.keys if k.state == ACTIVE)

    @property
    def published(self) -> tuple[SigningKey, ...]:
        """Every key that belongs in metadata, the signing one first."""
        return tuple(sorted(self.keys, key=lambda k: k.state != ACTIVE))


@lru_cache(maxsize=8)
def read_private_key(pem: bytes) -> PrivateKeyTypes:
    """An unencrypted PEM private key, parsed and checked. Kept by content: an RSA key's check is most of the 40 ms
    a parse costs, paid again by every app a process builds on the same files (the test suite's thousand)."""
    return serialization.load_pem_private_key(pem, password=None)


@contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Serialise first-start work (key generation, migrations) between processes sharing a data dir."""
    if data_dir.exists() and not data_dir.is_dir():
        raise KeyError_(f"IDP_DATA_DIR: {data_dir} is not a directory")
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fh = open(data_dir / ".lock", "w")  # noqa: SIM115 (closed below, after the work it guards)
        give_to_owner(data_dir, data_dir / ".lock")  # made by root (sudo idp ...): the server must open it too
    except OSError as exc:
        raise KeyError_(f"IDP_DATA_DIR: cannot use {data_dir} ({exc.strerror}); it must be a directory this "
                        "user can write to") from exc
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def give_to_owner(folder: Path, *paths: Path) -> None:
    """Files root writes into a folder another user owns (`sudo idp keys rotate` beside a server that runs as its
    own user) become that user's: a key of root's, mode 0600, would fail every signature."""
    if os.geteuid() != 0:
        return
    owner = folder.stat()
    if owner.st_uid != 0:
        for path in paths:
            os.chown(path, owner.st_uid, owner.st_gid)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret (mode 0600) whole or not at all: a process killed midway must not leave an empty or half
    file that every later start takes for the key."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _published_beside(signing: SigningKey, paths: tuple[Path, ...], *, strict: bool) -> tuple[SigningKey, ...]:
    """The keys to publish beside ``signing``, never to sign with: for RSA the certificates of
    IDP_SIGNING_PUBLISHED_CERT_FILES, for EC the public keys of IDP_EC_SIGNING_PUBLISHED_KEY_FILES; the signing
    key's own, or one listed twice, once. A file that does not hold a key of the ring's type is KeyError_ when
    ``strict``, else left out with an error in the log."""
    if not paths:
        return ()
    own = (signing.parsed.public_key() if signing.parsed is not None
           else x509.load_pem_x509_certificate(signing.cert_pem).public_key())
    seen = {_public_der(own)}
    out: list[SigningKey] = []
    for path in paths:
        try:
            public, cert_pem = _published_key(path, signing.kind)
        except KeyError_ as exc:
            if strict:
                raise
            log.error("%s; not published", exc)
            continue
        der = _public_der(public)
        if der not in seen:
            seen.add(der)
            pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            out.append(SigningKey("external", PUBLISHED, pem, cert_pem, signing.kind))
    return tuple(out)


def _published_key(path: Path, kind: str) -> tuple[Any, bytes]:
    """(public key, certificate PEM or b"") of one published file: an RSA certificate, or an EC P-256 public key."""
    label = "IDP_SIGNING_PUBLISHED_CERT_FILES" if kind == RSA else "IDP_EC_SIGNING_PUBLISHED_KEY_FILES"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyError_(f"{label}: cannot read {exc.filename}: {exc.strerror}") from exc
    if kind == EC:
        try:
            public = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise KeyError_(f"{label}: {path} is not a PEM public key") from exc
        if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
            raise KeyError_(f"{label}: {path} does not hold an EC P-256 key")
        return public, b""
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise KeyError_(f"{label}: {path} is not a PEM certificate") from exc
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise KeyError_(f"{label}: {path} does not hold an RSA key")
    return cert.public_key(), cert.public_bytes(serialization.Encoding.PEM)


def _public_der(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def generate_key_pair(common_name: str, kind: str = RSA) -> tuple[bytes, bytes]:
    """RSA-2048 (or EC P-256) key and a self-signed SHA-256 certificate (SAML metadata pins it; no CA is
    involved). EC keys get one too, so that both rings are stored and rotated the same way."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == EC:
        key = ec.generate_private_key(ec.SECP256R1())
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
    start = now() - timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class Rotation:
    """What one ``idp keys rotate`` step did to a ring: published ``kid`` (not signing yet), or started signing
    with it."""

    kid: str
    signing: bool

    @property
    def message(self) -> str:
        if self.signing:
            return (f"now signing with key {self.kid}; the previous key stays published for "
                    f"{RETIRED_KEY_RETENTION} so that what it signed still verifies.")
        return (f"published new key {self.kid}; it is not signing yet. Once service providers and clients have "
                "refreshed the IdP metadata and JWKS, run `idp keys rotate` again.")


class KeyStore:
    """The process's view of the key ring, re-read only when the manifest changes."""

    def __init__(self, settings: Settings, kind: str = RSA) -> None:
        self.settings = settings
        self.kind = kind
        self.dir = settings.data_dir / "keys" if kind == RSA else settings.data_dir / "keys" / kind
        self._lock = threading.Lock()
        self._mtime: tuple[int, int, int, int] | None = None
        self._ring: KeyRing | None = None
        # The operator's files as last read, and as last refused (see _external_ring).
        self._external_stamp: tuple[object, ...] | None = None
        self._refused_stamp: tuple[object, ...] | None = None

    @property
    def manifest(self) -> Path:
        return self.dir / "manifest.json"

    @property
    def key_file(self) -> Path | None:
        """The operator's key (IDP_SIGNING_KEY_FILE for RSA, IDP_EC_SIGNING_KEY_FILE for EC), if any."""
        return self.settings.signing_key_file if self.kind == RSA else self.settings.ec_signing_key_file

    @property
    def external(self) -> bool:
        return self.key_file is not None

    @property
    def setting_name(self) -> str:
        return "IDP_SIGNING_KEY_FILE" if self.kind == RSA else "IDP_EC_SIGNING_KEY_FILE"

    def ring(self) -> KeyRing:
        if self.external:
            return self._external_ring()
        # Each write renames a new file into place, so the inode changes even when the mtime does not.
        mtime = files.stamp(self.manifest)
        if mtime is None:
            raise KeyError_(f"cannot read the key manifest {self.manifest}")
        if self._ring is None or mtime != self._mtime:
            with self._lock:
                self._ring = self._read()
                self._mtime = mtime
        return self._ring

    def _external_ring(self) -> KeyRing:
        """The operator's key (and certificate) files, read again when they are replaced (a rotated Kubernetes
        Secret, say), so that every worker signs with and publishes the new key without a restart. Files that do
        not make a valid pair yet (one replaced, not the other) leave the key in use as it is, with an error."""
        # Only the RSA key goes into SAML metadata, so only it comes with a certificate, and certificates to
        # publish beside it; the EC key is published in the JWKS only, beside public keys.
        cert_file = self.settings.signing_cert_file if self.kind == RSA else None
        published = self.settings.published_cert_files if self.kind == RSA else self.settings.ec_published_key_files
        stamp = (files.stamp(self.key_file), files.stamp(cert_file), *(files.stamp(f) for f in published))
        if self._ring is not None and stamp in (self._external_stamp, self._refused_stamp):
            return self._ring
        with self._lock:
            try:
                signing = self._read_external()
                # Once running, a published file gone or not a certificate is left out, not the reason to keep
                # the old ring: that would also keep the old signing key through a swap of the key files.
                ring = KeyRing((signing, *_published_beside(signing, published, strict=self._ring is None)))
            except KeyError_ as exc:
                if self._ring is None:
                    raise
                log.error("%s changed, but the key in use is kept: %s", self.setting_name, exc)
                self._refused_stamp = stamp
                return self._ring
            self._ring, self._external_stamp = ring, stamp
        return self._ring

    def ensure(self) -> None:
        """Generate the first key if there is none (first start); read and check the operator's key files."""
        if self.external:
            self._external_ring()
            return
        with data_dir_lock(self.settings.data_dir):
            if not self.manifest.exists():
                try:
                    self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                    kid = self._new_key()
                    self._write_manifest([{"kid": kid, "state": ACTIVE, "created": now().isoformat()}])
                except OSError as exc:
                    raise KeyError_(f"cannot write a new key into {self.dir}: {exc.strerror}") from exc
            # Read now (under the lock: a rotation's second step deletes expired keys), the signing key parsed
            # and kept for signing: a ring damaged since the last start is said at start-up, not by the first
            # sign-in's 500.
            self.signing_key()

    def signing_key(self) -> SigningKey:
        """The ring's active key, parsed: KeyError_ when it is not a private key of the ring's type (damaged, a
        public key, restored into the other ring's folder)."""
        active = self.ring().active
        try:
            private = active.jwk.is_private
        except (ValueError, JoseError) as exc:
            private = False
            cause: Exception | None = exc
        else:
            cause = None
        if not private:
            raise KeyError_(f"{self.dir / active.kid}.key is not an {self.kind.upper()} private key in PEM (the "
                            "ring's signing key): restore it from a backup") from cause
        return active

    def rotate(self) -> Rotation:
        """First call: publish a new key as ``next``. Second call: sign with it, retire the old one.

        A retired key stays published until RETIRED_KEY_RETENTION has passed since it stopped signing, however
        often keys rotate meanwhile: what it signed must still verify until it expires."""
        if self.external:
            raise KeyError_(f"keys come from {self.setting_name}; rotate them where they are managed")
        with data_dir_lock(self.settings.data_dir):
            t = now()
            entries = self._entries()
            pending = [e for e in entries if e["state"] == NEXT]
            if pending:
                for e in entries:
                    if e["state"] == ACTIVE:
                        e.update(state=RETIRED, retired_at=t.isoformat())
                    elif e["state"] == NEXT:
                        e["state"] = ACTIVE
            else:
                kid = self._new_key()
                entries.append({"kid": kid, "state": NEXT, "created": t.isoformat()})
            expired = [e["kid"] for e in entries if e["state"] == RETIRED
                       and datetime.fromisoformat(e.get("retired_at", t.isoformat())) + RETIRED_KEY_RETENTION <= t]
            self._write_manifest([e for e in entries if e["kid"] not in expired])
            for old in expired:  # only once the manifest no longer names them
                self._delete_key(old)
            if pending:
                return Rotation(pending[0]["kid"], signing=True)
            return Rotation(kid, signing=False)

    def _delete_key(self, kid: str) -> None:
        for suffix in (".key", ".crt"):
            (self.dir / f"{kid}{suffix}").unlink(missing_ok=True)

    def _read_external(self) -> SigningKey:
        """The operator's key (and certificate), read once and checked; KeyError_ says which file is wrong and
        how, at start-up instead of at the first signature, and when a replaced file does not fit."""
        key_file, label = self.key_file, self.setting_name
        assert key_file is not None
        try:
            key_pem = key_file.read_bytes()
            mode = key_file.stat().st_mode
        except OSError as exc:
            raise KeyError_(f"cannot read {exc.filename}: {exc.strerror}") from exc
        if mode & 0o077:
            # Not refused: mounted secrets (Kubernetes' default 0644) often look like this behind their own
            # access control. But the admin should know.
            log.warning("%s %s is readable by other users (mode %o); 0600 is advised", label, key_file, mode & 0o777)
        try:
            key = read_private_key(key_pem)
        except (ValueError, TypeError) as exc:
            raise KeyError_(f"{label}: {key_file} is not an unencrypted PEM private key") from exc
        if self.kind == EC:
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
                raise KeyError_(f"{label}: {key_file} must be an EC P-256 key (we sign ES256 with it)")
            return SigningKey("external", ACTIVE, key_pem, b"", self.kind, key)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyError_(f"{label}: {key_file} must be an RSA key (we sign with RSA-SHA256)")
        return SigningKey("external", ACTIVE, key_pem, self._read_certificate(key), self.kind, key)

    def _read_certificate(self, key: rsa.RSAPrivateKey) -> bytes:
        cert_file = self.settings.signing_cert_file
        assert cert_file is not None
        try:
            cert_pem = cert_file.read_bytes()
            cert = x509.load_pem_x509_certificate(cert_pem)
        except OSError as exc:
            raise KeyError_(f"cannot read {exc.filename}: {exc.strerror}") from exc
        except ValueError as exc:
            raise KeyError_(f"IDP_SIGNING_CERT_FILE: {cert_file} is not a PEM certificate") from exc
        if cert.public_key() != key.public_key():
            raise KeyError_(
                f"IDP_SIGNING_CERT_FILE: {cert_file} does not match the key in IDP_SIGNING_KEY_FILE"
            )
        return cert_pem

    def _new_key(self) -> str:
        kid = secrets.token_hex(6)
        key_pem, cert_pem = generate_key_pair(urlsplit(self.settings.base_url).hostname or "idp", self.kind)
        write_private(self.dir / f"{kid}.key", key_pem)
        (self.dir / f"{kid}.crt").write_bytes(cert_pem)
        give_to_owner(self.dir, self.dir / f"{kid}.key", self.dir / f"{kid}.crt")
        return kid

    def _write_manifest(self, entries: list[dict[str, str]]) -> None:
        tmp = self.manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps({"keys": entries}, indent=2))
        give_to_owner(self.dir, tmp)
        tmp.replace(self.manifest)  # atomic: a reader never sees half a manifest

    def _entries(self) -> list[dict[str, str]]:
        """The manifest's entries, checked: KeyError_ for a manifest not ours, or whose ring has no signing key
        (edited by hand, or left by a disk that filled up)."""
        try:
            entries = json.loads(self.manifest.read_text())["keys"]
            if not all(isinstance(e["kid"], str) and e["state"] in (NEXT, ACTIVE, RETIRED) for e in entries):
                raise ValueError("an entry without a kid or with an unknown state")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyError_(f"cannot read the key ring in {self.dir}: {type(exc).__name__}: {exc}") from exc
        if sum(e["state"] == ACTIVE for e in entries) != 1:
            raise KeyError_(f"the key ring in {self.dir} must have exactly one active key: see "
                            f"{self.manifest}")
        return list(entries)

    def _read(self) -> KeyRing:
        entries = self._entries()
        try:
            return KeyRing(tuple(
                SigningKey(
                    e["kid"], e["state"],
                    (self.dir / f"{e['kid']}.key").read_bytes(),
                    (self.dir / f"{e['kid']}.crt").read_bytes(),
                    self.kind,
                )
                for e in entries
            ))
        except OSError as exc:  # a key file gone
            raise KeyError_(f"cannot read the key ring in {self.dir}: {type(exc).__name__}: {exc}") from exc
