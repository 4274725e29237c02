"""``idp oidc-client ...``: register and manage OpenID Connect clients; ``idp oidc-consent ...``: users'
consents to third-party clients."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import click
from flask.cli import AppGroup

from idp.access.claims import add_role, rule_text
from idp.authn import directory
from idp.cli_support import actor, echo_record, read_json_file, role_spec
from idp.errors import BadRequest
from idp.oidc import clients, consent

oidc_client = AppGroup("oidc-client", help="OpenID Connect clients.")


def _read_jwks(path: str | None) -> dict[str, Any] | None:
    if path is None:
        return None
    data = read_json_file(path)
    if isinstance(data, dict) and "keys" not in data and "kty" in data:
        data = {"keys": [data]}  # a single JWK
    if not isinstance(data, dict):
        raise BadRequest(f"{path} is not a JWKS")
    return data


_require_pkce_option = click.option(
    "--require-pkce/--no-require-pkce", default=None,
    help="A confidential client must send a PKCE code_challenge too (a public one always must).")
_access_token_format_option = click.option(
    "--access-token-format", type=click.Choice(clients.ACCESS_TOKEN_FORMATS),
    help="opaque (default), or jwt: RFC 9068 access tokens, signed RS256, with the client id as audience.")


@oidc_client.command("add")
@click.option("--name", required=True, help="A display name.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, metavar="URI",
              help="A redirect URI, matched exactly. Repeat for each.")
@click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True, metavar="URI")
@click.option("--public", is_flag=True, help="A client that cannot keep a secret (SPA, native app): PKCE only.")
@click.option("--grant", "grants", multiple=True, type=click.Choice(clients.GRANT_TYPES),
              help="Allowed grant (default: authorization_code and refresh_token). Repeat for each.")
@click.option("--scope", "scopes", multiple=True, type=click.Choice(clients.SCOPES),
              help="Allowed scope (default: all). Repeat for each.")
@click.option("--auth-method", type=click.Choice(clients.AUTH_METHODS),
              help="Token endpoint authentication (default client_secret_basic).")
@click.option("--jwks-file", type=click.Path(dir_okay=False), help="The client's public keys, for private_key_jwt.")
@click.option("--id-token-alg", type=click.Choice(clients.ID_TOKEN_ALGS), default="RS256", show_default=True)
@click.option("--first-party", is_flag=True, help="Our own application: no consent screen.")
@click.option("--claim", "claims", multiple=True, metavar="OURS=NAME[;SCOPE]",
              help="Release our attribute as this claim when SCOPE (default profile) is granted; repeat for each. "
                   "Given at all, it replaces the default claim map.")
@click.option("--role", "roles", multiple=True, metavar="CLAIM:GROUP=ROLE",
              help="Release ROLE in claim CLAIM (a list, under the groups scope) to members of GROUP, directory "
                   "and nested groups included. Repeat for each; adds to that claim's role map.")
@click.option("--login-url", metavar="URL",
              help="Where the portal sends a user to start signing in to the client (OIDC's initiate_login_uri); "
                   "https, or http on a loopback address.")
@click.option("--open-to-all", is_flag=True,
              help="Every signed-in user may use the client (default: only users and groups it is assigned to).")
@_access_token_format_option
@_require_pkce_option
@click.option("--json", "as_json", is_flag=True, help="Print {client_id, client_secret} as JSON.")
def add(name: str, redirect_uris: tuple[str, ...], post_logout_redirect_uris: tuple[str, ...], public: bool,
        grants: tuple[str, ...], scopes: tuple[str, ...], auth_method: str | None, jwks_file: str | None,
        id_token_alg: str, first_party: bool, claims: tuple[str, ...], roles: tuple[str, ...],
        login_url: str | None, open_to_all: bool, access_token_format: str | None, require_pkce: bool | None,
        as_json: bool) -> None:
    """Register a client; its secret is printed now and never again."""
    claim_map = [clients.claim_rule(c) for c in claims] if claims else None
    if roles:
        claim_map = claim_map if claim_map is not None else [dict(r) for r in clients.DEFAULT_CLAIM_MAP]
        for spec in roles:
            # Under "groups", not "profile": a role discloses group membership (anyone holding the map can
            # read it backwards), so it needs the same grant, and consent, as the groups claim itself.
            claim_map = add_role(claim_map, *role_spec(spec), scope="groups")
    extra: dict[str, Any] = {"claim_map": tuple(claim_map)} if claim_map is not None else {}
    options = clients.ClientOptions(
        name=name, redirect_uris=redirect_uris, post_logout_redirect_uris=post_logout_redirect_uris,
        public=public, grant_types=grants, scopes=scopes, auth_method=auth_method, jwks=_read_jwks(jwks_file),
        id_token_alg=id_token_alg, first_party=first_party, open_to_all=open_to_all, login_url=login_url,
        access_token_format=access_token_format or "opaque", require_pkce=bool(require_pkce), **extra,
    )
    registered = clients.add(options, actor())
    _print_credentials(registered, as_json)


def _print_credentials(registered: clients.Registered, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"client_id": registered.client_id, "client_secret": registered.client_secret}))
        return
    click.echo(f"client_id: {registered.client_id}")
    if registered.client_secret:
        click.echo(f"client_secret: {registered.client_secret}")
        click.echo("The secret is shown only now; store it in the application's configuration.")


@oidc_client.command("update")
@click.argument("client_id")
@click.option("--name", help="A new display name.")
@click.option("--id-token-alg", type=click.Choice(clients.ID_TOKEN_ALGS))
@_access_token_format_option
@_require_pkce_option
def update(client_id: str, name: str | None, id_token_alg: str | None, access_token_format: str | None,
           require_pkce: bool | None) -> None:
    """Change some of a client's settings; what is not given stays as it is."""
    given: dict[str, Any] = {"name": name, "id_token_alg": id_token_alg, "access_token_format": access_token_format,
                             "require_pkce": require_pkce}
    current = clients.options_of(clients.get_or_404(client_id))
    changed = clients.update(client_id, replace(current, **{k: v for k, v in given.items() if v is not None}),
                             actor())
    click.echo(f"updated OIDC client '{client_id}': {', '.join(changed)}" if changed else "nothing changed")


