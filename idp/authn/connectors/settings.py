"""Directory connector settings: one frozen dataclass per configured directory, parsed and validated from a
YAML entry or a database row, with every problem reported at once.

Imports nothing of ours (config.py reads the YAML file through it at start-up). Secrets are never values
here: the service account's password comes from a file, an environment variable, or (database rows) an
encrypted column, and is resolved only when a connector is built.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from idp.text import has_control
from idp.urls import split_url

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
TYPES = ("local", "ldap", "ad")
# inchain: Active Directory's LDAP_MATCHING_RULE_IN_CHAIN, every nested group in one search (type ad only).
GROUP_MODES = ("memberof", "member", "posix", "inchain")
IN_CHAIN = "inchain"
# Type presets: defaults that differ from the plain LDAP ones. An entry's own values still win.
PRESETS: dict[str, dict[str, Any]] = {
    "ad": {
        "user_filter": "(&(objectCategory=person)(objectClass=user))",
        "username_attribute": "sAMAccountName",
        "id_attribute": "objectGUID",
        "group_mode": IN_CHAIN,
        "group_filter": "(objectClass=group)",
        "group_member_attributes": ("member",),
    },
}
# Keys an entry may have besides its name and type; anything else is a typo worth refusing.
_TUPLES = ("urls", "domains", "group_member_attributes")


@dataclass(frozen=True)
class DirectoryConfig:
    name: str
    type: str
    urls: tuple[str, ...] = ()
    base_dn: str = ""
    bind_dn: str | None = None
    bind_password_file: Path | None = None
    bind_password_env: str | None = None
    user_base_dn: str | None = None
    user_filter: str = "(objectClass=inetOrgPerson)"
    username_attribute: str = "uid"
    email_attribute: str = "mail"
    given_name_attribute: str = "givenName"
    family_name_attribute: str = "sn"
    display_name_attribute: str = "displayName"
    id_attribute: str = "entryUUID"
    group_mode: str = "member"
    group_base_dn: str | None = None
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=posixGroup))"
    group_name_attribute: str = "cn"
    group_member_attributes: tuple[str, ...] = ("member", "uniqueMember")
    group_depth: int = 5
    group_cache_seconds: int = 60
    # A session, refresh token or userinfo call of this directory's user is checked against the directory again
    # (still there, not disabled, current groups) once the last check is this old; 0: at every use.
    revalidate_seconds: int = 300
    # /readyz counts this directory: while none of its servers answers, every instance is unready, and its load
    # balancer sends nobody, users of other directories and the admin UI included. False: probed and shown in
    # the readiness answer, not counted (its users get "directory unavailable" at sign-in meanwhile).
    readiness: bool = True
    ca_file: Path | None = None
    start_tls: bool = False
    # ldap:// without StartTLS to another machine sends the service's and every user's password in clear: refused
    # unless the admin says the network is theirs to trust.
    allow_plaintext: bool = False
    tls_verify: bool = True
    # The name the server's certificate must carry when the URL's host is not it (an IP address, or a DC
    # whose certificate names only its FQDN): verification stays on, against this name.
    tls_server_name: str | None = None
    timeout: float = 5.0
    pool_size: int = 4
    domains: tuple[str, ...] = ()
    # Where this entry came from ("IDP_CONFIG entry 2", "database"), for messages.
    origin: str = field(default="", compare=False)

    @property
    def users_base(self) -> str:
        return self.user_base_dn or self.base_dn

    @property
    def groups_base(self) -> str:
        return self.group_base_dn or self.base_dn

    def public(self) -> dict[str, Any]:
        """The settings as plain data (YAML/JSON shape), for the database column and ``directory show``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("name", "type", "origin"):
                continue
            value = getattr(self, f.name)
            if value == PRESETS.get(self.type, {}).get(f.name, f.default):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
        return out


_FIELDS = {f.name: f for f in fields(DirectoryConfig) if f.name != "origin"}


def _filter_problem(text: str) -> str | None:
    """A light RFC 4515 shape check: parenthesised and balanced (escaped parentheses are \\28 and \\29)."""
    if not text.startswith("(") or not text.endswith(")"):
        return "must be a parenthesised LDAP filter such as (objectClass=person)"
    depth = 0
    for ch in text:
        depth += 1 if ch == "(" else -1 if ch == ")" else 0
        if depth < 0:
            return "has unbalanced parentheses"
    return None if depth == 0 else "has unbalanced parentheses"


