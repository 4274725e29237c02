"""The ``ldap`` and ``ad`` connectors: search-then-bind sign-in through an LdapDirectory (or its Active
Directory preset), ending in a shadow row."""

from __future__ import annotations

import logging

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

    def check(self, username: str, password: str) -> Verdict:
        found = self.directory.find_user(username)
        if found.entry is None:
            return Verdict(None, found.reason, known=found.reason != "unknown user")
        refusal = self.directory.verify_password(found.entry, password)
        if refusal is not None:
            return Verdict(None, refusal.reason, known=True, message=refusal.message)
        # Groups after the bind: nobody learns group structure without the password.
        groups = self.directory.groups(found.entry)
        if groups.truncated:
            log.warning("directory %s: groups of %s nest deeper than group_depth=%d; the rest is ignored",
                        self.name, found.entry.dn, self.directory.cfg.group_depth)
        return provision(self.name, found.entry, groups.names)

    def authenticate(self, username: str, password: str) -> Principal | None:
        return self.check(username, password).principal

    def close(self) -> None:
        self.directory.close()
