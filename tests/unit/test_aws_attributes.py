"""The AWS SAML attributes (idp.access.aws) and their settings: values AWS accepts whatever the user is called."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from hypothesis import assume, given
from hypothesis import strategies as st

from idp.access import aws
from idp.access.decide import RoleGrant
from idp.authn.principal import Principal
from idp.config import ConfigError, Settings

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
VALID_NAME = re.compile(r"[A-Za-z0-9_+=,.@-]{2,64}")


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


@pytest.mark.parametrize(("raw", "readable"), [
    ("alice.o'neil+aws@example.test", "alice.o-neil+aws@example.test"),
    ("EXAMPLE\\alice smith", "EXAMPLE-alice-smith"),
    ("jürgen.müller", "jurgen.muller"),  # accents dropped, not the letter
    ("山田", "--"),
    ("a", "a"),
    ("", ""),
    ("x" * 65, "x" * 51),
    ("é" * 70, "e" * 51),  # cut after the accents are gone
])
def test_a_name_aws_would_refuse_is_rewritten_with_a_digest_of_it(raw: str, readable: str) -> None:
    assert aws.session_name(raw) == f"{readable}.{digest(raw)}"


def test_users_whose_names_rewrite_alike_get_different_session_names() -> None:
    # SourceIdentity is who AWS says acted, in CloudTrail and in sts:SourceIdentity conditions.
    assert aws.session_name("CORP\\alice") != aws.session_name("CORP-alice") == "CORP-alice"
    assert aws.session_name("jürgen") != aws.session_name("jurgen")
    long_a, long_b = "p" * 64 + "@a.example", "p" * 64 + "@b.example"
    assert aws.session_name(long_a) != aws.session_name(long_b)
    # Named as another user's rewritten name: not taken for them.
    lookalike = aws.session_name("CORP\\alice")
    assert VALID_NAME.fullmatch(lookalike) and aws.session_name(lookalike) != lookalike


@given(st.text(), st.text())
def test_two_users_never_share_a_session_name(a: str, b: str) -> None:
    assume(a != b)
    assert aws.session_name(a) != aws.session_name(b)


@given(st.text())
def test_session_name_is_always_valid(raw: str) -> None:
    assert VALID_NAME.fullmatch(aws.session_name(raw))


@given(st.from_regex(VALID_NAME, fullmatch=True))
def test_a_valid_name_is_kept(raw: str) -> None:
    assume(not re.search(r"\.[0-9a-f]{12}\Z", raw))  # as a rewritten name ends: rewritten (above)
    assert aws.session_name(raw) == raw


def principal(username: str = "alice", email: str | None = "alice@example.test",
              display_name: str | None = None) -> Principal:
    return Principal(user_id=1, username=username, email=email, given_name=None, family_name=None,
                     display_name=display_name, groups=("engineers",), source="local", authn_at=NOW)


def grant(name: str, seconds: int = 3600, until: datetime | None = None, role_name: str | None = None) -> RoleGrant:
    return RoleGrant(
        account_id="111122223333", account_name="Prod", permission_set=name,
        role_arn=f"arn:aws:iam::111122223333:role/{role_name or name}",
        provider_arn="arn:aws:iam::111122223333:saml-provider/bridge", signin_url=None, relay_state=None,
        session_seconds=seconds, until=until, sources=(),
    )


# role_attributes reads the settings of the running app: with_directories(**settings) builds one.
def released(*roles: RoleGrant, who: Principal | None = None, now: datetime = NOW) -> dict[str, tuple[str, ...]]:
    attributes = aws.role_attributes(who or principal(), roles, now)
    assert {a.name_format for a in attributes} == {aws.NAME_FORMAT_URI}
    return {a.name: a.values for a in attributes}


def test_one_role_value_per_role_and_the_shortest_session(with_directories: Callable[..., Flask]) -> None:
    with_directories()
    out = released(grant("Admin", 7200), grant("ReadOnly", 3600), grant("Audit", 14400, role_name="Admin"))
    provider = "arn:aws:iam::111122223333:saml-provider/bridge"
    # Two permission sets mapping to the same IAM role are one choice in AWS's picker, not two.
    assert out[aws.ROLE] == (f"arn:aws:iam::111122223333:role/Admin,{provider}",
                             f"arn:aws:iam::111122223333:role/ReadOnly,{provider}")
    assert out[aws.SESSION_DURATION] == ("3600",)
    assert out[aws.ROLE_SESSION_NAME] == ("alice",)
    assert aws.SOURCE_IDENTITY not in out  # off by default: it needs sts:SetSourceIdentity in the trust policy
    assert not any(name.startswith(aws.PRINCIPAL_TAG) for name in out)  # none configured


def test_the_session_never_outlives_the_assignment(with_directories: Callable[..., Flask]) -> None:
    with_directories()
    ends = NOW + timedelta(minutes=30)
    assert released(grant("Admin", 7200, until=ends))[aws.SESSION_DURATION] == ("1800",)
    # Issued later than decided: what is left at issuance counts, but never under AWS's 15 minutes.
    assert released(grant("Admin", 7200, until=ends), now=NOW + timedelta(minutes=10))[aws.SESSION_DURATION] \
        == ("1200",)
    assert released(grant("Admin", 7200, until=ends), now=NOW + timedelta(minutes=25))[aws.SESSION_DURATION] \
        == ("900",)


def test_no_role_is_a_mistake_of_the_caller(with_directories: Callable[..., Flask]) -> None:
    with_directories()
    with pytest.raises(ValueError, match="at least one role"):
        aws.role_attributes(principal(), [], NOW)


def test_names_and_tags_come_from_the_configured_attributes(with_directories: Callable[..., Flask]) -> None:
    with_directories(aws_role_session_name="email", aws_source_identity="email",
                 aws_principal_tags="Email=email,Name=display_name,Given=given_name")
    out = released(grant("Admin"), who=principal("EXAMPLE\\alice", display_name="Zoë O'Brien (ops)"))
    assert out[aws.ROLE_SESSION_NAME] == ("alice@example.test",)
    assert out[aws.SOURCE_IDENTITY] == ("alice@example.test",)
    assert out[aws.PRINCIPAL_TAG + "Email"] == ("alice@example.test",)
    assert out[aws.PRINCIPAL_TAG + "Name"] == ("Zoë O_Brien _ops_",)  # tag values allow letters and spaces
    assert aws.PRINCIPAL_TAG + "Given" not in out  # no value: no tag (AWS refuses an empty one)

    # Without an email: the username for RoleSessionName, no SourceIdentity rather than a made-up one.
    out = released(grant("Admin"), who=principal("EXAMPLE\\alice", email=None))
    assert out[aws.ROLE_SESSION_NAME] == ("EXAMPLE-alice." + digest("EXAMPLE\\alice"),)
    assert aws.SOURCE_IDENTITY not in out
    assert aws.PRINCIPAL_TAG + "Email" not in out


def test_source_identity_from_the_username(with_directories: Callable[..., Flask]) -> None:
    with_directories(aws_source_identity="username")
    assert released(grant("Admin"))[aws.SOURCE_IDENTITY] == ("alice",)


def test_aws_settings_are_read_and_checked() -> None:
    s = Settings.from_env({"IDP_AWS_PRINCIPAL_TAGS": "Email=email, Cost Center=display_name",
                           "IDP_AWS_SOURCE_IDENTITY": "none", "IDP_AWS_ROLE_SESSION_NAME": "email"})
    assert s.aws_tags == (("Email", "email"), ("Cost Center", "display_name"))
    assert (s.aws_source_identity, s.aws_role_session_name) == ("none", "email")
    assert Settings.from_env({}).aws_tags == ()

    with pytest.raises(ConfigError) as err:
        Settings.from_env({
            "IDP_AWS_PRINCIPAL_TAGS": "aws:user=email,Team=groups,Dept=department,EMAIL=email,email=username,x",
            "IDP_AWS_SOURCE_IDENTITY": "upn", "IDP_AWS_ROLE_SESSION_NAME": "none",
        })
    problems = "\n".join(err.value.problems)
    assert "'aws:user' is not a valid tag key" in problems
    assert "tag 'Team' needs one of" in problems and "not 'groups'" in problems
    assert "not 'department'" in problems
    assert "tag 'email' is given twice" in problems
    assert "'' is not a valid tag key" in problems  # "x": no KEY=
    assert "IDP_AWS_SOURCE_IDENTITY: 'upn'" in problems
    assert "IDP_AWS_ROLE_SESSION_NAME: 'none'" in problems
