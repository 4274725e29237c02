"""A real Samba Active Directory domain controller for the tests, provisioned once per session.

``samba-tool domain provision`` into a temporary folder (about 5 s here), the domain's users and groups
written offline into its sam.ldb with samba-tool (no Kerberos or NTLM needed), then ``samba`` as our own
child with only its LDAP service. Samba has no setting for its LDAP ports, so it listens on 127.0.0.1:389
(ldap, StartTLS) and 636 (ldaps); the fixture refuses to start if something else holds them. Its
generated certificate names ``DC1.example.test`` (CN only, no SAN), so the tests connect to 127.0.0.1 and
verify against that name with ``tls_server_name``.

The domain: alice in engineers, engineers in rnd, rnd in staff (three levels); bob in staff; dave disabled;
erin must change her password; frank's account has expired; gina is locked out (the fixture makes the bad
binds); hank is a test's to change (his account expires while he is signed in); bridge is the service account
the bridge searches with.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from idp.authn.connectors.settings import DirectoryConfig, parse_entry

SAMBA = shutil.which("samba") or "/usr/sbin/samba"
SAMBA_TOOL = shutil.which("samba-tool") or "/usr/bin/samba-tool"
REALM, DOMAIN = "EXAMPLE.TEST", "EXAMPLE"
BASE_DN = "DC=example,DC=test"
DC_NAME = "DC1.example.test"
ADMIN_PW = "Admin-Pw-1234!"
SERVICE_PW = "bridge-service-pw"
# Failed binds before Samba locks an account (gina gets them); the other tests stay well below it.
LOCKOUT_THRESHOLD = 5
NESTED = ("engineers", "rnd", "staff")


@dataclass(frozen=True)
class SambaAd:
    ldap_url: str
    ldaps_url: str
    ca_file: Path
    base_dn: str = BASE_DN
    service_dn: str = f"CN=bridge,CN=Users,{BASE_DN}"
    service_password: str = SERVICE_PW
    server_name: str = DC_NAME
    realm: str = REALM
    domain: str = DOMAIN


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _tool(*args: str, sam: Path | None = None, timeout: float = 120) -> None:
    command = [SAMBA_TOOL, *args, *(["-H", str(sam)] if sam else [])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        # The command line has only fixture passwords; the output is what explains the failure.
        raise RuntimeError(f"{' '.join(command[:4])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _provision(d: Path) -> Path:
    target = d / "dc"
    _tool("domain", "provision", "--use-rfc2307", f"--realm={REALM}", f"--domain={DOMAIN}", "--server-role=dc",
          "--dns-backend=NONE", f"--targetdir={target}", "--host-ip=127.0.0.1", "--host-name=dc1",
          f"--adminpass={ADMIN_PW}", "--option=interfaces = 127.0.0.1", "--option=bind interfaces only = yes",
          # Like a default AD: simple binds on 389 are allowed (the tests use TLS anyway).
          "--option=ldap server require strong auth = no",
          # Only LDAP: no DNS, Kerberos, SMB or RPC ports taken, faster start.
          "--option=server services = ldap", f"--option=log file = {d}/samba.%m.log")
    sam = target / "private" / "sam.ldb"
    _tool("domain", "passwordsettings", "set", "--complexity=off", "--min-pwd-length=1", "--history-length=0",
          "--min-pwd-age=0", "--max-pwd-age=0", f"--account-lockout-threshold={LOCKOUT_THRESHOLD}", sam=sam)
    _tool("user", "create", "bridge", SERVICE_PW, "--use-username-as-cn", sam=sam)
    # alice's CN is her full name (samba-tool's default), unlike her sAMAccountName: the DN is looked up.
    _tool("user", "create", "alice", "alice-pw", "--given-name=Alice", "--surname=Liddell",
          "--mail-address=alice@example.test", sam=sam)
    for user in ("bob", "dave", "frank", "gina", "hank"):
        _tool("user", "create", user, f"{user}-pw", "--use-username-as-cn", sam=sam)
    _tool("user", "create", "erin", "erin-pw", "--use-username-as-cn", "--must-change-at-next-login", sam=sam)
    _tool("user", "disable", "dave", sam=sam)
    _tool("user", "setexpiry", "frank", "--days=0", sam=sam)
    for group in ("staff", "rnd", "engineers"):
        _tool("group", "add", group, sam=sam)
    _tool("group", "addmembers", "staff", "rnd,bob", sam=sam)
    _tool("group", "addmembers", "rnd", "engineers", sam=sam)
    _tool("group", "addmembers", "engineers", "alice", sam=sam)
    return target


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, ca_file: Path) -> None:
    """Until a TLS handshake on 636 succeeds (Samba writes its certificate at first start)."""
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"samba exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        if ca_file.is_file() and _port_busy(389):
            try:
                ctx = ssl.create_default_context(cafile=str(ca_file))
                with socket.create_connection(("127.0.0.1", 636), timeout=2) as raw, \
                        ctx.wrap_socket(raw, server_hostname=DC_NAME):
                    return
            except (OSError, ssl.SSLError):
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"samba did not answer on 389/636:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def _lock_out(server: SambaAd, dn: str) -> None:
    import ldap3

    tls = ldap3.Tls(ca_certs_file=str(server.ca_file), validate=ssl.CERT_NONE)
    target = ldap3.Server("127.0.0.1", port=636, use_ssl=True, tls=tls, get_info=ldap3.NONE)
    for _ in range(LOCKOUT_THRESHOLD):
        conn = ldap3.Connection(target, user=dn, password="wrong", raise_exceptions=False)
        try:
            conn.bind()
        finally:
            conn.unbind()


@pytest.fixture(scope="session")
def samba_ad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaAd]:
    """The session's domain controller. No samba skips the test on a laptop and fails it in CI."""
    if os.environ.get("IDP_TEST_DATABASE_URL"):
        # tests/run runs the SQLite and PostgreSQL passes at once, and Samba's ports are fixed: one pass has it.
        pytest.skip("the SQLite pass runs it (Samba's LDAP ports are fixed; the passes run at once)")
    if not (os.access(SAMBA, os.X_OK) and os.access(SAMBA_TOOL, os.X_OK)):
        _unavailable("samba not installed (apt-get install samba samba-ad-dc samba-ad-provision "
                     "samba-dsdb-modules winbind krb5-user ldb-tools)")
    if os.geteuid() != 0:
        _unavailable("a Samba domain controller must run as root")
    if _port_busy(389) or _port_busy(636):
        _unavailable("127.0.0.1:389 or :636 is in use (Samba's LDAP ports cannot be changed)")
    d = tmp_path_factory.mktemp("samba-ad")
    target = _provision(d)
    log = d / "samba.out"
    with open(log, "wb") as out:
        # -F: foreground, our child; --no-process-group: stays in the test run's group, stopped with it.
        proc = subprocess.Popen([SAMBA, "-s", str(target / "etc" / "smb.conf"), "-F", "--no-process-group"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        ca_file = target / "private" / "tls" / "ca.pem"
        _wait_ready(proc, log, ca_file)
        server = SambaAd(ldap_url="ldap://127.0.0.1", ldaps_url="ldaps://127.0.0.1", ca_file=ca_file)
        _lock_out(server, f"CN=gina,CN=Users,{BASE_DN}")
        yield server
    finally:
        proc.terminate()  # the master stops its worker processes
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def ad_config(server: SambaAd, secrets_dir: Path, name: str = "dc", **overrides: object) -> DirectoryConfig:
    """A validated ``ad`` directory for ``server`` over LDAPS, the certificate checked against the DC's CA
    and name, the service password in a file."""
    secret = secrets_dir / f"{name}-bind-password"
    secret.write_text(server.service_password + "\n")
    raw: dict[str, object] = {"name": name, "type": "ad", "urls": [server.ldaps_url], "base_dn": server.base_dn,
                              "bind_dn": server.service_dn, "bind_password_file": str(secret),
                              "ca_file": str(server.ca_file), "tls_server_name": server.server_name,
                              "domains": [server.domain, server.realm], "timeout": 5}
    raw.update(overrides)
    cfg, problems = parse_entry(raw, "test")
    assert cfg is not None, problems
    return cfg
