"""Login throttling: failure counters per username and per client address, with a temporary lockout.

The counters live in :mod:`idp.state.counters` (Redis or the database), so every worker process and every
host behind a load balancer sees the same counts.

A user has two counters: the typed name, folded so that the spellings a directory treats as one name count
as one (NFKC makes full-width letters plain, casefold ignores case; the caller strips a routed domain), and,
once a connector has found the user, the user themselves ("subject": source and stable id), which no
spelling escapes. The client's address has a third, across names (a password spray). Each holds a try while
its password is checked (:func:`reserve`), so that tries sent at once see each other; only a failure counts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from idp.clock import now
from idp.errors import dependency_unavailable, first_line
from idp.extensions import db
from idp.runtime import settings
from idp.state import counters

log = logging.getLogger(__name__)
T = TypeVar("T")


def fold(username: str) -> str:
    """The typed name as the lockout counts it."""
    return unicodedata.normalize("NFKC", username).casefold().strip()


def user_key(username: str) -> str:
    return "user:" + fold(username)[:300]


def subject_key(subject: str) -> str:
    return "subject:" + subject[:300]


def ip_key(client_ip: str | None) -> str:
    return "ip:" + counted_address(client_ip)


def counted_address(client_ip: str | None) -> str:
    """The client's address as a per-address limit counts it: an IPv6 client by its /64 (one host, or one home,
    has the whole /64 to take a new address from for every try), an IPv4-mapped or NAT64 address as its IPv4, and
    without a port that a proxy may have appended ("192.0.2.1:51234", "[2001:db8::1]:443"). Text that is no
    address is counted as it is."""
    text = (client_ip or "unknown").strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        if address in _NAT64:  # an IPv4 client seen through a NAT64 gateway (RFC 6052): that client, not the /64
            return str(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def is_locked(username: str, client_ip: str | None) -> bool:
    """True while the username or the address is locked out."""
    return locked(user_key(username), ip_key(client_ip))


@dataclass(frozen=True)
class Reservation:
    """A try held in flight against the typed name, the user found or the address while its password is checked
    (:func:`reserve`, :func:`reserve_subject`, :func:`reserve_address`), under the key's limit."""

    key: str
    limit: int


def reserve(username: str) -> Reservation | None:
    """Hold one try against the typed name before its password is checked. Committed by the caller before the
    check, tries sent at once then see each other, and no more of them reach a password check than the limit
    allows (counted after the check, all of them were checked before the first was counted). None, holding
    nothing, while the name is locked out or its failures and tries in flight take the limit. A failure counts
    it (:func:`register_failure`); a success or a try never judged gives it back (:func:`release`)."""
    return _reserve(user_key(username), settings().login_max_failures)


def reserve_subject(subject: str) -> Reservation | None:
    """The same for the user a connector found, before their password goes to the directory: tries sent at once
    under several spellings of one name (CORP\\alice, OTHER\\alice, alice@corp.example) each have a name counter
    of their own, and only this one sees them all."""
    return _reserve(subject_key(subject), settings().login_max_failures)


def reserve_address(client_ip: str | None) -> Reservation | None:
    """The same for the client's address: one wrong password for each of many names, sent at once, reaches no
    more password checks than the address's limit. People signing in behind one address (an office's NAT) hold
    it only while their password is checked."""
    return _reserve(ip_key(client_ip), settings().login_ip_max_failures)


def reserve_keys(keyed: list[tuple[str, int]]) -> list[Reservation] | None:
    """The same under keys of the caller's, each under its limit, for other guessable inputs than passwords (OIDC
    device user codes): a try held against every key, or None, holding nothing, while any is locked out or full.
    In key order, as the counters are written (:func:`_in_order`)."""
    held: list[Reservation] = []
    for key, limit in sorted(keyed):
        reservation = _reserve(key, limit)
        if reservation is None:
            release(*held)
            return None
        held.append(reservation)
    return held


def _reserve(key: str, limit: int) -> Reservation | None:
    return Reservation(key, limit) if counters.reserve(key, _limits(limit), now()) else None


