"""The portal page (/portal, and the home page /): every AWS account role and application the signed-in user
may open, as the one decision grants them (``authorize(principal, EVERYTHING, now)``), each a link that
launches it.

``?q=`` narrows the page on the server, so the search works without JavaScript; static/portal.js filters the
same way as the user types.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response as BaseResponse

from idp import clock
from idp.access.decide import EVERYTHING, AppGrant, Grant, RoleGrant, authorize
from idp.authn.session import current_session, login_url, principal_for
from idp.portal import bp

MAX_QUERY = 100


@dataclass(frozen=True)
class RoleLink:
    permission_set: str
    url: str  # the stable console link, /portal/aws/<account-id>/<permission-set-name>
    session: str  # how long the console session lasts, in words
    until: datetime | None  # when the assignment ends


@dataclass(frozen=True)
class AccountEntry:
    account_id: str
    name: str
    roles: tuple[RoleLink, ...]


@dataclass(frozen=True)
class AppEntry:
    kind: str
    key: str  # entity ID or client_id: searchable, not shown
    name: str
    url: str | None  # None: an OIDC client without a login URL cannot be started from here
    until: datetime | None


@dataclass(frozen=True)
class Listing:
    accounts: tuple[AccountEntry, ...]
    apps: tuple[AppEntry, ...]

    @property
    def empty(self) -> bool:
        return not self.accounts and not self.apps

    def narrowed(self, query: str) -> Listing:
        """What matches ``query`` (case-insensitive, anywhere in a name or id): an account whose name or id
        matches keeps all its roles, otherwise only the roles whose name matches."""
        q = query.casefold()
        accounts = []
        for account in self.accounts:
            roles = account.roles if _matches(q, account.name, account.account_id) else tuple(
                r for r in account.roles if _matches(q, r.permission_set))
            if roles:
                accounts.append(AccountEntry(account.account_id, account.name, roles))
        return Listing(tuple(accounts), tuple(a for a in self.apps if _matches(q, a.name, a.key)))


def _matches(q: str, *texts: str) -> bool:
    return any(q in t.casefold() for t in texts)


def listing(grant: Grant) -> Listing:
    """The grant as the page shows it: roles grouped by account (in the decision's order), apps with launch links."""
    by_account: dict[str, list[RoleGrant]] = {}
    for role in grant.roles:
        by_account.setdefault(role.account_id, []).append(role)
    accounts = tuple(
        AccountEntry(account_id, roles[0].account_name, tuple(_role_link(r) for r in roles))
        for account_id, roles in by_account.items()
    )
    return Listing(accounts, tuple(_app_entry(a) for a in grant.apps))


def _role_link(role: RoleGrant) -> RoleLink:
    url = url_for("portal.aws_console", account_id=role.account_id, permission_set=role.permission_set)
    return RoleLink(role.permission_set, url, duration(role.session_seconds), role.until)


def _app_entry(app: AppGrant) -> AppEntry:
    # A SAML app starts with IdP-initiated SSO, which asks the same decision again when the user clicks.
    url = url_for("saml.idp_initiated", sp=app.key) if app.kind == "saml" else app.login_url
    return AppEntry(app.kind, app.key, app.name, url, app.until)


def duration(seconds: int) -> str:
    """``3600`` → "1 hour", ``5400`` → "1 hour 30 min", ``900`` → "15 min"."""
    hours, minutes = divmod(seconds // 60, 60)
    parts = [f"{hours} hour{'s' if hours != 1 else ''}"] if hours else []
    if minutes or not hours:
        parts.append(f"{minutes} min")
    return " ".join(parts)


@bp.get("")
def index() -> BaseResponse | str:
    sso = current_session()
    if sso is None:
        return redirect(login_url(request.full_path.rstrip("?")))
    principal = principal_for(sso)
    everything = listing(authorize(principal, EVERYTHING, clock.now(), client_ip=request.remote_addr))
    query = request.args.get("q", "").strip()[:MAX_QUERY]
    return render_template(
        "portal.html", principal=principal, query=query, nothing_granted=everything.empty,
        listing=everything.narrowed(query) if query else everything,
    )


@bp.record_once
def _home_page(state: BlueprintSetupState) -> None:
    # The home page is the portal itself, not a redirect to it: "/" is what people type (and bookmark).
    state.app.add_url_rule("/", "home", index)
