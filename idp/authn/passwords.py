"""Password hashing (argon2id) and the password policy of the built-in directory."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import cache
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from idp.errors import BadRequest
from idp.observers import Observers
from idp.text import unstorable_text

T = TypeVar("T")

MIN_LENGTH = 8
# A bound keeps a hostile form post from making us hash megabytes.
MAX_LENGTH = 1024

# OWASP's argon2id setting (19 MiB, t=2, p=1): ~20 ms per hash. argon2-cffi's defaults cost ~7x more
# CPU, which would make password sign-in the bottleneck of the whole server (see performance.md).
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)


# Told the CPU seconds of every hash and verification (idp.ops.metrics is one): what the parameters cost here.
_observers: Observers[Callable[[float], None]] = Observers("password hash observer")


def watch(observer: Callable[[float], None]) -> None:
    """Tell ``observer`` the CPU time of every argon2id hash or verification in this process (once, however often
    called). CPU time of the calling thread: argon2 runs there (parallelism 1), and waiting for a core is not
    what the hash costs."""
    _observers.add(observer)


def _timed(call: Callable[[], T]) -> T:
    started, hashed = time.thread_time(), True
    try:
        return call()
    except VerifyMismatchError:
        raise  # hashed, and not the password
    except (InvalidHashError, VerificationError):
        hashed = False  # a stored hash argon2 cannot read: refused before any hashing (dummy_verify then hashes)
        raise
    finally:
        if hashed:
            spent = time.thread_time() - started
            _observers.tell(lambda observer: observer(spent))


class PasswordPolicyError(BadRequest):
    """A password the directory refuses to store."""


def check_policy(password: str) -> None:
    if unstorable_text(password):  # read from a terminal or stdin as bytes that are not UTF-8
        raise PasswordPolicyError("password must be text (UTF-8, no NUL character)", field="password")
    if len(password) < MIN_LENGTH:
        raise PasswordPolicyError(f"password must be at least {MIN_LENGTH} characters long", field="password")
    if len(password) > MAX_LENGTH:
        raise PasswordPolicyError(f"password must be at most {MAX_LENGTH} characters long", field="password")


def hash_password(password: str, *, check: bool = True) -> str:
    """Hash a new password; ``check=False`` only to re-hash a password that already signed in."""
    if check:
        check_policy(password)
    return _timed(lambda: _hasher.hash(password))


def verify(password_hash: str | None, password: str) -> bool:
    """True when the password matches. A missing or unreadable hash still costs one hash, then fails."""
    if len(password) > MAX_LENGTH:
        return False
    if not password_hash:
        dummy_verify(password)
        return False
    try:
        return _timed(lambda: _hasher.verify(password_hash, password))
    except VerifyMismatchError:
        return False
    except (InvalidHashError, VerificationError):
        dummy_verify(password)
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than ours (upgrade it at the next sign-in)."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


@cache
def _dummy_hash() -> str:
    return _hasher.hash("dummy password for timing equalisation")


def dummy_verify(password: str) -> None:
    """Spend the time of a real verification, so that an unknown user answers as slowly as a known one."""
    with contextlib.suppress(VerificationError):
        dummy = _dummy_hash()
        _timed(lambda: _hasher.verify(dummy, password[:MAX_LENGTH]))
