"""Readiness: the signing keys can be read, the database answers ``SELECT 1``, Redis (when ``IDP_REDIS_URL`` is
set) answers ``PING``, and every configured LDAP / AD directory has a server that accepts a connection and its
service bind (the probe ``idp directory test`` runs), each within a short timeout, checked at once. A directory
set to ``readiness: false`` is probed and shown, not counted.

Requests that arrive while a check runs share its answer: however many ask at once, a process probes each
dependency once at a time.

Failure details go to the log only: the endpoint is unauthenticated and a reason names hosts and accounts.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import redis
from flask import current_app
from sqlalchemy import text
from sqlalchemy.engine import Engine

from idp.authn.connectors import bind_passwords, chain
from idp.authn.connectors.ad import open_directory
from idp.authn.connectors.chain import Configured
from idp.authn.connectors.settings import DirectoryConfig
from idp.errors import DirectoryUnavailable, first_line
from idp.extensions import db
from idp.keys import EC, RSA, KeyError_
from idp.runtime import keystore, settings
from idp.state import redis_client

log = logging.getLogger(__name__)

# Seconds a dependency gets to answer; a kubelet's probe timeout must be longer than twice this (the database
# and Redis are asked before the directories, which are listed in the database).
TIMEOUT = 2.0
OK, ERROR = "ok", "error"


@dataclass(frozen=True)
class Readiness:
    database: str
    directories: dict[str, str] = field(default_factory=dict)
    redis: str | None = None  # None: not configured, state lives in the database
    uncounted: frozenset[str] = frozenset()  # directories set to ``readiness: false``: shown, not counted
    keys: str = OK

    @property
    def ready(self) -> bool:
        return (self.keys == OK and self.database == OK and self.redis in (OK, None)
                and all(v == OK for name, v in self.directories.items() if name not in self.uncounted))


@dataclass
class _Flight:
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: Future[Readiness] | None = None


_FLIGHT = "idp.readiness"


def check() -> Readiness:
    """The answer of the check running now in this process, or of a new one."""
    flight: _Flight = current_app.extensions.setdefault(_FLIGHT, _Flight())
    with flight.lock:
        running, leads = flight.running, flight.running is None
        if running is None:
            running = flight.running = Future()
    if not leads:
        return running.result()
    try:
        running.set_result(_check())
    except BaseException as exc:
        running.set_exception(exc)
    finally:
        with flight.lock:
            flight.running = None
    return running.result()


def _check() -> Readiness:
    engine = db.engine
    stores: dict[str, Callable[[], None]] = {"database": lambda: _select_one(engine)}
    client = redis_client()
    if client is not None:
        stores["redis"] = lambda: _ping(client)
    found = _within(TIMEOUT, stores)
    database = found["database"]
    # Directories added with `idp directory add` are listed in the database: without it, those of IDP_CONFIG.
    items = chain.configured() if database == OK else [
        Configured(c, None, "IDP_CONFIG", c.name) for c in settings().directories]
    # Each server of a directory on its own, side by side: the directory is up while any of them is (failover),
    # and a dead first server must not use up the time the others have.
    probes: dict[str, Callable[[], None]] = {}
    servers: dict[str, list[str]] = {}
    for item in items:
        if item.cfg is not None and item.cfg.type == "local":
            continue
        for label, probe in _directory_probes(item):
            probes[label] = probe
            servers.setdefault(item.name, []).append(label)
    answered = _within(TIMEOUT + 0.5, probes) if probes else {}
    directories = {name: OK if any(answered[label] == OK for label in labels) else ERROR
                   for name, labels in servers.items()}
    uncounted = frozenset(i.name for i in items if i.name in directories
                          and not (i.cfg.readiness if i.cfg is not None else i.counted))
    return Readiness(database, directories, found.get("redis"), uncounted, _keys())


def _keys() -> str:
    """Whether both rings still read: a generated ring's manifest or key files removed or damaged on disk fail
    every signature. (Key files of the operator's replaced by bad ones leave the key in use: no failure.)"""
    try:
        for kind in (RSA, EC):
            store = keystore(kind)
            if not store.external:  # the operator's files, if replaced by bad ones, leave the key in use
                store.signing_key()
    except KeyError_ as exc:
        log.warning("readiness: keys: %s", exc)
        return ERROR
    return OK


def _select_one(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _ping(client: redis.Redis) -> None:
    client.ping()


def _directory_probes(item: Configured) -> list[tuple[str, Callable[[], None]]]:
    """(label, a function that raises unless that server answers) for each server of the directory; settings
    are read here, in the request."""
    cfg = item.cfg
    if cfg is None:
        problems = "; ".join(item.problems)
        return [(item.name, lambda: _fail(f"directory {item.name} is misconfigured: {problems}"))]
    try:
        password = bind_passwords.bind_password(cfg, item.encrypted)
    except DirectoryUnavailable as exc:
        reason = exc.reason
        return [(item.name, lambda: _fail(reason))]
    short = dataclasses.replace(cfg, timeout=min(cfg.timeout, TIMEOUT))
    if len(cfg.urls) == 1:
        return [(item.name, lambda: _probe(short, password))]
    return [(f"{item.name} ({url})", functools.partial(_probe, dataclasses.replace(short, urls=(url,)), password))
            for url in cfg.urls]


def _probe(cfg: DirectoryConfig, password: str | None) -> None:
    directory = open_directory(cfg, password)
    try:
        ((url, error),) = directory.probe()
    finally:
        directory.close()
    if error is not None:
        _fail(f"{url}: {error}")


def _fail(reason: str) -> None:
    raise DirectoryUnavailable("unavailable", reason)


def _within(seconds: float, checks: dict[str, Callable[[], None]]) -> dict[str, str]:
    """Run the checks side by side; each is OK if it returned within ``seconds``. One still running then
    counts as an error and is left to end at its own timeout, on a daemon thread that holds up no exit."""
    done: dict[str, BaseException | None] = {}

    def run(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
            done[name] = None
        except Exception as exc:  # any failure means not ready; logged below
            done[name] = exc

    threads = [threading.Thread(target=run, args=item, name=f"idp-readyz-{item[0]}", daemon=True)
               for item in checks.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + seconds
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    out: dict[str, str] = {}
    for name in checks:
        if name not in done:
            log.warning("readiness: %s did not answer within %g s", name, seconds)
            out[name] = ERROR
            continue
        exc = done[name]
        if exc is None:
            out[name] = OK
            continue
        detail = exc.reason if isinstance(exc, DirectoryUnavailable) else first_line(exc)
        log.warning("readiness: %s failed: %s", name, detail or type(exc).__name__)
        out[name] = ERROR
    return out
