"""``idp sp ...``: register and manage SAML service providers from their metadata."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask.cli import AppGroup

from idp.access.claims import add_role, role_map_text
from idp.cli_support import actor, echo_record, role_spec
from idp.errors import BadRequest
from idp.saml import presets, providers
from idp.saml.metadata import NAMEID_FORMATS

F = TypeVar("F", bound=Callable[..., Any])

sp = AppGroup("sp", help="SAML service providers.")

_SHORT_NAMEID = {urn: short for short, urn in NAMEID_FORMATS.items()}


def _setting_options(func: F) -> F:
    """The per-SP switches shared by `add` and `set`; an unset switch means default (add) or unchanged (set)."""
    decorators = [
        click.option("--name", help="A display name (default: from the metadata, else the entityID)."),
        click.option("--nameid-format", metavar="FORMAT",
                     help="email, persistent, transient, unspecified, or one of their URNs."),
        click.option("--sign-response/--no-sign-response", default=None, help="Sign the Response (default on)."),
        click.option("--sign-assertion/--no-sign-assertion", default=None,
                     help="Sign the Assertion (default on)."),
        click.option("--encrypt-assertion/--no-encrypt-assertion", default=None,
                     help="Encrypt the assertion to the SP's encryption certificate (default off)."),
        click.option("--require-signed-requests/--no-require-signed-requests", default=None,
                     help="Refuse unsigned AuthnRequests (default: the metadata's AuthnRequestsSigned)."),
        click.option("--allow-sha1/--no-allow-sha1", default=None,
                     help="Accept SHA-1 signatures from this SP (default off; SHA-1 is broken)."),
        click.option("--attribute", "attributes", multiple=True, metavar="OURS=NAME[;FORMAT]",
                     help="Release our attribute OURS as NAME (FORMAT basic|uri|unspecified). Repeat for each; "
                          "when given, the SP gets exactly these attributes."),
        click.option("--role", "roles", multiple=True, metavar="[NAME:]GROUP=ROLE",
                     help="Release ROLE in attribute NAME to members of GROUP (directory and nested groups "
                          "included). Repeat for each; adds to that attribute's role map. With --preset, NAME "
                          "may be left out for the preset's role attribute."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _options(kwargs: dict[str, Any], current: list[dict[str, Any]] | None = None,
             role_attribute: tuple[str, str] | None = None) -> providers.SpOptions:
    """The settings given; ``current`` is the release map that ``--role`` extends when ``--attribute`` is not
    given (the SP's own map for `set`, the preset's or the default map for `add`). ``role_attribute`` (name,
    name format) is the attribute a ``--role GROUP=ROLE`` without a NAME goes to."""
    attributes, roles = kwargs.pop("attributes"), kwargs.pop("roles")
    rules = [providers.parse_attribute_rule(a) for a in attributes] if attributes else None
    if roles:
        if rules is None:
            rules = list(current) if current is not None else providers.default_attribute_map()
        for spec in roles:
            name, group, role = _role(spec, role_attribute)
            fmt = role_attribute[1] if role_attribute and name == role_attribute[0] else providers.NAME_FORMATS["basic"]
            rules = add_role(rules, name, group, role, name_format=fmt)
    return providers.SpOptions(**kwargs, attribute_map=tuple(rules) if rules is not None else None)


def _role(spec: str, role_attribute: tuple[str, str] | None) -> tuple[str, str, str]:
    """``NAME:GROUP=ROLE``, or ``GROUP=ROLE`` when a preset names its role attribute."""
    group, sep, role = spec.partition("=")
    if role_attribute and sep and ":" not in group and group.strip() and role.strip():
        return role_attribute[0], group.strip(), role.strip()
    return role_spec(spec)


@sp.command("add")
@click.option("--metadata", "source", metavar="FILE_OR_URL", help="The SP's metadata.")
@click.option("--preset", metavar="NAME", help="Build the metadata from an app preset (see `idp sp presets`).")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A preset's parameter (its account-specific values). Repeat for each.")
@_setting_options
def add(source: str | None, preset: str | None, params: tuple[str, ...], **kwargs: Any) -> None:
    """Register a service provider from its metadata, or from an app preset and its parameters."""
    if (source is None) == (preset is None):
        raise BadRequest("give either --metadata FILE_OR_URL or --preset NAME")
    if params and preset is None:
        raise BadRequest("--param goes with --preset")
    recorded: str | None
    if preset is None:
        assert source is not None
        options = _options(kwargs)
        xml, recorded = providers.fetch_metadata(source), providers.source_of(source)
    else:
        found = presets.load(preset)
        xml = presets.render(found, presets.parse_params(params))
        recorded = presets.source_of(found)
        if kwargs["nameid_format"] is None:
            kwargs["nameid_format"] = found.nameid_format
        options = _options(kwargs, list(found.attributes), presets.role_attribute_of(found))
        if options.attribute_map is None:
            options = dataclasses.replace(options, attribute_map=found.attributes)
    provider = providers.add(xml, recorded, options, actor())
    click.echo(f"registered service provider '{provider.entity_id}' ({provider.name})")


@sp.command("presets")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def presets_(as_json: bool) -> None:
    """List the app presets `idp sp add --preset` takes, with their parameters and defaults."""
    found = presets.load_all()
    if as_json:
        click.echo(json.dumps([_preset_record(p) for p in found], indent=2))
        return
    if not found:
        click.echo(f"no presets in {presets.presets_dir()}")
    for p in found:
        role = f"; roles in {p.role_attribute.name}" if p.role_attribute else ""
        source = f"metadata {p.metadata_file.name}" if p.metadata_file else p.entity_id
        click.echo(f"{p.key}\t{p.display_name}\t{source}{role}")
        for param in p.parameters:
            when = (f"default {param.default}" if param.default is not None
                    else "required" if param.required else "optional")
            click.echo(f"  --param {param.name}=...\t{when}\t{param.help}")


def _preset_record(p: presets.Preset) -> dict[str, Any]:
    return {
        "name": p.key, "display_name": p.display_name, "entity_id": p.entity_id, "acs": list(p.acs),
        "metadata_file": p.metadata_file.name if p.metadata_file else None,
        "nameid_format": p.nameid_format,
        "parameters": [dataclasses.asdict(param) for param in p.parameters],
        "attributes": [dict(r) for r in p.attributes],
        "role_attribute": dataclasses.asdict(p.role_attribute) if p.role_attribute else None,
    }


@sp.command("set")
@click.argument("entity_id")
@_setting_options
def set_(entity_id: str, **kwargs: Any) -> None:
    """Change a service provider's settings."""
    current = providers.get_or_404(entity_id).attribute_map if kwargs["roles"] else None
    changed = providers.update(entity_id, _options(kwargs, current), actor())
    if not changed:
        click.echo("nothing changed")
    for key, change in changed.items():
        if key == "attribute_map":
            click.echo("attribute_map: " + _attributes_text(change["to"]))
        else:
            click.echo(f"{key}: {change['from']} -> {change['to']}")


