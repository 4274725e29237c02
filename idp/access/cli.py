"""``idp ou|account|permission-set|app|access ...``, ``idp assign`` and ``idp unassign``: the access model
from the command line. Each command is a thin call of a service in idp/access/."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

import click
from flask.cli import AppGroup, with_appcontext

from idp import clock
from idp.access import accounts, assignments, permission_sets
from idp.access.assignments import Assigned
from idp.access.decide import RoleGrant, Source
from idp.access.permission_sets import PermissionSetSpec
from idp.cli_support import actor, echo_record, read_json_file
from idp.errors import BadRequest

F = TypeVar("F", bound=Callable[..., Any])

json_flag = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
yes_flag = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
until_option = click.option(
    "--until", metavar="DATE|TIME",
    help="End of the assignment: an ISO date, meaning the end of that day in UTC (2027-03-31 works through "
         "March 31), or an ISO time, in UTC unless it names a zone (2027-03-31T18:00:00+02:00). Must be later "
         "than now.")


def _until(value: str | None) -> datetime | None:
    return assignments.parse_until(value, clock.now()) if value is not None else None


def _ended(until: datetime | None) -> str:
    return f" until {until.isoformat()}" if until is not None else ""


def _echo_assigned(verb: str, done: Assigned) -> None:
    click.echo(f"{verb} {done.what} {'to' if verb == 'assigned' else 'from'} {done.principal} in {done.where}"
               + _ended(done.until))


# --- organizational units ---------------------------------------------------------------------------------

ou = AppGroup("ou", help="Organizational units: a tree that groups AWS accounts.")


@ou.command("add")
@click.argument("name")
@click.option("--parent", metavar="OU", help="Put it under this OU (default: under the root).")
def ou_add(name: str, parent: str | None) -> None:
    """Add an organizational unit."""
    created = accounts.add_ou(name, parent=parent, actor=actor())
    click.echo(f"organizational unit '{accounts.ou_path(created.id)}' added")


@ou.command("move")
@click.argument("name")
@click.option("--parent", metavar="OU", help="The new parent OU.")
@click.option("--root", is_flag=True, help="Move it directly under the root.")
def ou_move(name: str, parent: str | None, root: bool) -> None:
    """Move an OU, with its accounts and sub-OUs, under another OU or the root."""
    if (parent is None) == (not root):
        raise click.UsageError("give exactly one of --parent OU or --root")
    accounts.move_ou(name, parent=parent, actor=actor())
    click.echo(f"organizational unit '{name.strip()}' moved under {parent or accounts.ROOT}")


@ou.command("remove")
@click.argument("name")
@yes_flag
def ou_remove(name: str, yes: bool) -> None:
    """Remove an empty OU (its assignments go with it)."""
    accounts.require_ou(name)
    if not yes:
        click.confirm(f"Remove organizational unit '{name.strip()}'?", abort=True)
    removed = accounts.remove_ou(name, actor=actor())
    click.echo(f"organizational unit '{name.strip()}' removed ({removed} assignment(s) with it)")


@ou.command("list")
@json_flag
def ou_list(as_json: bool) -> None:
    """Show the OU tree with how many accounts each OU holds directly."""
    tree = accounts.ou_tree()
    if as_json:
        click.echo(json.dumps([asdict(n) for n in tree], indent=2))
        return
    click.echo(f"{accounts.ROOT}  {accounts.root_account_count()} account(s)")
    for node in tree:
        click.echo(f"{'  ' * (node.depth + 1)}{node.name}  {node.accounts} account(s)")


# --- accounts -------------------------------------------------------------------------------------------

account = AppGroup("account", help="AWS accounts that users open through the bridge.")


@account.command("add")
@click.argument("account_id")
@click.option("--name", required=True, help="A display name.")
@click.option("--saml-provider-arn", required=True, metavar="ARN",
              help="The IAM identity provider trusting the bridge: arn:aws:iam::ACCOUNT_ID:saml-provider/NAME.")
@click.option("--ou", metavar="OU", help="Put it in this OU (default: under the root).")
@click.option("--signin-url", metavar="URL",
              help="A regional AWS sign-in endpoint, e.g. https://us-east-1.signin.aws.amazon.com/saml "
                   "(default: the global https://signin.aws.amazon.com/saml).")
def account_add(account_id: str, name: str, saml_provider_arn: str, ou: str | None, signin_url: str | None) -> None:
    """Add an AWS account (ACCOUNT_ID: its 12 digits)."""
    created = accounts.add_account(account_id, name=name, saml_provider_arn=saml_provider_arn, ou=ou,
                                   signin_url=signin_url, actor=actor())
    click.echo(f"account {created.account_id} ({created.name}) added in {accounts.ou_path(created.ou_id)}")


@account.command("list")
@json_flag
def account_list(as_json: bool) -> None:
    """List the accounts."""
    found = accounts.list_accounts()
    if as_json:
        click.echo(json.dumps([accounts.describe_account(a) for a in found], indent=2))
        return
    if not found:
        click.echo("no accounts")
    for a in found:
        click.echo(f"{a.account_id}\t{a.name}\t{accounts.ou_path(a.ou_id)}\t{a.saml_provider_arn}")


@account.command("show")
@click.argument("account_id")
@json_flag
def account_show(account_id: str, as_json: bool) -> None:
    """Show an account and the assignments that reach it (its own and its OUs')."""
    echo_record(accounts.describe_account(accounts.require_account(account_id)), as_json)


@account.command("move")
@click.argument("account_id")
@click.option("--ou", metavar="OU", help="The OU to put it in.")
@click.option("--root", is_flag=True, help="Put it directly under the root.")
def account_move(account_id: str, ou: str | None, root: bool) -> None:
    """Move an account to another OU: it loses the old OU's assignments and gains the new one's."""
    if (ou is None) == (not root):
        raise click.UsageError("give exactly one of --ou OU or --root")
    accounts.move_account(account_id, ou=ou, actor=actor())
    click.echo(f"account {account_id.strip()} moved to {ou.strip() if ou else accounts.ROOT}")


@account.command("remove")
@click.argument("account_id")
@yes_flag
def account_remove(account_id: str, yes: bool) -> None:
    """Remove an account and its own assignments."""
    accounts.require_account(account_id)
    if not yes:
        click.confirm(f"Remove account {account_id.strip()}?", abort=True)
    removed = accounts.remove_account(account_id, actor=actor())
    click.echo(f"account {account_id.strip()} removed ({removed} assignment(s) with it)")


# --- permission sets ------------------------------------------------------------------------------------

permission_set = AppGroup("permission-set", help="Permission sets: an IAM role and a session length.")


def _pset_options(func: F) -> F:
    """The settings shared by `add` and `update`; an option not given means default (add) or unchanged."""
    decorators = [
        click.option("--session-duration", "session_hours", type=int, metavar="HOURS",
                     help="How long an AWS console session lasts, 1 to 12 hours."),
        click.option("--role-name", help="The IAM role assumed in each account (default: the set's name)."),
        click.option("--description", help="What the set is for (\"\" clears it)."),
        click.option("--managed-policy", "managed_policies", multiple=True, metavar="ARN",
                     help="A managed policy ARN for whoever provisions the role; repeat for each. Replaces the "
                          "list."),
        click.option("--inline-policy", type=click.Path(dir_okay=False), metavar="FILE",
                     help="An inline policy, a JSON object, for whoever provisions the role."),
        click.option("--relay-state", metavar="URL",
                     help="Where AWS opens after sign-in, e.g. https://console.aws.amazon.com/ec2/ (\"\" clears)."),
        click.option("--mfa-required/--no-mfa-required", default=None,
                     help="Grant the set only to a sign-in with MFA (none has MFA yet: nobody gets it)."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _read_policy(path: str) -> dict[str, Any]:
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise BadRequest(f"{path} holds JSON but not an object: a policy is {{\"Version\": ..., \"Statement\": ...}}")
    return data


def _spec(session_hours: int | None, role_name: str | None, description: str | None,
          managed_policies: tuple[str, ...], inline_policy: str | None, relay_state: str | None,
          mfa_required: bool | None, *, no_managed_policies: bool = False, no_inline_policy: bool = False,
          ) -> PermissionSetSpec:
    if (no_managed_policies and managed_policies) or (no_inline_policy and inline_policy):
        raise click.UsageError("an option and its --no- counterpart cannot both be given")
    policies = () if no_managed_policies else managed_policies or None
    inline = {} if no_inline_policy else _read_policy(inline_policy) if inline_policy else None
    return PermissionSetSpec(session_hours=session_hours, role_name=role_name, description=description,
                             managed_policy_arns=policies, inline_policy=inline, relay_state=relay_state,
                             mfa_required=mfa_required)


@permission_set.command("add")
@click.argument("name")
@_pset_options
def pset_add(name: str, **options: Any) -> None:
    """Add a permission set (--session-duration is required)."""
    created = permission_sets.add_permission_set(name, _spec(**options), actor=actor())
    click.echo(f"permission set '{created.name}' added (role {created.role_name}, "
               f"{created.session_duration_seconds // 3600}h sessions)")


@permission_set.command("update")
@click.argument("name")
@_pset_options
@click.option("--no-managed-policies", is_flag=True, help="Clear the managed policy list.")
@click.option("--no-inline-policy", is_flag=True, help="Clear the inline policy.")
def pset_update(name: str, no_managed_policies: bool, no_inline_policy: bool, **options: Any) -> None:
    """Change the given settings of a permission set; the others stay."""
    spec = _spec(**options, no_managed_policies=no_managed_policies, no_inline_policy=no_inline_policy)
    changed = permission_sets.update_permission_set(name, spec, actor=actor())
    if not changed:
        click.echo("nothing changed")
    for key, change in changed.items():
        before, after = change["from"], change["to"]
        if key == "inline_policy":
            before, after = ("set" if v else "none" for v in (before, after))
        click.echo(f"{key}: {before} -> {after}")


@permission_set.command("list")
@json_flag
def pset_list(as_json: bool) -> None:
    """List the permission sets."""
    found = permission_sets.list_permission_sets()
    if as_json:
        click.echo(json.dumps([permission_sets.describe_permission_set(p) for p in found], indent=2))
        return
    if not found:
        click.echo("no permission sets")
    for p in found:
        click.echo(f"{p.name}\t{p.session_duration_seconds // 3600}h\t{p.role_name}\t"
                   f"{'mfa' if p.mfa_required else ''}\t{p.description or ''}".rstrip())


@permission_set.command("show")
@click.argument("name")
@json_flag
def pset_show(name: str, as_json: bool) -> None:
    """Show a permission set and its assignments."""
    echo_record(permission_sets.describe_permission_set(permission_sets.require_permission_set(name)), as_json,
                render={"inline_policy": lambda p: [json.dumps(p, sort_keys=True) if p else "-"]})


@permission_set.command("delete")
@click.argument("name")
@click.option("--force", is_flag=True, help="Also delete the assignments that use it.")
@yes_flag
def pset_delete(name: str, force: bool, yes: bool) -> None:
    """Delete a permission set; refused while assignments use it, unless --force."""
    used = permission_sets.describe_permission_set(permission_sets.require_permission_set(name))["assignments"]
    if not yes and (force or not used):  # else the service refuses: no question first
        click.confirm(f"Delete permission set '{name.strip()}'"
                      + (f" and its {len(used)} assignment(s)?" if used else "?"), abort=True)
    removed = permission_sets.delete_permission_set(name, force=force, actor=actor())
    click.echo(f"permission set '{name.strip()}' deleted ({removed} assignment(s) with it)")


# --- assignments ----------------------------------------------------------------------------------------

_PRINCIPAL_HELP = ("USER_OR_GROUP is user:NAME, group:NAME, or a bare name (a user, else a group); use group:NAME "
                   "for a directory group nobody has signed in with yet.")


def _one_target(account: str | None, ou: str | None) -> None:
    if (account is None) == (ou is None):
        raise click.UsageError("give exactly one of --account ACCOUNT_ID or --ou OU")


@click.command("assign", help="Give a user or group a permission set in an account, or in every account of an "
                              "OU and its sub-OUs (accounts added later included). " + _PRINCIPAL_HELP)
@click.argument("principal", metavar="USER_OR_GROUP")
@click.argument("permission_set_name", metavar="PERMISSION_SET")
@click.option("--account", metavar="ACCOUNT_ID")
@click.option("--ou", metavar="OU")
@until_option
@with_appcontext
def assign(principal: str, permission_set_name: str, account: str | None, ou: str | None,
           until: str | None) -> None:
    _one_target(account, ou)
    _echo_assigned("assigned", assignments.assign(principal, permission_set_name, account=account, ou=ou,
                                                  until=_until(until), actor=actor()))


@click.command("unassign", help="Take a permission set back from a user or group in an account or OU. "
                                + _PRINCIPAL_HELP)
@click.argument("principal", metavar="USER_OR_GROUP")
@click.argument("permission_set_name", metavar="PERMISSION_SET")
@click.option("--account", metavar="ACCOUNT_ID")
@click.option("--ou", metavar="OU")
@with_appcontext
def unassign(principal: str, permission_set_name: str, account: str | None, ou: str | None) -> None:
    _one_target(account, ou)
    _echo_assigned("unassigned", assignments.unassign(principal, permission_set_name, account=account, ou=ou,
                                                      actor=actor()))


# --- applications ---------------------------------------------------------------------------------------

app = AppGroup("app", help="Who may use each application (SAML SP or OIDC client). APP is an SP's entity ID, an "
                           "OIDC client's id, or their name.")


@app.command("assign", help="Let a user or group use an application. " + _PRINCIPAL_HELP)
@click.argument("app_name", metavar="APP")
@click.argument("principal", metavar="USER_OR_GROUP")
@until_option
def app_assign(app_name: str, principal: str, until: str | None) -> None:
    _echo_assigned("assigned", assignments.assign_app(app_name, principal, until=_until(until), actor=actor()))


@app.command("unassign", help="Take an application back from a user or group. " + _PRINCIPAL_HELP)
@click.argument("app_name", metavar="APP")
@click.argument("principal", metavar="USER_OR_GROUP")
def app_unassign(app_name: str, principal: str) -> None:
    _echo_assigned("unassigned", assignments.unassign_app(app_name, principal, actor=actor()))


@app.command("open-to-all")
@click.argument("app_name", metavar="APP")
@click.option("--off", is_flag=True, help="Back to assigned users and groups only.")
def app_open_to_all(app_name: str, off: bool) -> None:
    """Let every signed-in user use an application (or, with --off, only those assigned)."""
    changed = assignments.set_open_to_all(app_name, not off, actor=actor())
    state = "assigned users and groups only" if off else "open to all"
    click.echo(f"{app_name.strip()}: {state}" + ("" if changed else " (already)"))


@app.command("list")
@json_flag
def app_list(as_json: bool) -> None:
    """List applications and who may use them."""
    found = assignments.describe_apps()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo("no applications")
    for a in found:
        who = "open to all" if a["open_to_all"] else "; ".join(a["assigned"]) or "nobody"
        click.echo(f"{a['kind']}\t{a['key']}\t{a['name']}\t{who}")


# --- effective access -----------------------------------------------------------------------------------

access = AppGroup("access", help="Effective access, as the bridge decides it.")


def _hours(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}h" if hours else "") + (f"{rest // 60}m" if rest // 60 or not hours else "")


def _source_text(source: Source) -> str:
    if source.scope == "open to all":
        return "open to all"
    text = source.via if source.scope == "app" else f"{source.via} via {source.scope}"
    return text + _ended(source.until)


def _role_lines(role: RoleGrant) -> list[str]:
    return [f"  {role.account_name} ({role.account_id})  {role.permission_set}  {role.role_arn}  "
            f"session {_hours(role.session_seconds)}{_ended(role.until)}",
            *(f"    from {_source_text(s)}" for s in role.sources)]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@access.command("show")
@click.argument("username", metavar="USER")
@json_flag
def access_show(username: str, as_json: bool) -> None:
    """Every account role and application the user may open now, and where each comes from."""
    found = assignments.effective_access(username)
    p = found.principal
    if as_json:
        click.echo(json.dumps(_jsonable({
            "user": p.username, "source": p.source, "enabled": found.enabled, "groups": list(p.groups),
            "roles": [asdict(r) for r in found.grant.roles], "apps": [asdict(a) for a in found.grant.apps],
            "with_mfa_only": [asdict(r) for r in found.with_mfa_only]}), indent=2))
        return
    click.echo(f"user {p.username} ({p.source}){'' if found.enabled else ', disabled: signs in nowhere'}; "
               f"groups: {', '.join(p.groups) or '-'}")
    click.echo("accounts:" + ("" if found.grant.roles else " none"))
    for role in found.grant.roles:
        for line in _role_lines(role):
            click.echo(line)
    click.echo("apps:" + ("" if found.grant.apps else " none"))
    for a in found.grant.apps:
        click.echo(f"  {a.name} ({a.kind} {a.key}){_ended(a.until)}")
        for s in a.sources:
            click.echo(f"    from {_source_text(s)}")
    if found.with_mfa_only:
        click.echo("only after signing in with MFA:")
        for role in found.with_mfa_only:
            for line in _role_lines(role):
                click.echo(line)
