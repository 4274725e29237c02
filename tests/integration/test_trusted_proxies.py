"""IDP_TRUSTED_PROXY_HOPS: which address the login throttle counts. A client can send any X-Forwarded-For it
likes; only what a trusted proxy appended may stand for its address."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from helpers import DEFAULT_PASSWORD, login, make_user

from idp import audit
from idp.config import ConfigError, Settings

PROXY = "10.0.0.2"
THROTTLE = {"login_max_failures": 100, "login_ip_max_failures": 3}


def sent(peer: str, forwarded_for: str | None = None) -> dict[str, Any]:
    """A request from ``peer`` (the TCP peer the server sees), with this X-Forwarded-For."""
    environ = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return {"environ_base": environ}


def failure_addresses() -> set[str | None]:
    return {e.client_ip for e in audit.events(type="login") if e.outcome == "failure"}


def test_without_trusted_proxies_a_spoofed_forwarded_for_changes_nothing(
        with_directories: Callable[..., Flask]) -> None:
    app = with_directories(**THROTTLE)
    make_user("alice")
    attacker = "203.0.113.7"
    client = app.test_client()
    # A new made-up address each time: the throttle still counts the one the connection comes from.
    assert login(client, "u1", "guess", **sent(attacker, "198.51.100.1")).status_code == 200
    assert login(client, "u2", "guess", **sent(attacker, "198.51.100.2")).status_code == 200
    assert login(client, "u3", "guess", **sent(attacker, "198.51.100.3")).status_code == 429
    assert login(client, "alice", DEFAULT_PASSWORD, **sent(attacker, "192.0.2.1")).status_code == 429
    assert failure_addresses() == {attacker}
    (lockout,) = audit.events(type="login.lockout")
    assert "ip:" + attacker in (lockout.reason or "")


def test_behind_one_proxy_each_client_is_throttled_on_its_own(with_directories: Callable[..., Flask]) -> None:
    app = with_directories(trusted_proxy_hops=1, **THROTTLE)
    make_user("alice")
    guesser, colleague = app.test_client(), app.test_client()
    for name in ("u1", "u2"):
        assert login(guesser, name, "guess", **sent(PROXY, "198.51.100.1")).status_code == 200
    assert login(guesser, "u3", "guess", **sent(PROXY, "198.51.100.1")).status_code == 429
    # Another client through the same proxy is not locked out with it.
    assert login(colleague, "alice", DEFAULT_PASSWORD, **sent(PROXY, "198.51.100.2")).status_code == 302
    assert failure_addresses() == {"198.51.100.1"}
    (signed_in,) = [e for e in audit.events(type="login") if e.outcome == "success"]
    assert signed_in.client_ip == "198.51.100.2"


def test_behind_one_proxy_a_client_cannot_choose_its_address(with_directories: Callable[..., Flask]) -> None:
    app = with_directories(trusted_proxy_hops=1, **THROTTLE)
    make_user("alice")
    client = app.test_client()
    real = "203.0.113.9"
    # The client sends its own X-Forwarded-For; the proxy appends the address it saw.
    for i, expected in ((1, 200), (2, 200), (3, 429)):
        spoofed = f"192.0.2.{i}, 10.1.1.{i}, {real}"
        assert login(client, f"u{i}", "guess", **sent(PROXY, spoofed)).status_code == expected
    assert login(client, "alice", DEFAULT_PASSWORD, **sent(PROXY, f"192.0.2.9, {real}")).status_code == 429
    assert failure_addresses() == {real}


def test_an_ipv6_client_is_counted_by_its_64_whatever_address_it_takes_from_it(
        with_directories: Callable[..., Flask]) -> None:
    app = with_directories(**THROTTLE)
    make_user("alice")
    client = app.test_client()
    # A host with a /64 can send every try from a new address of it; with a v4 address mapped, it is that one.
    for i, expected in ((1, 200), (2, 200), (3, 429)):
        assert login(client, f"u{i}", "guess", **sent(f"2001:db8:5:7::{i}")).status_code == expected
    assert login(client, "alice", DEFAULT_PASSWORD, **sent("2001:db8:5:7:aaaa::1")).status_code == 429
    # The next /64 is someone else.
    assert login(client, "alice", DEFAULT_PASSWORD, **sent("2001:db8:5:8::1")).status_code == 302
    (lockout,) = audit.events(type="login.lockout")
    assert "ip:2001:db8:5:7::/64" in (lockout.reason or "")


def test_a_port_a_proxy_appends_to_the_address_is_not_a_new_client(with_directories: Callable[..., Flask]) -> None:
    app = with_directories(trusted_proxy_hops=1, **THROTTLE)
    make_user("alice")
    client = app.test_client()
    # Some load balancers forward "address:port", the port a new one for each connection.
    for i, expected in ((1, 200), (2, 200), (3, 429)):
        assert login(client, f"u{i}", "guess", **sent(PROXY, f"198.51.100.1:4000{i}")).status_code == expected
    assert login(client, "alice", DEFAULT_PASSWORD, **sent(PROXY, "[::ffff:198.51.100.1]:40009")).status_code == 429
    # Behind a NAT64 gateway an IPv4 client is that client, not the gateway's /64 with every other.
    assert login(client, "alice", DEFAULT_PASSWORD, **sent(PROXY, "64:ff9b::198.51.100.1")).status_code == 429
    assert login(client, "alice", DEFAULT_PASSWORD, **sent(PROXY, "64:ff9b::198.51.100.2")).status_code == 302


def test_hops_setting_is_read_and_checked() -> None:
    assert Settings.from_env({}).trusted_proxy_hops == 0
    assert Settings.from_env({"IDP_TRUSTED_PROXY_HOPS": "2"}).trusted_proxy_hops == 2
    with pytest.raises(ConfigError, match="IDP_TRUSTED_PROXY_HOPS: must not be negative"):
        Settings.from_env({"IDP_TRUSTED_PROXY_HOPS": "-1"})
