"""Instances that share a database say so in their logs when they do not share IDP_SECRET_KEY or the signing
keys (idp.ops.instances): behind a round-robin load balancer every other request would fail otherwise, with
nothing pointing at the cause. Three apps on one database here, as three `idp serve` on three hosts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Clock
from flask import Flask
from prometheus_client import REGISTRY

from idp.cli import cli
from idp.config import Settings
from idp.keys import EC
from idp.ops import instances
from idp.runtime import keystore


def announce(app: Flask) -> list[str]:
    with app.app_context():
        return instances.announce(force=True)


def test_instances_without_the_same_secret_key_or_signing_keys_are_named_in_a_warning(
        make_app: Callable[..., Flask], make_settings: Callable[..., Settings], tmp_path: Path, frozen_clock: Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    database_url = make_settings().effective_database_url
    first = make_app()
    # The same secret key and key files (as pods given one Secret), and the same database.
    twin = make_app(database_url=database_url)
    # Its own data dir: a secret key and keys of its own, generated at its first start.
    stranger = make_app(data_dir=tmp_path / "elsewhere", database_url=database_url, secret_key="another-secret-" * 3,
                        signing_key_file=None, signing_cert_file=None)
    assert announce(first) == [] and announce(twin) == []
    assert not caplog.records

    # Readiness is unchanged (a new secret rolls through the instances), but the log says what is wrong, and how
    # to mend it, for each instance it differs from.
    # (It announces once the answer is sent: when the server closes the response.)
    before = {about: differences(about) for about in ("secret", "keys")}
    assert stranger.test_client().get("/readyz", buffered=True).status_code == 200
    warnings = logged(caplog, 4)
    # And counts them for Prometheus to alert on.
    assert {about: differences(about) - n for about, n in before.items()} == {"secret": 2, "keys": 2}
    secret = [w for w in warnings if "has another IDP_SECRET_KEY than this one" in w]
    keys = [w for w in warnings if "sign with keys the other does not publish (ec:" in w]
    assert len(secret) == 2 and len(keys) == 2, warnings
    assert all("Give every instance the same IDP_SECRET_KEY" in w for w in secret)
    assert all(", rsa:" in w and "IDP_SIGNING_KEY_FILE" in w for w in keys)
    assert "another-secret" not in caplog.text and "test-secret-key" not in caplog.text

    # `idp instances`, run with the first's settings, lists all three and says which differ from it, and how.
    listed = first.test_cli_runner().invoke(cli, ["instances"]).output.splitlines()
    assert len(listed) == 3, listed
    by_id = {line.split("\t")[0]: line.split("\t")[3] for line in listed}
    assert by_id[instance_id(first)] == by_id[instance_id(twin)] == "same secret key and keys"
    assert by_id[instance_id(stranger)] == "differs: secret key, keys"

    # Said once per instance and difference in a process; the others find it too.
    caplog.clear()
    assert len(announce(stranger)) == 4 and not caplog.records
    assert len(announce(first)) == 2 and len(caplog.records) == 2

    # A key rotated on a shared data dir: published before it signs and kept published after, so the two that
    # share it have nothing to say of each other at either step.
    for _ in ("publish", "sign"):
        with first.app_context():
            keystore(EC).rotate()
        assert not [line for line in announce(first) if instance_id(twin) in line]
        assert not [line for line in announce(twin) if instance_id(first) in line]

    # A difference that changes is told again: the stranger now signs with yet another EC key.
    caplog.clear()
    for _ in ("publish", "sign"):
        with stranger.app_context():
            keystore(EC).rotate()
    assert len(announce(stranger)) == 4
    assert len(logged(caplog, 2)) == 2 and "IDP_SECRET_KEY" not in caplog.text

    # Keys that cannot be read are no reason to fail a start or a readiness check: a warning.
    manifest = tmp_path / "elsewhere" / "keys" / "manifest.json"
    manifest.write_text("{not json")
    caplog.clear()
    assert announce(stranger) == []
    assert "could not announce this instance to the others: " in caplog.text

    # Gone quiet for the instance window: no longer compared with.
    frozen_clock.advance(seconds=instances.LIVE.total_seconds() + 1)
    assert announce(first) == []


def logged(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    """The warnings of idp.ops.instances; there must be ``count``."""
    warnings = [r.getMessage() for r in caplog.records if r.name == "idp.ops.instances"]
    assert len(warnings) == count, warnings
    return warnings


def differences(about: str) -> float:
    return REGISTRY.get_sample_value("idp_instance_differences_total", {"about": about}) or 0.0


def instance_id(app: Flask) -> str:
    state: instances._State = app.extensions[instances._STATE]
    return state.id
