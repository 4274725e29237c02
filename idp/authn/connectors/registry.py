"""Connector types by name: a factory per type, built from a DirectoryConfig. A new identity source is one
module and one line here."""

from __future__ import annotations

from collections.abc import Callable

from idp.authn.connectors import local
from idp.authn.connectors.base import Connector
from idp.authn.connectors.bind_passwords import bind_password
from idp.authn.connectors.ldap_connector import LdapConnector
from idp.authn.connectors.settings import DirectoryConfig

# (settings, encrypted bind password from the database or None) -> connector
Factory = Callable[[DirectoryConfig, str | None], Connector]

FACTORIES: dict[str, Factory] = {
    "local": lambda cfg, _encrypted: local.build(cfg),
    "ldap": lambda cfg, encrypted: LdapConnector(cfg, bind_password(cfg, encrypted)),
    # The Active Directory preset: same connector, AdDirectory client (settings.PRESETS has its defaults).
    "ad": lambda cfg, encrypted: LdapConnector(cfg, bind_password(cfg, encrypted)),
}


def build(cfg: DirectoryConfig, encrypted: str | None = None) -> Connector:
    factory = FACTORIES.get(cfg.type)
    if factory is None:
        raise ValueError(f"no connector type '{cfg.type}'")
    return factory(cfg, encrypted)
