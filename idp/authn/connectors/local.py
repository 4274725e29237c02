"""The ``local`` connector: the built-in directory (idp/authn/directory.py) behind the connector protocol."""

from __future__ import annotations

from collections.abc import Callable

from idp.authn import directory
from idp.authn.connectors.base import Verdict
from idp.authn.connectors.settings import DirectoryConfig
from idp.authn.principal import Principal

LOCAL = "local"


class LocalConnector:
    name = LOCAL
    domains: tuple[str, ...] = ()

    def check(self, username: str, password: str, *,
              admit: Callable[[str], bool] | None = None) -> Verdict:
        # A local name is its own canonical form (one exact, lower-cased match): the typed-name counter is enough.
        # An unknown name costs no hash here: the chain pays one when no directory knew it (chain.check).
        outcome = directory.check_credentials(username, password, equalise_unknown=False)
        return Verdict(outcome.principal, outcome.reason, known=outcome.reason != directory.UNKNOWN_USER)

    def authenticate(self, username: str, password: str) -> Principal | None:
        return self.check(username, password).principal

    def recheck(self, external_id: str) -> Verdict:
        # Built-in users are the bridge's own rows, never shadows of something elsewhere: nothing to ask.
        return Verdict(None, "the built-in directory keeps no shadow rows")

    def close(self) -> None:
        pass


def build(cfg: DirectoryConfig) -> LocalConnector:
    return LocalConnector()
