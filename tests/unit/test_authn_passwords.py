"""Password hashing parameters and policy, the `next` check and `--since` parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click
import pytest
from argon2 import PasswordHasher

from idp import clock
from idp.authn import passwords
from idp.authn.views import safe_next
from idp.cli import parse_since
from idp.observers import Observers


def test_hashes_are_argon2id_with_owasp_parameters() -> None:
    hashed = passwords.hash_password("correct horse")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify(hashed, "correct horse")
    assert not passwords.verify(hashed, "correct horsE")
    assert not passwords.needs_rehash(hashed)


def test_hashes_with_other_parameters_are_flagged_for_rehash() -> None:
    legacy = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("correct horse")
    assert passwords.verify(legacy, "correct horse")
    assert passwords.needs_rehash(legacy)


def test_missing_or_garbage_hashes_never_verify() -> None:
    assert not passwords.verify(None, "anything at all")
    assert not passwords.verify("not-a-hash", "anything at all")
    assert not passwords.verify(passwords.hash_password("x" * 8), "x" * 5000)


def test_password_policy() -> None:
    with pytest.raises(passwords.PasswordPolicyError, match="at least 8"):
        passwords.hash_password("1234567")
    passwords.check_policy("12345678")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/saml/sso?SAMLRequest=abc", "/saml/sso?SAMLRequest=abc"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("javascript:alert(1)", "/"),
        ("/\t/evil.example", "/"),
        ("/ok\n", "/"),
        ("relative/path", "/"),
    ],
)
def test_next_accepts_only_local_paths(value: str | None, expected: str) -> None:
    assert safe_next(value) == expected


def test_since_accepts_spans_and_iso_times() -> None:
    fixed = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    clock.set_clock(lambda: fixed)
    try:
        assert parse_since("30m") == fixed - timedelta(minutes=30)
        assert parse_since("2h") == fixed - timedelta(hours=2)
        assert parse_since("7d") == fixed - timedelta(days=7)
        assert parse_since("2024-04-01T08:00:00Z") == datetime(2024, 4, 1, 8, tzinfo=UTC)
        assert parse_since("2024-04-01T10:00:00+02:00") == datetime(2024, 4, 1, 8, tzinfo=UTC)
        assert parse_since("2024-04-01") == datetime(2024, 4, 1, tzinfo=UTC)
    finally:
        clock.set_clock(None)
    for bad in ("yesterday", "5 parsecs", "-2h", ""):
        with pytest.raises(click.BadParameter):
            parse_since(bad)


def test_a_failing_hash_observer_breaks_no_password_check(monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(passwords, "_observers", Observers("password hash observer"))
    seen: list[float] = []

    def broken(_seconds: float) -> None:
        raise RuntimeError("metrics backend gone")

    passwords.watch(broken)
    passwords.watch(seen.append)
    stored = passwords.hash_password("correct horse battery")
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "wrong horse battery")
    assert len(seen) == 3 and all(s > 0 for s in seen)  # the hash and both checks, each told to the next observer
    assert "password hash observer" in caplog.text


@pytest.mark.parametrize("stored", ["$argon2id$garbage", "not a hash at all"])
def test_a_stored_hash_argon2_cannot_read_is_one_timed_hash(monkeypatch: pytest.MonkeyPatch, stored: str) -> None:
    """It is refused before any hashing, then the equalising hash runs: one check, one figure in the metric."""
    monkeypatch.setattr(passwords, "_observers", Observers("password hash observer"))
    seen: list[float] = []
    passwords.watch(seen.append)
    assert not passwords.verify(stored, "correct horse battery")
    assert len(seen) == 1 and seen[0] > 0.001
