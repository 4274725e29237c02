"""The Active Directory preset of the LDAP client: sign-in names (sAMAccountName, userPrincipalName,
DOMAIN\\user), objectGUID as the stable id, the account state for diagnostics, and AD's bind error
sub-codes turned into distinct refusals.

AD (and Samba as a DC) answers a refused simple bind with invalidCredentials (49) and a diagnostic message
such as ``80090308: LdapErr: DSID-0C0903A9, comment: AcceptSecurityContext error, data 533, v1db1``; the hex
number after ``data`` is the Windows error behind the refusal. Checked against Samba 4.17: a wrong password
gives 52e for every account, so 533 (disabled), 701 (account expired), 773 (must change password) and 532
(password expired) come only with the right password and can be told to the user without revealing
anything to someone guessing. 775 (locked out) is the exception: the DC reports it before checking the
password, so it says the name exists and is locked, the same fact the bridge's own lockout message gives.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_bytes, escape_filter_chars

from idp.authn.connectors.ldap import INVALID_CREDENTIALS, UNAVAILABLE, LdapDirectory, Refusal
from idp.authn.connectors.settings import DirectoryConfig
from idp.clock import now
from idp.errors import DirectoryUnavailable

_SUBCODE = re.compile(r"\bdata ([0-9a-f]{1,8})\b", re.IGNORECASE)
_ADMIN = "Contact your administrator."
# Sub-code -> (reason for the audit log, message for the user or None for the generic refusal).
SUBCODES: dict[str, tuple[str, str | None]] = {
    "525": ("unknown user", None),
    "52e": ("bad password", None),
    "530": ("sign-in not permitted at this time (logon hours)",
            f"Your account may not sign in at this time. {_ADMIN}"),
    "531": ("sign-in not permitted from this workstation",
            f"Your account may not sign in from here. {_ADMIN}"),
    "532": ("password expired", "Your password has expired. Change it, then sign in again."),
    "533": ("account disabled", f"Your account is disabled. {_ADMIN}"),
    "701": ("account expired", f"Your account has expired. {_ADMIN}"),
    "773": ("password must be changed",
            "You must change your password before you can sign in. Change it, then sign in again."),
    "775": ("account locked out", f"Your account is locked after too many failed sign-ins. Try again later or "
                                  f"{_ADMIN[0].lower()}{_ADMIN[1:]}"),
}
# userAccountControl and msDS-User-Account-Control-Computed bits.
_ACCOUNTDISABLE = 0x2
_LOCKOUT = 0x10
_PASSWORD_EXPIRED = 0x800000
_STATE_ATTRIBUTES = ("userAccountControl", "msDS-User-Account-Control-Computed", "pwdLastSet", "accountExpires")
# accountExpires counts 100-nanosecond intervals since 1601-01-01 UTC; 0 and the largest value mean never.
_NEVER = (0, 0x7FFFFFFFFFFFFFFF)
_FILETIME_UNIX_SECONDS = 11_644_473_600


def bind_refusal(message: str) -> Refusal:
    """The refusal an invalidCredentials bind answer stands for, from its ``data`` sub-code."""
    match = _SUBCODE.search(message)
    if match is None:
        # Not AD's shape (a proxy, another server): a refused bind is a wrong password as far as we know.
        return Refusal("bad password")
    code = match.group(1).lower().lstrip("0") or "0"
    reason, shown = SUBCODES.get(code, (f"bind refused (unknown AD sub-code {code})", None))
    return Refusal(f"{reason} (AD data {code})", shown)


def _raw_values(raw: Any, name: str) -> list[bytes]:
    """An attribute's raw values whatever the case of its name in the answer (AD echoes its own casing)."""
    if not raw:
        return []
    for key, values in raw.items():
        if str(key).lower() == name.lower():
            return [v for v in (values if isinstance(values, list) else [values]) if isinstance(v, bytes)]
    return []


