"""The chain: which connectors exist (IDP_CONFIG file, then the database), in which order, and how one
sign-in walks them.

Order: the built-in directory first (unless the YAML file places an entry ``{name: local, type: local}``
elsewhere), then the YAML entries in file order, then database entries in the order they were added. A
username with a domain that a connector claims (``alice@corp.example``, ``CORP\\alice``) goes to that
connector only, without the domain (an Active Directory gets it whole: UPN and DOMAIN\\user are its own
sign-in forms). Otherwise every connector is asked in order and the first that knows the username decides: a
wrong password there ends the sign-in, so one name is never tried against several directories' passwords. A
connector that is down is skipped; if nobody accepted the credentials and one was down, the sign-in fails as
"directory unavailable" (we cannot tell a wrong password from a missing answer).

Once a directory is down, the directories after it are not asked: the one that is down may own the name, and
a later one would sign in (and make a shadow row for, taking the name for good) someone else of that name,
with a password meant for the first. Only the built-in directory is still asked: its users are accounts the
bridge itself holds, and they must keep signing in when a directory is down.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import Row, select

from idp import files
from idp.authn import passwords
from idp.authn.connectors import registry
from idp.authn.connectors.base import Connector, Verdict
from idp.authn.connectors.ldap import UNAVAILABLE
from idp.authn.connectors.local import LOCAL
from idp.authn.connectors.settings import DirectoryConfig, parse_entry
from idp.errors import DirectoryUnavailable
from idp.extensions import db
from idp.runtime import settings
from idp.store import Directory

log = logging.getLogger(__name__)
_CACHE = "idp.connectors"
LOCAL_CONFIG = DirectoryConfig(name=LOCAL, type="local", origin="built in")


@dataclass(frozen=True)
class Configured:
    """A directory as configured, before its connector is built."""

    cfg: DirectoryConfig | None
    encrypted: str | None
    origin: str
    name: str
    problems: tuple[str, ...] = ()
    # Whether /readyz counts it, as stored, so that it holds while the rest no longer checks out (a CA file gone).
    counted: bool = True


def from_row(row: Directory | Row[Any]) -> Configured:
    # Parsed at every read: the check looks at files too (a CA file overwritten since is caught).
    cfg, problems = parse_entry({"name": row.name, "type": row.type, **(row.settings or {})}, "database",
                                secret_stored=row.bind_password_encrypted is not None)
    return Configured(cfg, row.bind_password_encrypted, "database", row.name, tuple(problems),
                      counted=(row.settings or {}).get("readiness") is not False)


_DIRECTORIES = Directory.__table__
_CHAIN = select(_DIRECTORIES.c.name, _DIRECTORIES.c.type, _DIRECTORIES.c.settings,
                _DIRECTORIES.c.bind_password_encrypted).order_by(_DIRECTORIES.c.id)


def configured() -> list[Configured]:
    """Every directory in chain order."""
    from_file = [Configured(c, None, "IDP_CONFIG", c.name) for c in settings().directories]
    out = [] if any(c.name == LOCAL for c in from_file) else [Configured(LOCAL_CONFIG, None, "built in", LOCAL)]
    out += from_file
    names = {c.name for c in out}
    db.session.flush()  # a Core read does not autoflush
    for row in db.session.connection().execute(_CHAIN):
        if row.name in names:
            log.warning("directory %s is configured in IDP_CONFIG and in the database; the file wins", row.name)
            continue
        out.append(from_row(row))
    _forget_others({c.name for c in out})
    return out


def _forget_others(names: set[str]) -> None:
    """Close the connectors of directories no longer configured (removed or renamed, perhaps through another
    instance): their pooled connections stay bound as the service account otherwise."""
    cache: _Built | None = current_app.extensions.get(_CACHE)
    if cache is None:
        return
    with cache.lock:
        for name in [n for n in cache.by_name if n not in names]:
            cache.by_name.pop(name)[1].close()


class _Built:
    """Connectors kept per app between sign-ins (their connection pools are the point), rebuilt when their
    settings change."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_name: dict[str, tuple[str, Connector]] = {}


def _built() -> _Built:
    cache: _Built | None = current_app.extensions.get(_CACHE)
    if cache is None:
        cache = current_app.extensions.setdefault(_CACHE, _Built())
    return cache


