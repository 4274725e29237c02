"""The directory services behind the CLI and the login page: authenticate, rehash, case, timing."""

from __future__ import annotations

import time

import pytest
from argon2 import PasswordHasher
from flask import Flask
from helpers import make_user

from idp.authn import directory
from idp.errors import BadRequest, Conflict, NotFound

PASSWORD = "correct horse battery"


def test_authenticate_returns_a_principal_or_none(app: Flask) -> None:
    make_user("Alice", PASSWORD, groups=["finance", "engineering"], email="alice@example.com",
              given_name="Alice", family_name="Anderson", display_name="Alice Anderson")
    principal = directory.authenticate("  ALICE ", PASSWORD)
    assert principal is not None
    assert principal.username == "alice" and principal.source == "local" and principal.mfa is False
    assert principal.groups == ("engineering", "finance")
    assert (principal.email, principal.given_name, principal.family_name, principal.display_name) == (
        "alice@example.com", "Alice", "Anderson", "Alice Anderson")
    assert directory.authenticate("alice", "wrong") is None
    assert directory.authenticate("nobody", PASSWORD) is None
    directory.disable_user("alice", actor="test")
    assert directory.authenticate("alice", PASSWORD) is None
    assert directory.check_credentials("alice", PASSWORD).reason == "user disabled"


def test_a_hash_with_old_parameters_is_upgraded_at_sign_in(app: Flask) -> None:
    user = make_user("alice", PASSWORD)
    user.password_hash = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    directory.db.session.commit()
    assert directory.authenticate("alice", PASSWORD) is not None
    assert directory.require_user("alice").password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert directory.authenticate("alice", PASSWORD) is not None


def test_an_unknown_user_costs_as_much_as_a_wrong_password(app: Flask) -> None:
    make_user("alice", PASSWORD)
    directory.authenticate("nobody", "warm-up")  # the dummy hash is made once per process

    def cost(username: str) -> float:
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            directory.authenticate(username, "wrong password")
            runs.append(time.perf_counter() - start)
        return sorted(runs)[2]

    known, unknown = cost("alice"), cost("nobody")
    # Without the dummy verification an unknown user would answer ~20x faster.
    assert unknown > known * 0.5


def test_service_refusals(app: Flask) -> None:
    make_user("alice", PASSWORD)
    with pytest.raises(Conflict, match="user 'alice' already exists"):
        make_user("ALICE", PASSWORD)
    with pytest.raises(BadRequest, match="invalid email address"):
        directory.update_user("alice", actor="test", email="alice@")
    with pytest.raises(NotFound, match="no group 'ops'"):
        directory.add_member("ops", "alice", actor="test")
    with pytest.raises(BadRequest, match="at least 8"):
        directory.set_password("alice", "short", actor="test")
    updated = directory.update_user("alice", actor="test", display_name="Alice A.", email="")
    assert updated.display_name == "Alice A." and updated.email is None