def _number(raw: Any, name: str) -> int | None:
    values = _raw_values(raw, name)
    if not values:
        return None
    try:
        return int(values[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{name} is not a number: {values[0][:40]!r}") from None


class AdDirectory(LdapDirectory):
    """An LdapDirectory that speaks Active Directory's dialect."""

    def user_filter(self, username: str) -> str | None:
        c = self.cfg
        if "\\" in username:
            domain, _, name = username.partition("\\")
            # DOMAIN\user is the pre-Windows 2000 logon name: the sAMAccountName in that NetBIOS domain.
            if not domain or not name or "\\" in name or (c.domains and domain.lower() not in c.domains):
                return None
            return f"(&{c.user_filter}(sAMAccountName={escape_filter_chars(name)}))"
        if "@" in username:
            return f"(&{c.user_filter}(userPrincipalName={escape_filter_chars(username)}))"
        return f"(&{c.user_filter}({c.username_attribute}={escape_filter_chars(username)}))"

    def id_filter(self, external_id: str) -> str:
        if self.cfg.id_attribute.lower() != "objectguid":
            return super().id_filter(external_id)
        # objectGUID is matched on its 16 raw bytes (little-endian GUID order, as _external_id read them), each
        # byte escaped: AD does not match the string form. ValueError when the id is not a GUID.
        raw = uuid.UUID(external_id).bytes_le
        return f"(&{self.cfg.user_filter}(objectGUID={escape_bytes(raw)}))"

    def _user_attributes(self) -> list[str]:
        return list(dict.fromkeys([*super()._user_attributes(), *_STATE_ATTRIBUTES]))

    def _external_id(self, attrs: Any, raw: Any) -> str | None:
        if self.cfg.id_attribute.lower() != "objectguid":
            return super()._external_id(attrs, raw)
        values = _raw_values(raw, "objectGUID")
        if not values:
            return None
        if len(values) != 1 or len(values[0]) != 16:
            raise ValueError(f"objectGUID is not one 16-byte GUID ({len(values)} value(s), "
                             f"{len(values[0])} bytes)")
        return str(uuid.UUID(bytes_le=values[0]))

    def _account_state(self, attrs: Any, raw: Any) -> tuple[str, ...]:
        control = _number(raw, "userAccountControl") or 0
        computed = _number(raw, "msDS-User-Account-Control-Computed") or 0
        state = []
        if control & _ACCOUNTDISABLE:
            state.append("disabled")
        if computed & _LOCKOUT:
            state.append("locked out")
        if computed & _PASSWORD_EXPIRED:
            state.append("password expired")
        if _number(raw, "pwdLastSet") == 0:
            state.append("must change password")
        expires = _number(raw, "accountExpires")
        # Timed by the bridge's clock, as the rest of its decisions (the DC refuses the bind by its own: 701).
        if expires is not None and expires not in _NEVER and \
                expires / 10_000_000 - _FILETIME_UNIX_SECONDS <= now().timestamp():
            state.append("account expired")
        return tuple(state)

    def _bind_refusal(self, code: int, description: str, message: str) -> Refusal:
        if code == INVALID_CREDENTIALS:
            return bind_refusal(message)
        return super()._bind_refusal(code, description, message)


def open_directory(cfg: DirectoryConfig, bind_password: str | None) -> LdapDirectory:
    """The directory client for a configured ``ldap`` or ``ad`` directory. DirectoryUnavailable when it cannot be
    set up (a CA file that changed into something unreadable since the settings were checked): an outage with
    its reason in the audit log, not a server error on every sign-in."""
    try:
        return AdDirectory(cfg, bind_password) if cfg.type == "ad" else LdapDirectory(cfg, bind_password)
    except (OSError, LDAPException) as exc:  # ssl.SSLError is an OSError
        raise DirectoryUnavailable(UNAVAILABLE, f"directory {cfg.name} cannot be set up: {exc}") from exc
