"""Instances that share a database must share their secrets: IDP_SECRET_KEY (session cookies, CSRF tokens, device
codes and the stored directory passwords depend on it) and the signing keys (a service provider or client trusts
the keys in the metadata or JWKS it fetched from one of them). Given different ones, behind a round-robin load
balancer every other request fails, in ways that look like anything but this.

So each ``idp serve`` announces itself in the database, at start and with each readiness check (at most every
EVERY seconds a process): a random id, its host, an HMAC of a fixed text with its secret key, and the keys it signs
with and publishes. It compares itself with the instances seen in the last LIVE minutes and logs a warning, once
per process, instance and difference, saying what differs and what to do. Readiness is not changed: a new secret or new
key files roll through the instances one at a time, and taking them out of the load balancer would stall that.
Keys rotated with ``idp keys rotate`` raise nothing: each key is published before it signs, and after.
"""

from __future__ import annotations

import functools
import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Flask, Response, current_app
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from idp import clock
from idp.errors import first_line
from idp.extensions import db
from idp.keys import EC, RSA, KeyError_
from idp.observers import Observers
from idp.runtime import keyed_digest, keystore
from idp.state import changed
from idp.store import InstanceRow

log = logging.getLogger(__name__)

LIVE = timedelta(minutes=10)  # an instance not seen for this long is not compared with
FORGET = timedelta(days=1)  # nor kept
EVERY = 30.0  # seconds between a process's announcements
_T = InstanceRow.__table__
_COLUMNS = (_T.c.id, _T.c.host, _T.c.secret_check, _T.c.signing_keys, _T.c.published_keys)  # an Instance's
_STATE = "idp.instance"
# Told the kind (SECRET or KEYS) of each difference as it is first logged (idp.ops.metrics counts them).
_observers: Observers[Callable[[str], None]] = Observers("instance difference observer")


def watch(observer: Callable[[str], None]) -> None:
    _observers.add(observer)


@dataclass
class _State:
    id: str = field(default_factory=lambda: secrets.token_hex(8))  # forked workers keep their master's
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: float | None = None
    warned: set[tuple[str, str, str]] = field(default_factory=set)  # (instance, about, detail) logged


@dataclass(frozen=True)
class Instance:
    id: str
    host: str
    secret_check: str
    signing_keys: str
    published_keys: str

    def signs_unpublished_by(self, other: Instance) -> list[str]:
        return sorted(set(self.signing_keys.split()) - set(other.published_keys.split()))


SECRET, KEYS = "secret", "keys"
_SAID = {SECRET: "secret key", KEYS: "keys"}


@dataclass(frozen=True)
class Difference:
    about: str  # SECRET or KEYS
    detail: str  # what exactly differs: a new difference of the same kind is told too
    line: str  # said to the operator


def announce(*, force: bool = False) -> list[str]:
    """Record this instance as seen now, and say what sets it apart from the others seen lately, one line each;
    a line is logged as a warning the first time this process finds it. Nothing is done when this process
    announced less than EVERY seconds ago, unless ``force``. Never raises: a failure is a warning."""
    state = _state(current_app)
    return _announce(state) if _due(state, force) else []


def announce_after(response: Response) -> None:
    """:func:`announce`, when due, once ``response`` has been sent (the readiness answer): a slow database then
    delays or fails no readiness check."""
    app, state = current_app._get_current_object(), _state(current_app)  # type: ignore[attr-defined]
    if _due(state, False):
        def run() -> None:
            with app.app_context():
                _announce(state)

        response.call_on_close(run)


@dataclass(frozen=True)
class Seen:
    instance: Instance
    seen_at: datetime
    differences: list[str]  # what sets it apart from this process's settings: "secret key", "keys"


