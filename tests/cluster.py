"""Several `idp serve` instances behind Debian's haproxy (round-robin, no stickiness), set up as deploy/README.md
tells operators: one database (and one Redis when given), one signing key and certificate, one Flask secret
key, IDP_BASE_URL the load balancer's address, one trusted proxy hop, and a data dir of their own each.
Which instance served a request is read from each instance's gunicorn access log.

Import as ``from cluster import serve_cluster, traced`` (pytest puts tests/ on sys.path through conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from helpers import Served, free_port, idp_process, wait_listening

from idp.keys import EC, generate_key_pair

# gunicorn's access line as `idp serve` writes it: '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'
_ACCESS = re.compile(r'^\S+ "([A-Z]+) (\S+)" (\d{3}) ', re.MULTILINE)


@dataclass
class Cluster:
    url: str  # haproxy's, the IDP_BASE_URL of every instance
    instances: dict[str, Served]

    def other(self, name: str) -> Served:
        (other,) = (s for n, s in self.instances.items() if n != name)
        return other


def access_lines(served: Served) -> list[tuple[str, str]]:
    """(method, path) of each request the instance answered, in order."""
    return [(method, path) for method, path, _ in _ACCESS.findall(served.output())]


def wait_for_access(served: Served, wanted: tuple[str, str], after: int) -> None:
    """Wait until the instance's access log shows ``wanted`` (method, path) past its first ``after`` lines:
    gunicorn writes the line just after the response."""
    deadline = time.monotonic() + 5
    while wanted not in access_lines(served)[after:]:
        assert time.monotonic() < deadline, f"{wanted} is not in the access log of {served.url}"
        time.sleep(0.05)


def access_statuses(served: Served) -> list[tuple[str, str, int]]:
    """(method, path, status) of each request the instance answered, in order."""
    return [(method, path, int(status)) for method, path, status in _ACCESS.findall(served.output())]


@dataclass
class Trace:
    """A requests response hook noting which instance's access log shows each request the session sent.
    Requests are sequential, so the first unseen line for the same method and path is this one."""

    cluster: Cluster
    hops: list[tuple[str, str, str]] = field(default_factory=list)  # (instance, method, path)
    seen: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seen = {name: len(access_lines(s)) for name, s in self.cluster.instances.items()}

    def __call__(self, resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        wanted = (str(resp.request.method), urlsplit(resp.request.url).path)
        deadline = time.monotonic() + 5  # gunicorn writes the line just after the response
        while True:
            for name, served in self.cluster.instances.items():
                lines = access_lines(served)
                for i in range(self.seen[name], len(lines)):
                    if lines[i] == wanted:
                        self.seen[name] = i + 1
                        self.hops.append((name, *wanted))
                        return
            assert time.monotonic() < deadline, f"{wanted} is in no instance's access log"
            time.sleep(0.05)

    def instances(self) -> list[str]:
        return [name for name, _, _ in self.hops]


def traced(cluster: Cluster) -> tuple[requests.Session, Trace]:
    http = requests.Session()
    trace = Trace(cluster)
    http.hooks["response"].append(trace)
    return http, trace


def alternates(names: list[str]) -> bool:
    return len(set(names)) == 2 and all(a != b for a, b in pairwise(names))


@contextmanager
def haproxy(port: int, backends: list[int], folder: Path) -> Iterator[str]:
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    servers = "\n".join(f"    server idp{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    config = folder / "haproxy.cfg"
    config.write_text(f"""\
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option forwardfor

frontend bridge
    bind 127.0.0.1:{port}
    default_backend instances

backend instances
    balance roundrobin
{servers}
""")
    log = folder / "haproxy.log"
    with open(log, "wb") as out, subprocess.Popen([binary, "-db", "-f", str(config)],
                                                  stdout=out, stderr=subprocess.STDOUT) as proc:
        try:
            wait_listening(port, proc, log, "haproxy")
            # Listening could be someone else on that port (haproxy then exits: "cannot bind socket").
            time.sleep(0.2)
            assert proc.poll() is None, log.read_text(errors="replace")
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


@contextmanager
def serve_cluster(folder: Path, signing_files: tuple[Path, Path], database_url: str, redis_url: str | None = None,
                  workers: int = 1) -> Iterator[Cluster]:
    """Instances a and b, each ``idp serve`` with ``workers`` gunicorn workers, behind haproxy; their data
    dirs, logs, shared secret key and EC key under ``folder``, on a database migrated already."""
    secret = folder / "secret_key"
    secret.write_text(os.urandom(32).hex())
    secret.chmod(0o600)
    # The EC key too (ES256 ID tokens): each data dir would make its own, which the instances warn of.
    ec_key = folder / "ec.key"
    ec_key.write_bytes(generate_key_pair("127.0.0.1", EC)[0])
    ec_key.chmod(0o600)
    lb_port, ports = free_port(), {"a": free_port(), "b": free_port()}
    env = {
        **os.environ,
        "IDP_DATABASE_URL": database_url,
        "IDP_BASE_URL": f"http://127.0.0.1:{lb_port}",
        "IDP_TRUSTED_PROXY_HOPS": "1",
        "IDP_SIGNING_KEY_FILE": str(signing_files[0]),
        "IDP_SIGNING_CERT_FILE": str(signing_files[1]),
        "IDP_EC_SIGNING_KEY_FILE": str(ec_key),
        "IDP_SECRET_KEY_FILE": str(secret),
        "IDP_WORKERS": str(workers),
        "IDP_LOG_FORMAT": "text",
    }
    env.pop("IDP_REDIS_URL", None)
    if redis_url:
        env["IDP_REDIS_URL"] = redis_url
    servers = {name: idp_process(["serve", "--bind", f"127.0.0.1:{port}"],
                                 {**env, "IDP_DATA_DIR": str(folder / name)}, port, folder / f"{name}.log")
               for name, port in ports.items()}
    with side_by_side(servers) as instances, haproxy(lb_port, list(ports.values()), folder) as url:
        yield Cluster(url, instances)


@contextmanager
def side_by_side(managers: Mapping[str, AbstractContextManager[Served]]) -> Iterator[dict[str, Served]]:
    """Enter the context managers at once, and exit them at once: a gunicorn takes seconds to start and to
    stop. Those entered are exited even when another failed to start."""
    with ThreadPoolExecutor(len(managers)) as pool:
        started = {name: pool.submit(cm.__enter__) for name, cm in managers.items()}
    entered = {name: f.result() for name, f in started.items() if f.exception() is None}
    try:
        for f in started.values():
            f.result()  # raises the first failure to start
        yield entered
    finally:
        with ThreadPoolExecutor(len(managers)) as pool:
            stopped = [pool.submit(managers[name].__exit__, None, None, None) for name in entered]
        for done in stopped:
            done.result()
