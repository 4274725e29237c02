"""Claims: which of a principal's attributes an application receives, and under which names.

One function, :func:`release`, turns a :class:`Principal` and an application's release map into the
attributes that application gets. SAML puts them in an AttributeStatement (name, name format, friendly
name); OIDC will use the same rules with ``name`` as the claim name. Nothing here knows a wire format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from idp.authn.principal import Principal

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


@dataclass(frozen=True)
class ReleasedAttribute:
    """One attribute as the application will see it."""

    attribute: str  # our name (a key of SOURCES), kept for audit and debugging
    name: str  # the name the application expects (SAML Attribute Name, OIDC claim name)
    values: tuple[str, ...]
    name_format: str | None = None  # SAML only
    friendly_name: str | None = None  # SAML only


def validate_rules(rules: Iterable[Mapping[str, Any]]) -> list[str]:
    """Problems in a release map, for the CLI/admin to refuse it before it is stored."""
    problems = []
    for i, rule in enumerate(rules):
        source = rule.get("attribute")
        if source not in SOURCES:
            problems.append(f"rule {i + 1}: unknown attribute {source!r} (known: {', '.join(SOURCES)})")
        if not isinstance(rule.get("name"), str) or not rule.get("name"):
            problems.append(f"rule {i + 1}: a non-empty 'name' is required")
    return problems


def release(principal: Principal, rules: Iterable[Mapping[str, Any]]) -> list[ReleasedAttribute]:
    """The attributes an application gets, in rule order.

    Each rule is ``{"attribute": <our name>, "name": <its name>, "name_format": ..., "friendly_name": ...}``.
    Attributes without a value are left out, since an empty attribute tells an application nothing it can
    use and some reject it. A rule naming an unknown attribute is skipped with a warning: maps are
    validated when stored (:func:`validate_rules`), and a stale rule must not break every sign-in.
    """
    out: list[ReleasedAttribute] = []
    for rule in rules:
        source = rule.get("attribute")
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