def _dn_problem(text: str) -> str | None:
    from ldap3.core.exceptions import LDAPInvalidDnError
    from ldap3.utils.dn import parse_dn

    try:
        parse_dn(text)
    except LDAPInvalidDnError:
        return "is not a valid DN"
    return None


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _ca_problem(path: Path) -> str | None:
    """Why the CA file cannot be trusted as one (None: it loads), the way the connector will load it."""
    try:
        stat = path.stat()
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return _load_ca(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=32)
def _load_ca(path: str, mtime_ns: int, size: int) -> str | None:
    # Cached by modification time and size: database entries are parsed again at every sign-in.
    try:
        ssl.create_default_context(cafile=path)
    except ssl.SSLError as exc:
        return f"does not hold a PEM CA certificate ({exc.reason or exc})"
    except (OSError, ValueError) as exc:
        return f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    return None


def parse_entry(raw: Any, origin: str, *, secret_stored: bool = False) -> tuple[DirectoryConfig | None, list[str]]:
    """One directory from plain data. ``secret_stored``: the database holds an encrypted bind password."""
    if not isinstance(raw, Mapping):
        return None, [f"{origin}: must be a mapping of settings"]
    where = f"{origin} ({raw.get('name')})" if isinstance(raw.get("name"), str) else origin
    problems: list[str] = []
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "bind_password":
            problems.append(f"{where}: bind_password must not be written in the file; use bind_password_file "
                            "or bind_password_env")
            continue
        f = _FIELDS.get(str(key))
        if f is None:
            problems.append(f"{where}: unknown setting '{key}'")
            continue
        if value is None:
            continue
        default = f.default
        if key in _TUPLES:
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
                problems.append(f"{where}: {key} must be a string or a list of strings")
                continue
            if any(has_control(i.strip(), spacing=True) for i in items):
                problems.append(f"{where}: {key} may not contain a control character")
                continue
            values[key] = tuple(i.strip() for i in items)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                problems.append(f"{where}: {key} must be true or false")
                continue
            values[key] = value
        elif isinstance(default, int | float) and not isinstance(default, bool):
            # YAML's .inf and .nan are floats too; an int too large for a float is no setting either.
            if (isinstance(value, bool) or not isinstance(value, int | float) or abs(value) > 2**53
                    or (isinstance(value, float) and not math.isfinite(value))):
                problems.append(f"{where}: {key} must be a number")
                continue
            if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
                problems.append(f"{where}: {key} must be a whole number")
                continue
            values[key] = type(default)(value)
        elif key in ("bind_password_file", "ca_file"):
            values[key] = Path(str(value))
        else:
            if not isinstance(value, str):
                problems.append(f"{where}: {key} must be a string")
                continue
            # An escape sequence in a DN or filter is a mistake that would reach the admin's terminal; a line break
            # in a filter written as a YAML block is not (and was read before this check).
            if has_control(value.strip(), spacing=True):
                problems.append(f"{where}: {key} may not contain a control character")
                continue
            values[key] = value.strip()
    name, kind = values.get("name"), values.get("type")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        problems.append(f"{where}: name must be lower-case letters, digits, - and _ (at most 64)")
    if kind not in TYPES:
        problems.append(f"{where}: type must be one of {', '.join(TYPES)}")
        return None, problems
    if kind == "local":
        # Such an entry only places the built-in directory in the order (and may claim domains): an LDAP setting
        # there (readiness: false, urls) is a mistake, not something to ignore.
        problems.extend(f"{where}: {key} does not apply to a directory of type local"
                        for key in values if key not in ("name", "type", "domains"))
    values["name"] = str(name)  # checked above; the rest is still worth checking
    for key, value in PRESETS.get(str(kind), {}).items():
        values.setdefault(key, value)
    values["domains"] = tuple(d.lower() for d in values.get("domains", ()))
    cfg = DirectoryConfig(**values, origin=origin)
    problems.extend(f"{where}: {p}" for p in _check(cfg, secret_stored))
    return (None if problems else cfg), problems