@sp.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(as_json: bool) -> None:
    """List the registered service providers."""
    sps = providers.all_providers()
    if as_json:
        click.echo(json.dumps([providers.describe(p) for p in sps], indent=2))
        return
    if not sps:
        click.echo("no service providers registered")
        return
    for p in sps:
        flags = [f for f, on in (("signed-response", p.sign_response), ("signed-assertion", p.sign_assertion),
                                 ("encrypted", p.encrypt_assertion),
                                 ("signed-requests", p.require_signed_requests),
                                 ("sha1", p.allow_sha1)) if on]
        nameid = _SHORT_NAMEID.get(p.nameid_format, p.nameid_format)
        click.echo(f"{p.entity_id}\t{p.name}\t{nameid}\t{','.join(flags)}")


@sp.command("show")
@click.argument("entity_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(entity_id: str, as_json: bool) -> None:
    """Show one service provider: settings, endpoints and certificates."""
    echo_record(providers.describe(providers.get_or_404(entity_id)), as_json, render={
        "attribute_map": lambda rules: [_attributes_text(rules)],
        "acs": _endpoint_lines,
        "slo": _endpoint_lines,
    })


def _endpoint_lines(endpoints: list[dict[str, str]]) -> list[str]:
    return [f"{e['location']} ({e['binding'].rsplit(':', 1)[-1]})" for e in endpoints]


@sp.command("remove")
@click.argument("entity_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove(entity_id: str, yes: bool) -> None:
    """Unregister a service provider."""
    providers.get_or_404(entity_id)
    if not yes:
        click.confirm(f"remove service provider '{entity_id}'?", abort=True)
    providers.remove(entity_id, actor())
    click.echo(f"removed service provider '{entity_id}'")


@sp.command("refresh")
@click.argument("entity_id")
def refresh(entity_id: str) -> None:
    """Re-read a service provider's metadata from its recorded file or URL; settings are kept."""
    changed = providers.refresh(entity_id, actor())
    click.echo(f"metadata of '{entity_id}' " + ("updated" if changed else "unchanged"))


def _attributes_text(rules: list[dict[str, Any]]) -> str:
    short = {urn: name for name, urn in providers.NAME_FORMATS.items()}
    return ", ".join(
        f"{r['attribute']}={r['name']};{short.get(r['name_format'], r['name_format'])}{role_map_text(r)}"
        for r in rules
    ) or "(none)"
