"""Attribute release: what an application receives from a principal under its release map."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idp.access.claims import SOURCES, ReleasedAttribute, add_role, parse_role_spec, release, validate_rules
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


ROLE_RULE = {"attribute": "roles", "name": "https://example.com/role", "name_format": URI,
             "roles": {"engineers": ["developer"], "staff": ["viewer", "developer"], "admins": ["owner"],
                       "sales": ["seller"]}}


def test_a_role_map_releases_the_roles_of_every_group_in_rule_order_each_once() -> None:
    released = release(principal(groups=("admins", "engineers", "rnd", "staff")), [ROLE_RULE])
    assert released == [ReleasedAttribute("roles", "https://example.com/role", ("developer", "viewer", "owner"),
                                           URI)]


def test_a_role_map_matches_group_names_in_any_case() -> None:
    # Active Directory spells a group as it was made ("Engineers"); the admin typed it as engineers.
    released = release(principal(groups=("Engineers", "STAFF")), [ROLE_RULE])
    assert released == [ReleasedAttribute("roles", "https://example.com/role", ("developer", "viewer"), URI)]


def test_a_role_map_with_no_matching_group_releases_nothing() -> None:
    rules = [ROLE_RULE, {"attribute": "username", "name": "uid"}]
    assert [a.name for a in release(principal(groups=("rnd",)), rules)] == ["uid"]
    assert [a.name for a in release(principal(groups=()), rules)] == ["uid"]


def test_a_bad_stored_role_map_is_skipped_not_fatal() -> None:
    rules = [{"attribute": "roles", "name": "role", "roles": ["engineers"]}, {"attribute": "username", "name": "uid"}]
    assert [a.name for a in release(principal(), rules)] == ["uid"]


@pytest.mark.parametrize("roles, message", [
    (None, "'roles' must map group names to lists of roles"),
    ({}, "'roles' must map group names to lists of roles"),
    (["engineers"], "'roles' must map group names to lists of roles"),
    ({"engineers": []}, "group 'engineers' must map to a non-empty list"),
    ({"engineers": "developer"}, "group 'engineers' must map to a non-empty list"),
    ({"engineers": ["developer", 7]}, "group 'engineers' must map to a non-empty list"),
    ({"engineers": [""]}, "group 'engineers' must map to a non-empty list"),
    ({"": ["developer"]}, "group '' must be a non-empty name"),
])
def test_validate_rules_refuses_bad_role_maps(roles: object, message: str) -> None:
    (problem,) = validate_rules([{"attribute": "roles", "name": "role", "roles": roles}])
    assert problem.startswith("rule 1: ") and message in problem


def test_validate_rules_accepts_a_role_map_only_on_a_roles_rule() -> None:
    assert validate_rules([ROLE_RULE]) == []
    (problem,) = validate_rules([{"attribute": "groups", "name": "g", "roles": {"staff": ["viewer"]}}])
    assert "only a 'roles' rule takes a role map" in problem
    (problem,) = validate_rules([{"attribute": "roles", "roles": {"staff": ["viewer"]}}])
    assert "name" in problem


def test_role_specs_and_adding_roles_to_a_map() -> None:
    assert parse_role_spec("https://example.com/role:engineers=arn:aws:iam::1:role/x") == (
        "https://example.com/role", "engineers", "arn:aws:iam::1:role/x")
    for bad in ("role", "role=x", "engineers=developer", ":engineers=developer", "role:engineers=", "role:=x"):
        with pytest.raises(ValueError, match="NAME:GROUP=ROLE"):
            parse_role_spec(bad)
    base = [{"attribute": "email", "name": "mail"}]
    rules = add_role(base, "role", "engineers", "developer", scope="groups")
    rules = add_role(rules, "role", "staff", "viewer")
    rules = add_role(rules, "role", "engineers", "developer")  # already there: not repeated
    rules = add_role(rules, "role", "engineers", "reviewer")
    rules = add_role(rules, "other", "staff", "x")
    assert base == [{"attribute": "email", "name": "mail"}]
    assert rules == [
        {"attribute": "email", "name": "mail"},
        {"attribute": "roles", "name": "role", "scope": "groups",
         "roles": {"engineers": ["developer", "reviewer"], "staff": ["viewer"]}},
        {"attribute": "roles", "name": "other", "roles": {"staff": ["x"]}},
    ]
    assert validate_rules(rules) == []