# The order in which a transaction writes several counters, whatever the order it reserved them in: concurrent
# sign-ins then lock the same rows in the same order on PostgreSQL, and cannot deadlock. Key order, as
# counters.reset deletes them: "ip:" < "subject:" < "user:".
def _in_order(reservations: tuple[Reservation, ...]) -> list[Reservation]:
    return sorted(reservations, key=lambda r: r.key)


def release(*reservations: Reservation) -> None:
    """Give back tries that were no failure: a success's, and those no directory judged (none could be asked, or
    the user found was locked out under another spelling). Does not commit."""
    for reservation in _in_order(reservations):
        counters.release(reservation.key)


def register_failure(*reservations: Reservation) -> list[str]:
    """A failed sign-in: each of its tries counts as a failure. Returns the keys whose lockout starts with it
    (each lockout is reported once). Then drops the counters whose window and lockout are over, last in the
    transaction (it deletes only rows nobody holds, and waits for no other row after it). Does not commit."""
    return _count([(r.key, r.limit) for r in _in_order(reservations)], reserved=True)


def in_transaction() -> bool:
    """True when the counters are written in the request's database transaction (and go with its rollback),
    False when Redis holds them (written at once)."""
    return counters.in_transaction()


def locked(*keys: str) -> bool:
    """True while any of ``keys`` is locked out: the same counters for other guessable inputs than
    passwords (OIDC device user codes), under keys of their own."""
    return counters.locked(list(keys), now())


def count_failures(keyed: list[tuple[str, int]]) -> list[str]:
    """Count one failure against each key, under its limit (always in the same order for one kind of input:
    concurrent failures then lock the same rows in the same order). Returns the keys whose lockout starts now.
    Then drops the counters whose window and lockout are over, last in the transaction: it deletes only rows
    nobody holds, and waits for no other row after it. Does not commit."""
    return _count(keyed, reserved=False)


def _count(keyed: list[tuple[str, int]], *, reserved: bool) -> list[str]:
    t = now()
    started = [key for key, limit in keyed
               if counters.count(key, _limits(limit), t, reserved=reserved) is counters.Count.STARTED]
    counters.collect(t, timedelta(seconds=settings().login_failure_window_seconds))
    return started


def _limits(failures: int) -> counters.Limits:
    cfg = settings()
    return counters.Limits(failures, timedelta(seconds=cfg.login_failure_window_seconds),
                           timedelta(seconds=cfg.login_lockout_seconds))


def succeeded(username: str, subject: str | None, *reservations: Reservation) -> None:
    """A successful sign-in, whose tries were no failures: the username's and the subject's counters are cleared
    (not the address's: one good account must not let an address keep guessing others), and the other tries it
    held (the address's) given back, first (key order). A failure counted by a concurrent request after this
    one read the counters may stay (counters.reset). Does not commit."""
    cleared = [user_key(username)] + ([subject_key(subject)] if subject is not None else [])
    release(*(r for r in reservations if r.key not in cleared))
    counters.reset(cleared)


def give_back(reservations: list[Reservation]) -> None:
    """Release reserved tries in a transaction of its own, as far as the failing dependency lets it (a rollback
    that fails on a lost database does not keep a try held in Redis)."""
    with contextlib.suppress(Exception):
        db.session.rollback()
    try:
        release(*reservations)
        db.session.commit()
    except Exception as exc:  # the caller raises the first failure again, which says more (and rolls back)
        log.warning("tries stay held until their window ends: %s", first_line(exc))


def settling(reserved: list[Reservation], settle: Callable[[], T]) -> T:
    """Run ``settle``, which settles the tries ``reserved`` (given back, cleared or counted as a failure) and
    commits. When the database is lost before that commit, the rollback takes the settlement with it: the tries
    are given back in a transaction of their own, as for a try never judged, rather than held against the name
    and the address until the window ends (a failover behind an office's NAT). In Redis the settlement was
    written at once and stands. Only for a lost dependency: a bug must not turn wrong passwords into uncounted
    ones. (A commit that the server applied but whose answer was lost is given back too: another request's try
    on the same key may then go unheld, once; no failure or lockout is undone.)"""
    try:
        return settle()
    except Exception as exc:
        if in_transaction() and dependency_unavailable(exc):
            give_back(reserved)
        raise