@oidc_client.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json: bool) -> None:
    """List the registered clients."""
    found = clients.all_clients()
    if as_json:
        click.echo(json.dumps([clients.describe(c) for c in found], indent=2))
        return
    if not found:
        click.echo("no OIDC clients registered")
    for c in found:
        click.echo(f"{c.client_id}\t{c.name}\t{c.auth_method}\t{','.join(c.grant_types)}")


@oidc_client.command("show")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(client_id: str, as_json: bool) -> None:
    """Show one client's settings (never its secret: only a hash of it is stored)."""
    echo_record(clients.describe(clients.get_or_404(client_id)), as_json, render={"claim_map": lambda rules: [
        ", ".join(f"{rule_text(r)} ({r.get('scope', 'profile')})" for r in rules)]})


@oidc_client.command("remove")
@click.argument("client_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove(client_id: str, yes: bool) -> None:
    """Unregister a client and revoke its tokens."""
    clients.get_or_404(client_id)
    if not yes:
        click.confirm(f"remove OIDC client '{client_id}'?", abort=True)
    clients.remove(client_id, actor())
    click.echo(f"removed OIDC client '{client_id}'")


@oidc_client.command("rotate-secret")
@click.argument("client_id")
@click.option("--json", "as_json", is_flag=True, help="Print {client_id, client_secret} as JSON.")
def rotate_secret(client_id: str, as_json: bool) -> None:
    """Replace a client's secret; the old one stops working at once."""
    _print_credentials(clients.rotate_secret(client_id, actor()), as_json)


oidc_consent = AppGroup("oidc-consent", help="What users allowed third-party OIDC clients.")


@oidc_consent.command("list")
@click.option("--user", "username", required=True, help="Whose consents.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def consent_list(username: str, as_json: bool) -> None:
    """List the clients a user allowed, with the scopes allowed."""
    user = directory.require_user(username)
    apps = consent.for_user(user.id)
    if as_json:
        click.echo(json.dumps([{"client_id": a.client_id, "name": a.name, "scope": a.scope,
                                "granted_at": a.granted_at.isoformat()} for a in apps], indent=2))
        return
    if not apps:
        click.echo(f"{user.username} has allowed no clients")
    for a in apps:
        click.echo(f"{a.client_id}\t{a.name}\t{a.scope}\t{a.granted_at.isoformat()}")


@oidc_consent.command("revoke")
@click.option("--user", "username", required=True, help="Whose consent.")
@click.option("--client", "client_id", required=True, help="The client's id.")
def consent_revoke(username: str, client_id: str) -> None:
    """Forget a user's consent to a client and revoke the client's tokens for that user."""
    user = directory.require_user(username)
    count = consent.revoke(user.id, user.username, client_id, actor())
    click.echo(f"revoked {user.username}'s consent to '{client_id}' ({count} token(s) revoked)")
