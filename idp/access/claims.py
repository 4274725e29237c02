"""Claims: which of a principal's attributes an application receives, and under which names.

One function, :func:`release`, turns a :class:`Principal` and an application's release map into the
attributes that application gets. SAML puts them in an AttributeStatement (name, name format, friendly
name); OIDC will use the same rules with ``name`` as the claim name. Nothing here knows a wire format.

A rule whose attribute is ``roles`` maps groups to an application's roles: ``{"attribute": "roles", "name":
"https://example.com/role", "roles": {"engineers": ["developer"], "staff": ["viewer"]}}`` releases the roles
of every group the principal is in (directory and nested groups included, as the Principal has them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from idp.authn.principal import Principal, group_key
from idp.saml.xmlsafe import fits_xml

log = logging.getLogger(__name__)


def _single(value: str | None) -> tuple[str, ...]:
    return (value,) if value else ()


# Our attribute names and how to read each from a principal. Multi-valued attributes (groups) give
# several values; a missing value gives none, and the attribute is then not released at all.
SOURCES: dict[str, Callable[[Principal], tuple[str, ...]]] = {
    "username": lambda p: _single(p.username),
    "email": lambda p: _single(p.email),
    "given_name": lambda p: _single(p.given_name),
    "family_name": lambda p: _single(p.family_name),
    "display_name": lambda p: _single(p.display_name),
    "groups": lambda p: tuple(p.groups),
}


# The attribute of a group-to-role rule: not a SOURCES entry, since its values come from the rule's map.
ROLES = "roles"


def mapped_roles(principal: Principal, roles: Mapping[str, Iterable[str]]) -> tuple[str, ...]:
    """The roles of every group the principal is in, in the map's order, each once."""
    groups = {group_key(g) for g in principal.groups}  # in any case, as Principal.in_group; folded once
    return tuple(dict.fromkeys(r for group, rs in roles.items() if group_key(group) in groups for r in rs if r))


def parse_role_spec(spec: str) -> tuple[str, str, str]:
    """``NAME:GROUP=ROLE`` (the ``--role`` option) into (name, group, role). NAME may itself contain ``:``
    (a URI); the group is what follows its last ``:`` before the first ``=``."""
    left, sep, role = spec.partition("=")
    name, colon, group = left.rpartition(":")
    name, group, role = name.strip(), group.strip(), role.strip()
    if not (sep and colon and name and group and role):
        raise ValueError(f"role {spec!r} must look like NAME:GROUP=ROLE")
    return name, group, role


def add_role(rules: Iterable[Mapping[str, Any]], name: str, group: str, role: str,
             **new_rule: Any) -> list[dict[str, Any]]:
    """``rules`` with GROUP=ROLE added to the roles rule named NAME; a new one (``new_rule``'s extra keys
    such as name_format or scope) at the end when there is none. The given rules are not changed."""
    out = [dict(r) for r in rules]
    rule = next((r for r in out if r.get("attribute") == ROLES and r.get("name") == name), None)
    if rule is None:
        rule = {"attribute": ROLES, "name": name, **new_rule, "roles": {}}
        out.append(rule)
    roles = {g: list(rs) for g, rs in dict(rule.get("roles") or {}).items()}
    if role not in roles.setdefault(group, []):
        roles[group].append(role)
    rule["roles"] = roles
    return out


def rule_text(rule: Mapping[str, Any]) -> str:
    """A rule in a line, for audit events and listings: ``ours=name``, with a roles rule's map."""
    return f"{rule.get('attribute')}={rule.get('name')}{role_map_text(rule)}"


def role_map_text(rule: Mapping[str, Any]) -> str:
    """`` {group=role,role group=role}`` for a roles rule, else empty."""
    if rule.get("attribute") != ROLES or not isinstance(rule.get("roles"), Mapping):
        return ""
    return " {" + " ".join(f"{g}={','.join(map(str, rs))}" for g, rs in rule["roles"].items()) + "}"


