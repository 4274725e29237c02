"""Login throttling: failure counters per username and per client address, with a temporary lockout.

The counters live in :mod:`idp.state.counters` (Redis or the database), so every worker process and every
host behind a load balancer sees the same counts.

A user has two counters: the typed name, folded so that the spellings a directory treats as one name count
as one (NFKC makes full-width letters plain, casefold ignores case; the caller strips a routed domain), and,
once a connector has found the user, the user themselves ("subject": source and stable id), which no
spelling escapes.
"""

from __future__ import annotations

import unicodedata
from datetime import timedelta

from idp.clock import now
from idp.runtime import settings
from idp.state import counters


def fold(username: str) -> str:
    """The typed name as the lockout counts it."""
    return unicodedata.normalize("NFKC", username).casefold().strip()


def user_key(username: str) -> str:
    return "user:" + fold(username)[:300]


def subject_key(subject: str) -> str:
    return "subject:" + subject[:300]


def ip_key(client_ip: str | None) -> str:
    return "ip:" + (client_ip or "unknown")[:64]


def is_locked(username: str, client_ip: str | None) -> bool:
    """True while the username or the address is locked out."""
    return locked(user_key(username), ip_key(client_ip))


def subject_locked(subject: str) -> bool:
    """True while the user a connector found (whatever name was typed) is locked out."""
    return locked(subject_key(subject))


def register_failure(username: str, client_ip: str | None, subject: str | None = None) -> list[str]:
    """Count one failed sign-in against the username, the address and (when a connector found the user) the
    subject. Returns the keys whose lockout starts with this failure (each lockout is reported once). Does
    not commit."""
    cfg = settings()
    started = []
    keyed = [(user_key(username), cfg.login_max_failures), (ip_key(client_ip), cfg.login_ip_max_failures)]
    if subject is not None:
        keyed.append((subject_key(subject), cfg.login_max_failures))
    for key, limit in keyed:
        if _count(key, limit):
            started.append(key)
    _collect()
    return started


def locked(*keys: str) -> bool:
    """True while any of ``keys`` is locked out: the same counters for other guessable inputs than
    passwords (OIDC device user codes), under keys of their own."""
    return counters.locked(list(keys), now())


def count_failure(key: str, limit: int) -> bool:
    """Count one failure against ``key``; True when this failure starts its lockout. Does not commit."""
    started = _count(key, limit)
    _collect()
    return started


def _count(key: str, limit: int) -> bool:
    cfg = settings()
    limits = counters.Limits(limit, timedelta(seconds=cfg.login_failure_window_seconds),
                             timedelta(seconds=cfg.login_lockout_seconds))
    return counters.count(key, limits, now())


def _collect() -> None:
    # Last in the transaction: it locks the stale rows it deletes and then waits for no other row.
    counters.collect(now(), timedelta(seconds=settings().login_failure_window_seconds))


def reset_user(username: str, subject: str | None = None) -> None:
    """A successful sign-in clears the username's and the subject's counters (not the address's: one good
    account must not let an address keep guessing others). Does not commit."""
    keys = [user_key(username)] + ([subject_key(subject)] if subject is not None else [])
    counters.reset(keys)