def seen() -> list[Seen]:
    """Every instance that announced itself in the last FORGET, newest first, compared with this process's own
    settings (``idp instances``, run where an instance runs, with its settings)."""
    me = _this("this command")
    rows = db.session.execute(select(*_COLUMNS, _T.c.seen_at).where(_T.c.seen_at >= clock.now() - FORGET)
                              .order_by(_T.c.seen_at.desc(), _T.c.id))
    out: list[Seen] = []
    for row in rows:
        other = Instance(*row[:-1])
        out.append(Seen(other, row.seen_at, [_SAID[d.about] for d in _differences(me, other)]))
    return out


def _state(app: Flask) -> _State:
    state: _State = app.extensions.setdefault(_STATE, _State())
    return state


def _due(state: _State, force: bool) -> bool:
    with state.lock:
        if not force and state.last is not None and time.monotonic() - state.last < EVERY:
            return False
        state.last = time.monotonic()
        return True


def _announce(state: _State) -> list[str]:
    try:
        me = _this(state.id)
        others = _seen_with(me)
    except IntegrityError:
        return []  # another worker of this instance made its row at the same moment, and compares
    except (SQLAlchemyError, KeyError_) as exc:
        # The database's and the keys' own uses say whether they work; this is no reason to fail a start.
        log.warning("could not announce this instance to the others: %s", first_line(exc))
        return []
    lines: list[str] = []
    for other in others:
        for difference in _differences(me, other):
            lines.append(difference.line)
            if (other.id, difference.about, difference.detail) not in state.warned:
                state.warned.add((other.id, difference.about, difference.detail))
                log.warning("%s", difference.line)
                _observers.tell(functools.partial(_tell, difference.about))
    return lines


def _tell(kind: str, observer: Callable[[str], None]) -> None:
    observer(kind)


def _seen_with(me: Instance) -> list[Instance]:
    """Store ``me`` as seen now; the other instances seen in the last LIVE."""
    t = clock.now()
    values = {"host": me.host, "secret_check": me.secret_check, "signing_keys": me.signing_keys,
              "published_keys": me.published_keys, "seen_at": t}
    with db.engine.begin() as conn:
        if not changed(conn.execute(update(_T).where(_T.c.id == me.id).values(values))):
            conn.execute(insert(_T).values(id=me.id, **values))
        conn.execute(delete(_T).where(_T.c.seen_at < t - FORGET))
        return [Instance(*row) for row in conn.execute(
            select(*_COLUMNS).where(_T.c.id != me.id, _T.c.seen_at >= t - LIVE).order_by(_T.c.id))]


def _this(instance_id: str) -> Instance:
    rings = {kind: keystore(kind).ring() for kind in (RSA, EC)}
    return Instance(
        instance_id, socket.gethostname(), keyed_digest("idp instance check"),
        " ".join(f"{kind}:{ring.active.jwk_kid}" for kind, ring in rings.items()),
        " ".join(f"{kind}:{key.jwk_kid}" for kind, ring in rings.items() for key in ring.published))


def _differences(me: Instance, other: Instance) -> list[Difference]:
    them = f"instance {other.id} on {other.host}"
    out: list[Difference] = []
    if other.secret_check != me.secret_check:
        out.append(Difference(
            SECRET, other.secret_check,
            f"{them} has another IDP_SECRET_KEY than this one ({me.id} on {me.host}): each refuses the session "
            "cookies, CSRF tokens and device codes of the other, and only one can read the stored directory "
            "passwords. Give every instance the same IDP_SECRET_KEY (or IDP_SECRET_KEY_FILE)."))
    unknown = other.signs_unpublished_by(me) + me.signs_unpublished_by(other)
    if unknown:
        out.append(Difference(
            KEYS, " ".join(unknown),
            f"{them} and this one ({me.id} on {me.host}) sign with keys the other does not publish "
            f"({', '.join(unknown)}): a service provider or client that fetched metadata or JWKS from one refuses the "
            "other's signatures. Give every instance the same keys (IDP_SIGNING_KEY_FILE and IDP_SIGNING_CERT_FILE, "
            "IDP_EC_SIGNING_KEY_FILE, or one shared IDP_DATA_DIR)."))
    return out