def _role_map_problems(roles: object) -> list[str]:
    if not isinstance(roles, Mapping) or not roles:
        return ["'roles' must map group names to lists of roles"]
    problems: list[str] = []
    for group, values in roles.items():
        if not isinstance(group, str) or not group:
            problems.append(f"group {group!r} must be a non-empty name")
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, str) and v for v in values)):
            problems.append(f"group {group!r} must map to a non-empty list of non-empty role names")
        elif not all(fits_xml(v) for v in values):
            problems.append(f"group {group!r} maps to a role name with a control character")
    return problems


@dataclass(frozen=True)
class ReleasedAttribute:
    """One attribute as the application will see it."""

    attribute: str  # our name (a key of SOURCES, or ROLES), kept for audit and debugging
    name: str  # the name the application expects (SAML Attribute Name, OIDC claim name)
    values: tuple[str, ...]
    name_format: str | None = None  # SAML only
    friendly_name: str | None = None  # SAML only


def validate_rules(rules: Iterable[Mapping[str, Any]]) -> list[str]:
    """Problems in a release map, for the CLI/admin to refuse it before it is stored."""
    rules = list(rules)
    problems: list[str] = []
    for i, rule in enumerate(rules):
        source = rule.get("attribute")
        if source == ROLES:
            problems.extend(f"rule {i + 1}: {p}" for p in _role_map_problems(rule.get("roles")))
        elif source not in SOURCES:
            problems.append(f"rule {i + 1}: unknown attribute {source!r} (known: {', '.join([*SOURCES, ROLES])})")
        elif "roles" in rule:
            problems.append(f"rule {i + 1}: only a {ROLES!r} rule takes a role map")
        if not isinstance(rule.get("name"), str) or not rule.get("name"):
            problems.append(f"rule {i + 1}: a non-empty 'name' is required")
        # They go into SAML assertions (and role names into every one that releases them).
        problems.extend(f"rule {i + 1}: '{key}' may not contain a control character" for key in
                        ("name", "friendly_name", "name_format")
                        if isinstance(rule.get(key), str) and not fits_xml(rule[key]))
    names = [str(r.get("name")) for r in rules if r.get("name")]
    # Two values under one name: an SP or client keeps one of them, whichever it reads last.
    problems.extend(f"the name {n!r} is given twice" for n in dict.fromkeys(names) if names.count(n) > 1)
    return problems


def release(principal: Principal, rules: Iterable[Mapping[str, Any]]) -> list[ReleasedAttribute]:
    """The attributes an application gets, in rule order.

    Each rule is ``{"attribute": <our name>, "name": <its name>, "name_format": ..., "friendly_name": ...}``.
    Attributes without a value are left out, since an empty attribute tells an application nothing it can
    use and some reject it. A rule naming an unknown attribute is skipped with a warning: maps are
    validated when stored (:func:`validate_rules`), and a stale rule must not break every sign-in.
    A ``roles`` rule releases :func:`mapped_roles` under its ``roles`` map, and nothing when no group matches.
    """
    out: list[ReleasedAttribute] = []
    for rule in rules:
        source = rule.get("attribute")
        if source == ROLES:
            role_map = rule.get("roles") or {}
            if _role_map_problems(role_map):
                log.warning("release map has a bad role map for %r; skipped", rule.get("name"))
                continue
            values = mapped_roles(principal, role_map)
        else:
            reader = SOURCES.get(source) if isinstance(source, str) else None
            if reader is None:
                log.warning("release map names unknown attribute %r; skipped", source)
                continue
            values = tuple(v for v in reader(principal) if v)
        if not values:
            continue
        out.append(ReleasedAttribute(
            attribute=str(source),
            name=str(rule.get("name") or source),
            values=values,
            name_format=rule.get("name_format") or None,
            friendly_name=rule.get("friendly_name") or None,
        ))
    return out
