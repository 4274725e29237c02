"""SimpleSAMLphp's IdP (Debian's simplesamlphp package) under Apache with mod_php, the SAML benchmarks' peer.

Apache runs from a config of its own in the benchmark's temp dir (`apache2 -f`, its own ServerRoot, PidFile and
loopback Listen; the system's /etc/apache2 is not read), prefork with a pool sized for the clients, keep-alive on
and an access log, as a production site would be. SimpleSAMLphp reads its config dir from
SIMPLESAMLPHP_CONFIG_DIR, set with Apache's SetEnv (1.19's Utils\\Config::getConfigDir reads it with getenv,
which mod_php answers from the request's environment); it logs to a file at NOTICE with statistics, keeps
sessions in PHP's session files and compiled Twig templates in a cache (its documented production settings).
The hosted IdP signs the assertion and the response with the benchmark's key (RSA-2048, RSA-SHA256) and sends
a persistent NameID (saml:PersistentNameID over uid), as the bridge does.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import SigningKey, run, start_server, stop, tail

APACHE = shutil.which("apache2") or "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")
SSP_ROOT = Path("/usr/share/simplesamlphp")
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


@dataclass(frozen=True)
class Php:
    """A PHP expression written as is (a constant) rather than as a string."""

    code: str


def php(value: object) -> str:
    """A PHP literal for a Python value: config files are generated, never templated by hand."""
    if isinstance(value, Php):
        return value.code
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(php(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{php(k)} => {php(v)}" for k, v in value.items()) + "]"
    raise TypeError(f"no PHP literal for {type(value).__name__}")


@dataclass(frozen=True)
class UserPass:
    """exampleauth:UserPass: one user whose password is in the config (SimpleSAMLphp hashes nothing here)."""

    username: str
    password: str

    def authsource(self) -> dict[int | str, object]:
        attributes = {"uid": [self.username], "mail": [f"{self.username}@bench.example"], "givenName": ["Bench"],
                      "sn": ["User"], "displayName": ["Bench User"]}
        return {0: "exampleauth:UserPass", f"{self.username}:{self.password}": attributes}


@dataclass(frozen=True)
class Ldap:
    """ldap:LDAP, search-then-bind with the same service account the bridge uses."""

    url: str
    base_dn: str
    service_dn: str
    service_password: str

    def authsource(self) -> dict[int | str, object]:
        return {0: "ldap:LDAP", "hostname": self.url, "enable_tls": False, "timeout": 5,
                "attributes": ["uid", "mail", "cn", "givenName", "sn", "displayName", "memberOf"],
                "search.enable": True, "search.base": self.base_dn, "search.attributes": ["uid"],
                "search.username": self.service_dn, "search.password": self.service_password}


HTTPD_CONF = """\
ServerRoot "{dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {dir}/run/httpd.pid
DefaultRuntimeDir {dir}/run
Mutex file:{dir}/run default
ErrorLog {dir}/log/error.log
LogLevel warn
{user}
LoadModule mpm_prefork_module {modules}/mod_mpm_prefork.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule alias_module {modules}/mod_alias.so
LoadModule env_module {modules}/mod_env.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule php_module {modules}/libphp8.2.so
TypesConfig /etc/mime.types

StartServers {pool}
MinSpareServers {pool}
MaxSpareServers {max_spare}
ServerLimit {max_workers}
MaxRequestWorkers {max_workers}
MaxConnectionsPerChild 0
KeepAlive On
KeepAliveTimeout 5

LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
CustomLog {dir}/log/access.log common

SetEnv SIMPLESAMLPHP_CONFIG_DIR {dir}/config
Alias /simplesaml {ssp}/www
<Directory {ssp}/www>
    Require all granted
    <FilesMatch "\\.php$">
        SetHandler application/x-httpd-php
    </FilesMatch>
