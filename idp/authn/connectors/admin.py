"""The services behind ``idp directory``: add, list, show, remove and test directories. Each change takes
the acting party and records one audit event; a secret never appears in a result or an event."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from idp import audit
from idp.audit import AuditEvent
from idp.authn.connectors import bind_passwords, chain
from idp.authn.connectors.ad import open_directory
from idp.authn.connectors.chain import Configured
from idp.authn.connectors.local import LOCAL
from idp.authn.connectors.settings import DirectoryConfig, parse_entry
from idp.authn.session import end_user_sessions
from idp.errors import BadRequest, Conflict, DirectoryUnavailable, NotFound
from idp.extensions import db
from idp.ops import health
from idp.store import Directory, User


def add(name: str, kind: str, values: dict[str, Any], bind_password: str | None, *, actor: str,
        probe: bool = True) -> list[str]:
    """Store a directory in the database. ``values`` has the YAML entry's keys (urls, base_dn, ...). Returns
    "url: why" for each of its servers that did not answer the probe (others did).

    With ``probe``, first each server is asked what /readyz asks (connect, StartTLS, the service bind), and the
    directory is refused when none answers: readiness counts a directory (unless it is set not to), so a typo in
    a URL or password stored here would take every instance out of its load balancer, the admin UI included."""
    if name == LOCAL:
        raise BadRequest("'local' is the built-in directory")
    cfg, problems = parse_entry({"name": name, "type": kind, **values}, "directory",
                                secret_stored=bind_password is not None)
    if bind_password is not None and not values.get("bind_dn"):
        problems.append("a bind password needs --bind-dn")
    if cfg is None or problems:
        raise BadRequest("invalid directory:\n" + "\n".join(f"  - {p}" for p in problems))
    if any(c.name == name for c in chain.configured()):
        raise Conflict(f"directory '{name}' already exists")
    unanswered = _unanswered(name, cfg, bind_password) if probe else []
    encrypted = bind_passwords.encrypt(bind_password) if bind_password is not None else None
    row = Directory(name=name, type=kind, settings=cfg.public(), bind_password_encrypted=encrypted)
    db.session.add(row)
    audit.record(AuditEvent(type="directory.add", actor=actor,
                            details={"directory": name, "type": kind, "urls": list(cfg.urls)}))
    return unanswered


def _unanswered(name: str, cfg: DirectoryConfig, bind_password: str | None) -> list[str]:
    """The servers of a directory about to be added that do not answer the readiness probe; BadRequest when
    none does."""
    try:
        password = bind_password if bind_password is not None else bind_passwords.bind_password(cfg, None)
        # Within readiness's time: a server slower than that would pass here and fail every /readyz.
        directory = open_directory(dataclasses.replace(cfg, timeout=min(cfg.timeout, health.TIMEOUT)), password)
    except DirectoryUnavailable as exc:
        failed = [exc.reason]
    else:
        try:
            failed = [f"{url}: {error}" for url, error in directory.probe() if error is not None]
        finally:
            directory.close()
        if len(failed) < len(cfg.urls):
            return failed
    raise BadRequest(f"directory '{name}' not added: no server of it answered as /readyz will ask "
                     "(connect, then the service bind):\n" + "\n".join(f"  - {f}" for f in failed)
                     + "\nFix the settings, or add it with --no-probe if only the servers can reach it.")


def get(name: str) -> Configured:
    for item in chain.configured():
        if item.name == name:
            return item
    raise NotFound(f"no directory '{name}'")


def describe(item: Configured) -> dict[str, Any]:
    """What ``directory show`` prints: settings, where they come from, and where the secret is kept."""
    out: dict[str, Any] = {"name": item.name, "origin": item.origin}
    if item.cfg is None:
        out["problems"] = list(item.problems)
        return out
    out["type"] = item.cfg.type
    out.update(item.cfg.public())
    if item.encrypted is not None:
        out["bind_password"] = "stored encrypted"  # noqa: S105 - where it is, not what it is
    return out


def remove(name: str, *, actor: str) -> int:
    """Take a database directory out of the chain; the number of its users disabled."""
    item = get(name)
    if item.origin != "database":
        raise BadRequest(f"directory '{name}' comes from {item.origin}; change it there")
    row = db.session.scalar(select(Directory).where(Directory.name == name))
    db.session.delete(row)
    # Nobody vouches for its users any more: their shadow rows are disabled (kept, so that the directory added
    # back under this name finds their ids, consents and NameIDs again once an admin enables them) and every
    # session they hold ends now, with the OIDC tokens bound to it.
    users = list(db.session.scalars(select(User).where(User.source == name, User.enabled.is_(True))))
    ended = 0
    for user in users:
        user.enabled = False
        ended += end_user_sessions(user.id)
    audit.record(AuditEvent(type="directory.remove", actor=actor,
                            details={"directory": name, "users_disabled": len(users), "sessions_ended": ended}))
    return len(users)


@dataclass
class Step:
    ok: bool
    what: str
    detail: str


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def add(self, ok: bool, what: str, detail: str) -> bool:
        self.steps.append(Step(ok, what, detail))
        return ok


def test(name: str, username: str | None) -> Report:
    """Check a directory end to end, each URL on its own, then a user lookup and group resolution through
    the failover pool; carries on past a failure where it can so the report shows everything at once."""
    report = Report()
    item = get(name)
    if item.cfg is None:
        report.add(False, "settings", "; ".join(item.problems))
        return report
    cfg = item.cfg
    if cfg.type not in ("ldap", "ad"):
        report.add(True, "settings", f"type {cfg.type}: nothing to connect to")
        return report
    try:
        password = bind_passwords.bind_password(cfg, item.encrypted)
    except DirectoryUnavailable as exc:
        report.add(False, "settings", exc.reason)
        return report
    report.add(True, "settings", f"{len(cfg.urls)} URL(s), base {cfg.base_dn}, "
                                 f"{'StartTLS, ' if cfg.start_tls else ''}group mode {cfg.group_mode}")
    try:
        directory = open_directory(cfg, password)
    except DirectoryUnavailable as exc:
        report.add(False, "settings", exc.reason)
        return report
    try:
        bound = f"service bind as {cfg.bind_dn}" if cfg.bind_dn else "anonymous"
        for url, error in directory.probe():
            report.add(error is None, "connect", f"{url}: {error or 'ok, ' + bound}")
        if username is None:
            return report
        try:
            found = directory.find_user(username)
        except DirectoryUnavailable as exc:
            report.add(False, "user", exc.reason)
            return report
        entry = found.entry
        if entry is None:
            query = directory.user_filter(username.strip())
            searched = f"filter {query}" if query else "not a sign-in name this directory accepts"
            report.add(False, "user", f"{username}: {found.reason} ({searched})")
            return report
        profile = ", ".join(f"{k} {v}" for k, v in (("email", entry.email), ("name", entry.display_name)) if v)
        report.add(True, "user", f"{entry.username}: {entry.dn} ({cfg.id_attribute} {entry.external_id}"
                                 f"{', ' + profile if profile else ''})")
        if entry.account_state:
            # Found, but the directory will refuse the sign-in whatever the password: the admin should know.
            report.add(False, "account", ", ".join(entry.account_state))
        try:
            groups = directory.groups(entry, use_cache=False)
        except DirectoryUnavailable as exc:
            report.add(False, "groups", exc.reason)
            return report
        detail = ", ".join(groups.names) or "(none)"
        detail += " (in-chain search" if cfg.group_mode == "inchain" else f" ({groups.levels} level(s)"
        detail += f"; stopped at group_depth={cfg.group_depth})" if groups.truncated else ")"
        report.add(not groups.truncated, "groups", detail)
        return report
    finally:
        directory.close()
