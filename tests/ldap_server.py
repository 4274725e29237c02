"""A real OpenLDAP ``slapd`` for the tests: own child process, throwaway config, TLS from a CA made here.

One server per test session (it starts in well under a second), listening on free loopback ports for
ldap:// (StartTLS too) and ldaps://, with the memberof and refint overlays, seeded with ldapadd from
tests/fixtures/directory.ldif so that the overlay writes memberOf as it would in production.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import free_port, freeze, wait_listening

from idp.authn.connectors.settings import DirectoryConfig, parse_entry

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
LDAPADD = shutil.which("ldapadd") or "/usr/bin/ldapadd"
LDAPMODIFY = shutil.which("ldapmodify") or "/usr/bin/ldapmodify"
FIXTURE = Path(__file__).parent / "fixtures" / "directory.ldif"
SUFFIX = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-secret"  # the tests' own superuser; the bridge uses the service account below
SERVICE_DN = f"cn=bridge,ou=services,{SUFFIX}"
SERVICE_PW = "bridge-service-pw"

SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload refint
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCACertificateFile {dir}/ca.pem
TLSCertificateFile {dir}/server.pem
TLSCertificateKeyFile {dir}/server.key

database mdb
maxsize 33554432
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw}
directory {dir}/db
# Like a real directory: passwords only for binding, the service account reads, anonymous users see nothing.
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="{service_dn}" read by self read by * none
overlay memberof
memberof-refint TRUE
overlay refint
refint_attributes member uniqueMember
"""


@dataclass(frozen=True)
class Slapd:
    ldap_url: str
    ldaps_url: str
    ca_file: Path
    wrong_ca_file: Path
    base_dn: str = SUFFIX
    service_dn: str = SERVICE_DN
    service_password: str = SERVICE_PW


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_tls_files(d: Path) -> None:
    """ca.pem, server.pem/server.key for 127.0.0.1 and localhost, and wrong-ca.pem (an unrelated CA)."""
    ca_key, ca_cert = _ca("idp test LDAP CA")
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number()).not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (d / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()))
    _, other = _ca("some other CA")
    (d / "wrong-ca.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))


@dataclass
class SlapdProcess:
    """One running slapd: the session's, or another one a test starts from the same data to stop it."""

    proc: subprocess.Popen[bytes]
    ldap_url: str
    ldaps_url: str
    dir: Path

    def freeze(self) -> None:
        """A hung server: connections are accepted by the kernel, nothing answers."""
        freeze(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process would not act on SIGTERM
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_slapd(d: Path, database_config: str = "") -> SlapdProcess:
    """A slapd in ``d`` (made here) on free loopback ports, TLS from a CA of its own (ca.pem), seeded from
    tests/fixtures/directory.ldif; ``database_config``: more lines for its database (``limits ...``). The caller
    stops it (SlapdProcess.stop)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "db").mkdir()
    make_tls_files(d)
    (d / "slapd.conf").write_text(SLAPD_CONF.format(dir=d, suffix=SUFFIX, root_dn=ROOT_DN, root_pw=ROOT_PW,
                                                    service_dn=SERVICE_DN) + database_config + "\n")
    port, tls_port = free_port(), free_port()
    log = d / "slapd.log"
    ldap_url, ldaps_url = f"ldap://127.0.0.1:{port}", f"ldaps://127.0.0.1:{tls_port}"
    with open(log, "wb") as out:
        # -d 0: stay in the foreground (our child, stopped by us) without debug output.
        proc = subprocess.Popen([SLAPD, "-f", str(d / "slapd.conf"), "-h", f"{ldap_url}/ {ldaps_url}/", "-d", "0"],
                                stdout=out, stderr=subprocess.STDOUT)
    server = SlapdProcess(proc, ldap_url, ldaps_url, d)
    try:
        wait_listening(port, proc, log, "slapd")
        wait_listening(tls_port, proc, log, "slapd")
        seeded = subprocess.run([LDAPADD, "-x", "-H", ldap_url, "-D", ROOT_DN, "-w", ROOT_PW, "-f", str(FIXTURE)],
                                capture_output=True, text=True, timeout=30, check=False)
        if seeded.returncode != 0:
            raise RuntimeError(f"ldapadd failed: {seeded.stderr}")
    except BaseException:
        server.stop()
        raise
    return server


def _require_binaries() -> None:
    """Missing binaries skip the test on a laptop and fail it in CI."""
    if not (os.access(SLAPD, os.X_OK) and os.access(LDAPADD, os.X_OK)):
        reason = "slapd/ldapadd not installed (apt-get install slapd ldap-utils)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The session's directory server."""
    _require_binaries()
    server = start_slapd(tmp_path_factory.mktemp("slapd"))
    try:
        yield Slapd(ldap_url=server.ldap_url, ldaps_url=server.ldaps_url, ca_file=server.dir / "ca.pem",
                    wrong_ca_file=server.dir / "wrong-ca.pem")
    finally:
        server.stop()


@pytest.fixture
def spare_slapd(tmp_path: Path) -> Iterator[SlapdProcess]:
    """Another slapd with the same entries, for this test only (to be stopped, hung or killed)."""
    _require_binaries()
    server = start_slapd(tmp_path / "spare-slapd")
    try:
        yield server
    finally:
        server.stop()


def directory_config(server: Slapd, secrets_dir: Path, name: str = "corp", **overrides: object) -> DirectoryConfig:
    """A validated ``ldap`` directory for ``server`` (plain ldap:// unless told), the service password in a file
    the way an admin would keep it."""
    secret = secrets_dir / f"{name}-bind-password"
    secret.write_text(server.service_password + "\n")
    raw: dict[str, object] = {"name": name, "type": "ldap", "urls": [server.ldap_url], "base_dn": server.base_dn,
                              "bind_dn": server.service_dn, "bind_password_file": str(secret), "timeout": 3}
    raw.update(overrides)
    cfg, problems = parse_entry(raw, "test")
    assert cfg is not None, problems
    return cfg


_HELD: list[socket.socket] = []


def closed_port_url(scheme: str = "ldap") -> str:
    """A loopback URL nothing listens on: a directory server that is down. The port stays bound, not listening,
    for the session: a connection is refused, no other server can take the port, and it cannot become a
    connection's own source port (a TCP self-connect echoes the bind request back, as CI once saw)."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    _HELD.append(held)
    return f"{scheme}://127.0.0.1:{held.getsockname()[1]}"


def ldapmodify(url: str, ldif: str) -> None:
    """Change a directory the way its admin would (ldapmodify as the root DN), behind the bridge's back."""
    done = subprocess.run([LDAPMODIFY, "-x", "-H", url, "-D", ROOT_DN, "-w", ROOT_PW], input=ldif,
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ldapmodify failed: {done.stderr}")


class SlowProxy:
    """A TCP proxy to a real slapd that holds every request for ``delay`` seconds before passing it on (a slow
    directory: each operation answered, late). Answers flow back at once. ``stop()`` closes everything."""

    def __init__(self, upstream: str, delay: float) -> None:
        host, _, port = upstream.removeprefix("ldap://").partition(":")
        self._upstream = (host, int(port))
        self.delay = delay
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.url = f"ldap://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client = self._listener.accept()[0]
                server = socket.create_connection(self._upstream)
            except OSError:
                return
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, self.delay), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, 0.0), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while data := src.recv(65536):
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    @property
    def connections(self) -> int:
        """How many connections it has taken."""
        return len(self._sockets) // 2

    def stop(self) -> None:
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
