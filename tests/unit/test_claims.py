"""Attribute release: what an application receives from a principal under its release map."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idp.access.claims import SOURCES, ReleasedAttribute, release, validate_rules
from idp.authn.principal import Principal

URI = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"


def principal(**overrides: object) -> Principal:
    values: dict[str, object] = {
        "user_id": 1, "username": "alice", "email": "alice@example.test", "given_name": "Alice",
        "family_name": "Liddell", "display_name": "Alice Liddell", "groups": ("admins", "staff"),
        "source": "local", "authn_at": datetime(2025, 1, 1, tzinfo=UTC),
    }
    values.update(overrides)
    return Principal(**values)  # type: ignore[arg-type]


def test_release_maps_names_formats_and_keeps_rule_order() -> None:
    rules = [
        {"attribute": "groups", "name": "urn:oid:1.3.6.1.4.1.5923.1.5.1.1", "name_format": URI,
         "friendly_name": "isMemberOf"},
        {"attribute": "email", "name": "mail"},
    ]
    assert release(principal(), rules) == [
        ReleasedAttribute("groups", "urn:oid:1.3.6.1.4.1.5923.1.5.1.1", ("admins", "staff"), URI, "isMemberOf"),
        ReleasedAttribute("email", "mail", ("alice@example.test",)),
    ]


def test_attributes_without_a_value_are_left_out() -> None:
    rules = [{"attribute": "email", "name": "mail"}, {"attribute": "groups", "name": "groups"},
             {"attribute": "username", "name": "uid"}]
    released = release(principal(email=None, groups=()), rules)
    assert [a.name for a in released] == ["uid"]


def test_unknown_attribute_is_skipped_not_fatal() -> None:
    released = release(principal(), [{"attribute": "password_hash", "name": "pw"},
                                     {"attribute": "username", "name": "uid"}])
    assert [a.name for a in released] == ["uid"]


def test_nothing_is_released_without_rules() -> None:
    assert release(principal(), []) == []


def test_validate_rules_names_each_problem() -> None:
    problems = validate_rules([{"attribute": "shoe_size", "name": "x"}, {"attribute": "email"}])
    assert len(problems) == 2
    assert "shoe_size" in problems[0]
    assert "name" in problems[1]
    assert validate_rules([{"attribute": a, "name": a} for a in SOURCES]) == []


@given(
    groups=st.lists(st.text(min_size=0, max_size=8), max_size=5).map(tuple),
    email=st.one_of(st.none(), st.text(max_size=10)),
)
def test_released_attributes_never_carry_empty_values(groups: tuple[str, ...], email: str | None) -> None:
    rules = [{"attribute": a, "name": a} for a in SOURCES]
    for attr in release(principal(groups=groups, email=email), rules):
        assert attr.values
        assert all(attr.values)


@pytest.mark.parametrize("attribute", sorted(SOURCES))
def test_every_source_is_readable(attribute: str) -> None:
    released = release(principal(), [{"attribute": attribute, "name": "n"}])
    assert len(released) == 1
