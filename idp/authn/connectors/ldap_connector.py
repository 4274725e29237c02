"""The ``ldap`` and ``ad`` connectors: search-then-bind sign-in through an LdapDirectory (or its Active
Directory preset), ending in a shadow row."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from idp.authn.connectors.ad import open_directory
from idp.authn.connectors.base import Verdict
from idp.authn.connectors.settings import DirectoryConfig
from idp.authn.connectors.shadow import provision
from idp.authn.principal import Principal

log = logging.getLogger(__name__)


class LdapConnector:
    def __init__(self, cfg: DirectoryConfig, bind_password: str | None) -> None:
        if not cfg.tls_verify:
            log.warning("directory %s: TLS certificate verification is off", cfg.name)
        self.name = cfg.name
        self.domains = cfg.domains
        self.directory = open_directory(cfg, bind_password)

    def check(self, username: str, password: str, *,
              admit: Callable[[str], bool] | None = None) -> Verdict:
        found = self.directory.find_user(username)
        if found.entry is None:
            if found.reason == "unknown user":
                # As costly as a wrong password, so that the time taken does not tell which names exist.
                self.directory.dummy_bind(password)
            return Verdict(None, found.reason, known=found.reason != "unknown user")
        # The user whatever the spelling typed (full-width letters, CORP\alice, alice@corp.example): what the lockout
        # counts, here, before the password reaches the directory.
        subject = f"{self.name}:{found.entry.external_id}"
        if admit is not None and not admit(subject):
            return Verdict(None, "locked out", known=True, subject=subject, locked=True)
        refusal = self.directory.verify_password(found.entry, password)
        if refusal is not None:
            return Verdict(None, refusal.reason, known=True, message=refusal.message, subject=subject)
        # Groups after the bind: nobody learns group structure without the password.
        groups = self.directory.groups(found.entry)
        if groups.truncated:
            log.warning("directory %s: groups of %s nest deeper than group_depth=%d; the rest is ignored",
                        self.name, found.entry.dn, self.directory.cfg.group_depth)
        as_of = datetime.fromtimestamp(groups.cached_at, UTC) if groups.cached_at is not None else None
        verdict = provision(self.name, found.entry, groups.names, groups_as_of=as_of)
        return Verdict(verdict.principal, verdict.reason, known=verdict.known, message=verdict.message,
                       subject=subject)

    def recheck(self, external_id: str) -> Verdict:
        found = self.directory.find_by_id(external_id)
        if found.entry is None:
            return Verdict(None, f"gone from the directory ({found.reason})", known=found.reason != "unknown user")
        # AD keeps the entry of a disabled or expired account; its bind would be refused (533, 701), so the
        # session ends too: an expiry date is how contractors are let go. (A lockout or a password to change
        # refuses a new bind, not the user: an attacker's wrong passwords must not sign the user out.)
        for state, reason in (("disabled", "account disabled"), ("account expired", "account expired")):
            if state in found.entry.account_state:
                return Verdict(None, f"{reason} in the directory", known=True)
        # Asked, not taken from this process's cache: the groups written now stand for revalidate_seconds, and a
        # cache filled before another instance's check would write a group the user has lost back (it is refreshed
        # with the answer).
        groups = self.directory.groups(found.entry, use_cache=False)
        return provision(self.name, found.entry, groups.names)

    def authenticate(self, username: str, password: str) -> Principal | None:
        return self.check(username, password).principal

    def close(self) -> None:
        self.directory.close()