</Directory>
"""


class SimpleSamlPhp:
    def __init__(self, directory: Path, key: SigningKey, sp_entity_id: str, acs_url: str, source: UserPass | Ldap,
                 clients: int, slapd_pid: int | None = None) -> None:
        self.dir = directory
        self.slapd_pid = slapd_pid
        self.port = 0  # chosen at start
        self.key, self.sp_entity_id, self.acs_url, self.source = key, sp_entity_id, acs_url, source
        # Prefork: every client connection (keep-alive) holds a child; spares so none waits for a fork.
        self.pool = max(4, clients + 2)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/simplesaml"

    @property
    def sso_url(self) -> str:
        return f"{self.base}/saml2/idp/SSOService.php"

    @staticmethod
    def version() -> str:
        out = run(["dpkg-query", "-W", "-f=${Version}", "simplesamlphp"])
        return out.strip() or "?"

    def _write_config(self) -> None:
        d = self.dir
        for sub in ("config", "metadata", "cert", "run", "log", "sessions", "scratch", "data", "twig"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(self.key.key_file, d / "cert" / "idp.key")
        shutil.copy(self.key.cert_file, d / "cert" / "idp.crt")
        config = {
            "baseurlpath": f"{self.base}/",
            "certdir": f"{d}/cert/", "loggingdir": f"{d}/log/", "datadir": f"{d}/data/", "tempdir": f"{d}/scratch",
            "metadatadir": f"{d}/metadata/",
            "technicalcontact_name": "Benchmark", "technicalcontact_email": "bench@example.org",
            "secretsalt": secrets.token_hex(16), "auth.adminpassword": secrets.token_hex(16),
            "admin.protectindexpage": True, "admin.protectmetadata": False, "admin.checkforupdates": False,
            "enable.saml20-idp": True,
            "showerrors": False, "errorreporting": False,
            "logging.level": Php("SimpleSAML\\Logger::NOTICE"), "logging.handler": "file",
            "logging.logfile": "simplesamlphp.log",
            "statistics.out": [{"class": "core:Log", "level": "notice"}],
            "store.type": "phpsession", "session.phpsession.savepath": f"{d}/sessions",
            "session.cookie.secure": False, "session.cookie.samesite": "Lax", "language.cookie.secure": False,
            "module.enable": {"exampleauth": True, "core": True, "saml": True, "ldap": True},
            "production": True, "template.auto_reload": False, "template.cache": f"{d}/twig",
        }
        (d / "config" / "config.php").write_text(f"<?php\n$config = {php(config)};\n")
        (d / "config" / "authsources.php").write_text(
            f"<?php\n$config = {php({'admin': ['core:AdminPassword'], 'bench': self.source.authsource()})};\n")
        idp = {
            "host": "__DEFAULT__", "privatekey": "idp.key", "certificate": "idp.crt", "auth": "bench",
            "saml20.sign.assertion": True, "saml20.sign.response": True,
            "signature.algorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "NameIDFormat": PERSISTENT,
            "authproc": {10: {"class": "saml:PersistentNameID", "attribute": "uid"}},
        }
        (d / "metadata" / "saml20-idp-hosted.php").write_text(
            f"<?php\n$metadata['{self.base}/saml2/idp/metadata.php'] = {php(idp)};\n")
        sp = {"AssertionConsumerService": [{"Binding": "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST",
                                            "Location": self.acs_url, "index": 0}],
              "NameIDFormat": PERSISTENT}
        (d / "metadata" / "saml20-sp-remote.php").write_text(
            f"<?php\n$metadata[{php(self.sp_entity_id)}] = {php(sp)};\n")
        as_root = os.geteuid() == 0
        (d / "httpd.conf").write_text(HTTPD_CONF.format(
            dir=d, port=self.port, modules=MODULES, ssp=SSP_ROOT, pool=self.pool, max_spare=2 * self.pool,
            max_workers=4 * self.pool, user="User www-data\nGroup www-data" if as_root else ""))
        if as_root:
            # Apache's children run as www-data: they read the config and key, and write logs, sessions, caches.
            for parent in d.parents:
                mode = stat.S_IMODE(parent.stat().st_mode)
                if mode & 0o011 != 0o011:
                    parent.chmod(mode | 0o011)
            for path in [d, *d.rglob("*")]:
                shutil.chown(path, "www-data", "www-data")

    def start(self) -> None:
        def launch(port: int) -> subprocess.Popen[bytes]:
            self.port = port
            self._write_config()
            with open(self.dir / "log" / "apache.out", "ab") as out:
                # A session of its own: prefork's shutdown signals its whole process group, which would be ours.
                return subprocess.Popen([APACHE, "-f", str(self.dir / "httpd.conf"), "-DFOREGROUND"],
                                        stdout=out, stderr=subprocess.STDOUT, env={"PATH": os.environ["PATH"]},
                                        start_new_session=True)

        self.proc, _ = start_server("apache2 (SimpleSAMLphp)", self.dir / "log" / "apache.out", launch)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def cpu_roots(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid] + ([self.slapd_pid] if self.slapd_pid else [])

    def logs(self) -> str:
        return tail(self.dir / "log" / "error.log") + "\n" + tail(self.dir / "log" / "simplesamlphp.log")

    def describe(self) -> str:
        return "apache2 master + prefork children running PHP" + (", slapd" if self.slapd_pid else "")

    def label(self) -> str:
        return f"SimpleSAMLphp {self.version()} (Apache prefork, mod_php, pool {self.pool}-{4 * self.pool})"