def _fingerprint(item: Configured) -> str:
    """What the built connector depends on: its settings, its stored password, and the files it read when built
    (a bind password or CA file replaced in place, as a Kubernetes Secret or a rotation does, builds it again)."""
    paths = [item.cfg.bind_password_file, item.cfg.ca_file] if item.cfg is not None else []
    return hashlib.sha256(repr((item.cfg, item.encrypted, [files.stamp(f) for f in paths])).encode()).hexdigest()


def connector(item: Configured) -> Connector:
    """The built connector for a configured directory (DirectoryUnavailable when it cannot be built)."""
    if item.cfg is None:
        raise DirectoryUnavailable(UNAVAILABLE, f"directory {item.name} is misconfigured: "
                                                + "; ".join(item.problems))
    cache, key = _built(), _fingerprint(item)
    with cache.lock:
        hit = cache.by_name.get(item.name)
        if hit is not None and hit[0] == key:
            return hit[1]
        built = registry.build(item.cfg, item.encrypted)
        if hit is not None:
            hit[1].close()
        cache.by_name[item.name] = (key, built)
        return built


def close_all() -> None:
    cache = _built()
    with cache.lock:
        for _, built in cache.by_name.values():
            built.close()
        cache.by_name.clear()


def _split(username: str) -> tuple[str | None, str]:
    """(domain, bare name) of DOMAIN\\user or user@domain; (None, username) otherwise."""
    if "\\" in username:
        domain, _, bare = username.partition("\\")
        return domain, bare
    if "@" in username:
        bare, _, domain = username.rpartition("@")
        return domain, bare
    return None, username


def _claimed(domain: str, items: list[Configured]) -> list[Configured]:
    return [i for i in items if i.cfg is not None and domain.lower() in i.cfg.domains]


def routed_name(username: str, items: list[Configured]) -> str:
    """The name without a domain that a directory claims (CORP\\alice, alice@corp.example -> alice): the
    spellings of one sign-in name that the chain sends to the same place, for the lockout counter."""
    domain, bare = _split(username)
    return bare if domain and bare and _claimed(domain, items) else username


def _route(username: str, items: list[Configured]) -> list[tuple[Configured, str]]:
    domain, bare = _split(username)
    if domain and bare:
        claimed = _claimed(domain, items)
        if claimed:
            # Active Directory takes the whole name: UPN and DOMAIN\user are its own sign-in forms.
            return [(i, username if i.cfg is not None and i.cfg.type == "ad" else bare) for i in claimed]
    return [(i, username) for i in items]


def check(username: str, password: str, *, items: list[Configured] | None = None,
          admit: Callable[[str], bool] | None = None) -> Verdict:
    """Walk the chain for one sign-in. Raises DirectoryUnavailable as described in the module docstring.
    ``items``: configured() if already read; ``admit``: passed to each connector (see Connector.check)."""
    candidates = _route(username, configured() if items is None else items)
    label = (lambda name, text: f"{name}: {text}") if len(candidates) > 1 else (lambda name, text: text)
    reasons: list[str] = []
    outages: list[str] = []
    down: list[str] = []
    for item, name in candidates:
        if outages and item.cfg is not None and item.cfg.type != "local":
            outages.append(f"{item.name}: not asked, an earlier directory is down")
            continue
        try:
            verdict = connector(item).check(name, password, admit=admit)
        except DirectoryUnavailable as exc:
            log.warning("directory %s unavailable: %s", item.name, exc.reason)
            outages.append(f"{item.name}: {exc.reason}")
            down.append(item.name)
            continue
        if verdict.principal is not None:
            return verdict
        reasons.append(label(item.name, verdict.reason or "refused"))
        if verdict.known:
            if item.cfg is not None and item.cfg.type != "local":
                # A directory's refusal costs the hash an unknown name costs (below), or the time a refusal
                # takes would tell which names a directory holds (the local directory's refusal paid a real one).
                passwords.dummy_verify(password)
            return Verdict(None, reasons[-1], known=True, message=verdict.message, subject=verdict.subject,
                           locked=verdict.locked)
    if outages:
        # No hash spent: "unavailable" is told whether or not the name exists, and these tries are not counted
        # (not the user's fault), so a hash each would be CPU anyone could burn while a directory is down.
        raise DirectoryUnavailable(UNAVAILABLE, "directory unavailable: " + "; ".join(outages + reasons),
                                   source=down[0])
    # Nobody knew the name: spend one password hash, as a known user's refusal does, so that timing does not tell
    # whether a user exists. A directory's sign-in costs none.
    passwords.dummy_verify(password)
    return Verdict(None, "; ".join(reasons) or "no identity source configured")
