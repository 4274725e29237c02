"""Active Directory's bind error sub-codes: which refusal each one is, and what the user is told."""

from __future__ import annotations

import pytest

from idp.authn.connectors.ad import bind_refusal

SAMBA = "80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data {}, v1db1"


@pytest.mark.parametrize(("code", "reason", "told"), [
    ("52e", "bad password", None),
    ("525", "unknown user", None),
    ("533", "account disabled", "Your account is disabled."),
    ("775", "account locked out", "Your account is locked"),
    ("532", "password expired", "Your password has expired."),
    ("701", "account expired", "Your account has expired."),
    ("773", "password must be changed", "You must change your password"),
    ("530", "logon hours", "may not sign in at this time"),
    ("531", "workstation", "may not sign in from here"),
])
def test_each_sub_code_is_its_own_refusal(code: str, reason: str, told: str | None) -> None:
    refusal = bind_refusal(SAMBA.format(code))
    assert reason in refusal.reason and f"AD data {code}" in refusal.reason
    assert (refusal.message is None) if told is None else told in (refusal.message or "")


@pytest.mark.parametrize("message", ["", "invalid credentials", "data zzz", SAMBA.format("0000052E")])
def test_an_answer_without_a_known_sub_code_stays_generic(message: str) -> None:
    refusal = bind_refusal(message)
    assert refusal.message is None
    assert refusal.reason.startswith("bad password")


def test_an_unknown_sub_code_is_named_in_the_audit_reason_only() -> None:
    refusal = bind_refusal(SAMBA.format("569"))
    assert refusal.reason == "bind refused (unknown AD sub-code 569) (AD data 569)" and refusal.message is None