def _loopback(host: str | None) -> bool:
    """This machine (a directory beside the bridge, or a tunnel's end): nothing crosses a network."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def _check(cfg: DirectoryConfig, secret_stored: bool) -> list[str]:
    if cfg.type == "local":
        # An entry of type local only places the built-in directory in the order.
        return [] if cfg.name == "local" else ["a directory of type local must be named 'local'"]
    out: list[str] = []
    if not cfg.urls:
        out.append("urls: at least one ldap:// or ldaps:// URL is needed")
    for n, url in enumerate(cfg.urls, 1):
        parts = split_url(url)
        if parts is None:
            # Not echoed: it may hold a password, which only a URL that can be read is checked for.
            out.append(f"urls: URL {n} has an invalid port or host")
            continue
        if parts.username is not None or parts.password is not None:
            # Credentials in a URL end up in logs and `directory show`; and they are not where we look.
            out.append(f"urls: {_redacted(url)!r} must not contain a user or password; use bind_dn and "
                       "bind_password_file or bind_password_env")
        elif parts.query or parts.fragment or "?" in url or "#" in url:
            out.append(f"urls: {url!r} must not have a query or fragment (ldap://HOST[:PORT] only)")
        elif parts.scheme not in ("ldap", "ldaps") or not parts.hostname or parts.path not in ("", "/"):
            out.append(f"urls: {url!r} must be ldap://HOST[:PORT] or ldaps://HOST[:PORT]")
        elif parts.scheme == "ldaps" and cfg.start_tls:
            out.append(f"urls: {url!r} is already TLS; start_tls applies to ldap:// URLs only")
        elif parts.scheme == "ldap" and not cfg.start_tls and not cfg.allow_plaintext and \
                not _loopback(parts.hostname):
            out.append(f"urls: {url!r} would carry passwords in clear: use ldaps://, start_tls: true, or "
                       "allow_plaintext: true on a network you trust")
    if not cfg.base_dn:
        out.append("base_dn: required")
    for key in ("base_dn", "bind_dn", "user_base_dn", "group_base_dn"):
        value = getattr(cfg, key)
        if value and (problem := _dn_problem(value)):
            out.append(f"{key}: {value!r} {problem}")
    for key in ("user_filter", "group_filter"):
        if problem := _filter_problem(getattr(cfg, key)):
            out.append(f"{key}: {problem}")
    has_secret = cfg.bind_password_file is not None or cfg.bind_password_env is not None or secret_stored
    if cfg.bind_dn and not has_secret:
        out.append("bind_dn needs a password: bind_password_file or bind_password_env")
    if cfg.bind_password_file is not None and cfg.bind_password_env is not None:
        out.append("bind_password_file and bind_password_env: set one, not both")
    if not cfg.bind_dn and (cfg.bind_password_file or cfg.bind_password_env):
        out.append("a bind password is set but no bind_dn")
    if cfg.bind_password_file is not None and not cfg.bind_password_file.is_file():
        out.append(f"bind_password_file: {cfg.bind_password_file} is not a readable file")
    if cfg.bind_password_env is not None and not os.environ.get(cfg.bind_password_env):
        out.append(f"bind_password_env: the environment variable {cfg.bind_password_env} is not set")
    if cfg.ca_file is not None and not cfg.ca_file.is_file():
        out.append(f"ca_file: {cfg.ca_file} is not a readable file")
    elif cfg.ca_file is not None and (problem := _ca_problem(cfg.ca_file)):
        out.append(f"ca_file: {cfg.ca_file} {problem}")
    if cfg.group_mode not in GROUP_MODES:
        out.append(f"group_mode: {cfg.group_mode!r} must be one of {', '.join(GROUP_MODES)}")
    elif cfg.group_mode == IN_CHAIN and cfg.type != "ad":
        out.append("group_mode: inchain is Active Directory's matching rule; use it with type ad")
    if cfg.tls_server_name is not None and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", cfg.tls_server_name):
        out.append(f"tls_server_name: {cfg.tls_server_name!r} must be a host name")
    if not 0 < cfg.timeout <= 120:
        out.append("timeout: must be between 0 and 120 seconds")
    if not 1 <= cfg.group_depth <= 50:
        out.append("group_depth: must be between 1 and 50")
    if cfg.group_cache_seconds < 0:
        out.append("group_cache_seconds: must not be negative")
    if cfg.revalidate_seconds < 0:
        out.append("revalidate_seconds: must not be negative")
    if not 1 <= cfg.pool_size <= 100:
        out.append("pool_size: must be between 1 and 100")
    return out


def load_file(path: Path) -> tuple[tuple[DirectoryConfig, ...], list[str]]:
    """The ``directories:`` list of the YAML file named by IDP_CONFIG, and every problem found in it."""
    label = f"IDP_CONFIG ({path})"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return (), [f"{label}: cannot read ({exc.strerror})"]
    except UnicodeDecodeError:
        return (), [f"{label}: not UTF-8 text"]
    except yaml.YAMLError as exc:
        return (), [f"{label}: not valid YAML ({exc})"]
    if data is None:
        return (), []
    if not isinstance(data, Mapping):
        return (), [f"{label}: must be a mapping with a 'directories' list"]
    problems = [f"{label}: unknown top-level key '{k}'" for k in data if k != "directories"]
    entries = data.get("directories") or []
    if not isinstance(entries, list):
        return (), [*problems, f"{label}: 'directories' must be a list"]
    found: list[DirectoryConfig] = []
    names: set[str] = set()
    for i, raw in enumerate(entries, start=1):
        cfg, entry_problems = parse_entry(raw, f"{label} directory {i}")
        problems.extend(entry_problems)
        name = raw.get("name") if isinstance(raw, Mapping) else None
        if isinstance(name, str) and name in names:
            problems.append(f"{label} directory {i}: the name '{name}' is used twice")
        names.add(str(name))
        if cfg is not None:
            found.append(cfg)
    return tuple(found), problems
