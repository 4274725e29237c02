"""A real OpenLDAP slapd for the LDAP benchmarks, shared by the bridge and its peer: our child process with a
throwaway config on a free loopback port (plain ldap://: both sides bind the same way), seeded with ldapadd
from the test suite's directory (tests/fixtures/directory.ldif: alice / alice-pw and her nested groups).
The access rules are the test suite's: the service account reads, users bind."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness import REPO, run, start_server, stop

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
LDAPADD = shutil.which("ldapadd") or "/usr/bin/ldapadd"
FIXTURE = REPO / "tests" / "fixtures" / "directory.ldif"
SUFFIX = "dc=example,dc=test"
ROOT_DN, ROOT_PW = f"cn=admin,{SUFFIX}", "root-secret"
USER, PASSWORD = "alice", "alice-pw"

CONFIG = """\
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
loglevel none

database mdb
maxsize 33554432
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_pw}
directory {dir}/db
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="{service_dn}" read by self read by * none
overlay memberof
memberof-refint TRUE
overlay refint
refint_attributes member uniqueMember
"""


@dataclass
class Slapd:
    proc: subprocess.Popen[bytes]
    url: str
    base_dn: str = SUFFIX
    service_dn: str = f"cn=bridge,ou=services,{SUFFIX}"
    service_password: str = "bridge-service-pw"  # noqa: S105 (the fixture's service account)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        stop(self.proc)


def start_slapd(directory: Path) -> Slapd:
    directory.mkdir()
    (directory / "db").mkdir()
    (directory / "slapd.conf").write_text(CONFIG.format(dir=directory, suffix=SUFFIX, root_dn=ROOT_DN,
                                                        root_pw=ROOT_PW, service_dn=f"cn=bridge,ou=services,{SUFFIX}"))
    log = directory / "slapd.log"

    def launch(port: int) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            # -d 0: in the foreground (our child), no debug output.
            return subprocess.Popen([SLAPD, "-f", str(directory / "slapd.conf"), "-h", f"ldap://127.0.0.1:{port}/",
                                     "-d", "0"], stdout=out, stderr=subprocess.STDOUT)

    proc, port = start_server("slapd", log, launch)
    url = f"ldap://127.0.0.1:{port}"
    server = Slapd(proc, url)
    try:
        run([LDAPADD, "-x", "-H", url, "-D", ROOT_DN, "-w", ROOT_PW, "-f", str(FIXTURE)])
    except BaseException:
        server.stop()
        raise
    return server
