"""The connector protocol every identity source implements, and the verdict it gives the chain."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from idp.authn.principal import Principal


@dataclass(frozen=True)
class Verdict:
    """One connector's answer. ``reason`` is for the audit log only (never shown). ``known`` says the
    connector found this username, which ends the chain: the first source that knows a user decides.
    ``message`` is what the user is told instead of the generic refusal; a connector sets it only when
    telling reveals nothing to someone without the password (an account disabled, found after the password
    was right), never for an unknown user or a wrong password.

    ``subject`` names the user the connector found, however the name was typed ("corp:<stable id>"), for the
    lockout counters; ``locked`` says the connector stopped before the password because that subject is
    locked out."""

    principal: Principal | None
    reason: str | None = None
    known: bool = False
    message: str | None = None
    subject: str | None = None
    locked: bool = False


class Connector(Protocol):
    """An identity source. ``authenticate`` returns a Principal for good credentials and None otherwise;
    an outage (server down, timeout, the service account refused) raises DirectoryUnavailable, a wrong
    password never does."""

    name: str
    domains: tuple[str, ...]

    def authenticate(self, username: str, password: str) -> Principal | None: ...

    def check(self, username: str, password: str, *,
              admit: Callable[[str], bool] | None = None) -> Verdict:
        """The same decision with the reason for the audit log. ``admit(subject)``: asked once the user is found
        and before the password is checked (it counts the try against them); False, they are locked out, ends
        the check with a ``locked`` verdict."""
        ...

    def recheck(self, external_id: str) -> Verdict:
        """Ask again about a user this connector vouched for, found by their stable id without a password: a
        Principal (the shadow row refreshed: profile, groups) while they are still there and enabled, else the
        reason they are not. An outage raises DirectoryUnavailable."""
        ...

    def close(self) -> None:
        """Release pooled connections (the connector is being replaced or the process ends)."""
        ...
