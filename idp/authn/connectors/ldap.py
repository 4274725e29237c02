"""The LDAP directory client (ldap3): server pool with failover, pooled connections, user lookup, password
check by bind, group resolution (memberOf, member search, posixGroup memberUid; nested, cycle-safe, depth
limited) and a short-lived membership cache. It knows LDAP only: no database, no Flask.

Every outage (no server reachable, TLS refused, timeout, the service account refused) raises
DirectoryUnavailable with the cause as its reason; a wrong password is an answer, never an exception.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ldap3
from ldap3 import BASE, FIRST, NONE, SUBTREE, Connection, Server, ServerPool, Tls
from ldap3.core.exceptions import (
    LDAPException,
    LDAPInvalidDnError,
    LDAPServerPoolExhaustedError,
    LDAPSocketOpenError,
)
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from idp.authn.connectors.settings import IN_CHAIN, DirectoryConfig
from idp.errors import DirectoryUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

# ldap3 sleeps this long after every failed cycle over the pool, even the last: with all servers down a
# sign-in would hang 10 s beyond the timeouts we configure. It is a process-wide ldap3 setting.
ldap3.set_config_parameter("POOLING_LOOP_TIMEOUT", 0)
# A server found down is skipped for this long by the connection that found it (ldap3 keeps the state per
# connection, and ours are pooled), so a dead first URL does not cost a connect attempt per operation.
EXHAUST_SECONDS = 30
INVALID_CREDENTIALS = 49
# Member searches put at most this many DNs in one OR filter.
_BATCH = 50
UNAVAILABLE = "The directory is unavailable right now. Try again in a few minutes."
# LDAP_MATCHING_RULE_IN_CHAIN: Active Directory follows member links transitively for this rule.
IN_CHAIN_RULE = "1.2.840.113556.1.4.1941"


@dataclass(frozen=True)
class DirectoryEntry:
    """A user as the directory describes them."""

    dn: str
    external_id: str
    username: str
    email: str | None
    given_name: str | None
    family_name: str | None
    display_name: str | None
    member_of: tuple[str, ...]  # DNs of direct groups (memberOf mode)
    # What the directory says about the account besides the password (AD: "disabled", "locked"), for
    # `idp directory test`; sign-in goes by the bind's answer, not by this.
    account_state: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """A password check that did not succeed: ``reason`` for the audit log, ``message`` for the user (None:
    the generic refusal)."""

    reason: str
    message: str | None = None


@dataclass(frozen=True)
class Lookup:
    entry: DirectoryEntry | None
    reason: str | None = None  # why there is no entry (for the audit log)


@dataclass(frozen=True)
class Groups:
    names: tuple[str, ...]
    levels: int  # how many levels of nesting were walked
    truncated: bool  # the depth limit stopped the walk with groups left to look at
    cached: bool = False


class _VerifyingTls(Tls):  # type: ignore[misc]
    """TLS with Python's own certificate and host name verification (one SSLContext, CA file read once).

    ldap3 checks host names with ``ssl.match_hostname``, which is deprecated and does not match IP address
    SANs the way Python's handshake does; here the handshake itself verifies the name.
    """

    def __init__(self, ca_file: Path | None, verify: bool, server_name: str | None = None) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE,
                         ca_certs_file=str(ca_file) if ca_file else None)
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if not verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self._context = ctx
        self._server_name = server_name

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(connection.socket, server_side=False,
                                                      do_handshake_on_connect=do_handshake,
                                                      server_hostname=self._server_name or connection.server.host)


def _server(url: str, tls: Tls, timeout: float) -> Server:
    parts = urlsplit(url)
    secure = parts.scheme == "ldaps"
    # get_info=NONE: reading the schema and root DSE on every new connection costs more than a sign-in.
    return Server(parts.hostname or "", port=parts.port or (636 if secure else 389), use_ssl=secure, tls=tls,
                  get_info=NONE, connect_timeout=timeout)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _first(attrs: Any, name: str) -> str | None:
    values = attrs.get(name) if attrs is not None else None
    if values is None:
        return None
    if not isinstance(values, list):
        values = [values]
    for value in values:
        if isinstance(value, bytes):
            # objectGUID (AD) is 16 bytes in little-endian GUID order; anything else binary is hex.
            return str(uuid.UUID(bytes_le=value)) if len(value) == 16 else value.hex()
        text = str(value).strip()
        if text:
            return text
    return None


def _all(attrs: Any, name: str) -> tuple[str, ...]:
    values = attrs.get(name) if attrs is not None else None
    if values is None:
        return ()
    if not isinstance(values, list):
        values = [values]
    return tuple(str(v) for v in values if str(v).strip())


def _rdn_value(dn: str, attribute: str) -> str | None:
    """The value of the DN's first RDN when it is ``attribute`` (cn=staff,ou=groups -> staff)."""
    try:
        rdn = parse_dn(dn)[0]
    except (LDAPInvalidDnError, IndexError):
        return None
    return str(rdn[1]) if str(rdn[0]).lower() == attribute.lower() else None


class _ConnectionPool:
    """A few open connections reused across sign-ins (a TCP and TLS handshake per sign-in would cost more
    than the sign-in). ldap3's synchronous connections are not thread-safe: each is lent to one caller."""

    def __init__(self, make: Callable[[], Connection], size: int) -> None:
        self._make = make
        self._size = size
        self._idle: list[Connection] = []
        self._lock = threading.Lock()

    @contextmanager
    def lend(self) -> Iterator[Connection]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        conn = conn or self._make()
        try:
            yield conn
        except BaseException:
            _close_quietly(conn)  # its state is unknown after a failure
            raise
        with self._lock:
            if len(self._idle) < self._size:
                self._idle.append(conn)
                return
        _close_quietly(conn)

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: Connection) -> None:
    with suppress(LDAPException, OSError):
        conn.unbind()


class _GroupCache:
    """user DN -> group names for a few seconds: a busy sign-in page must not walk the groups every time."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._data: dict[str, tuple[float, Groups]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Groups | None:
        if self._ttl <= 0:
            return None
        with self._lock:
            hit = self._data.get(key)
            if hit is None or hit[0] < time.monotonic():
                return None
            return hit[1]

    def put(self, key: str, groups: Groups) -> None:
        if self._ttl <= 0:
            return
        with self._lock:
            if len(self._data) >= self._max:
                now = time.monotonic()
                self._data = {k: v for k, v in self._data.items() if v[0] >= now}
                if len(self._data) >= self._max:
                    self._data.clear()
            self._data[key] = (time.monotonic() + self._ttl, groups)


class LdapDirectory:
    """One configured LDAP directory."""

    def __init__(self, cfg: DirectoryConfig, bind_password: str | None) -> None:
        self.cfg = cfg
        self._bind_password = bind_password
        self._tls = _VerifyingTls(cfg.ca_file, cfg.tls_verify, cfg.tls_server_name)
        self._servers = [_server(url, self._tls, cfg.timeout) for url in cfg.urls]
        # FIRST with an availability check: the first reachable URL in the configured order serves.
        # (ldap3's stubs type active/exhaust as bool; ldap3 documents an int as a cycle count / seconds.)
        self._pool = ServerPool(self._servers, FIRST, active=1, exhaust=EXHAUST_SECONDS)  # type: ignore[arg-type]
        self._search_pool = _ConnectionPool(self._service_connection, cfg.pool_size)
        self._bind_pool = _ConnectionPool(self._bind_connection, cfg.pool_size)
        self._groups = _GroupCache(cfg.group_cache_seconds)

    # --- connections -------------------------------------------------------------------------------------

    def _open(self, pool_or_server: ServerPool | Server, user: str | None, password: str | None) -> Connection:
        # receive_timeout must be whole seconds (ldap3 packs it into SO_RCVTIMEO).
        conn = Connection(pool_or_server, user=user, password=password, read_only=True, raise_exceptions=False,
                          receive_timeout=math.ceil(self.cfg.timeout), auto_bind=ldap3.AUTO_BIND_NONE)
        try:
            conn.open(read_server_info=False)
            if self.cfg.start_tls and not conn.server.ssl and not conn.start_tls(read_server_info=False):
                raise DirectoryUnavailable(UNAVAILABLE, f"StartTLS refused by {conn.server}: {conn.result}")
        except BaseException:
            # ldap3 leaves the socket of a refused connection (or a failed TLS handshake) open.
            if conn.socket is not None:
                conn.socket.close()
            raise
        return conn

    def _service_connection(self) -> Connection:
        conn = self._open(self._pool, self.cfg.bind_dn, self._bind_password)
        if self.cfg.bind_dn and not conn.bind(read_server_info=False):
            result = conn.result or {}
            _close_quietly(conn)
            # A refused service account is a configuration outage, not a user's wrong password.
            raise DirectoryUnavailable(
                UNAVAILABLE, f"service bind as {self.cfg.bind_dn} refused: {result.get('description')} "
                             f"{result.get('message') or ''}".strip())
        return conn

    def _bind_connection(self) -> Connection:
        # Used only to check passwords by binding; it never searches, whoever it was last bound as.
        return self._open(self._pool, None, None)

    def _guard(self, what: str, run: Callable[[], T]) -> T:
        """Run an LDAP operation; a broken pooled connection is retried once on a fresh one."""
        for attempt in (1, 2):
            try:
                return run()
            except DirectoryUnavailable:
                raise
            except (LDAPException, OSError) as exc:
                # A fresh connection that cannot open is an outage now; a pooled one may just be stale.
                if attempt == 2 or isinstance(exc, LDAPServerPoolExhaustedError | LDAPSocketOpenError | OSError):
                    log.warning("directory %s: %s failed: %s", self.cfg.name, what, _describe(exc))
                    raise DirectoryUnavailable(UNAVAILABLE, f"directory {self.cfg.name}: {what} failed: "
                                                            f"{_describe(exc)}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._search_pool.clear()
        self._bind_pool.clear()

    # --- users -------------------------------------------------------------------------------------------

    def _user_attributes(self) -> list[str]:
        c = self.cfg
        names = [c.username_attribute, c.email_attribute, c.given_name_attribute, c.family_name_attribute,
                 c.display_name_attribute, c.id_attribute]
        if c.group_mode == "memberof":
            names.append("memberOf")
        return list(dict.fromkeys(names))

    def user_filter(self, username: str) -> str | None:
        """The search for a sign-in name (None: no entry can match it)."""
        # Every value entering a filter is escaped (RFC 4515): "*)(uid=*" must match nobody.
        return f"(&{self.cfg.user_filter}({self.cfg.username_attribute}={escape_filter_chars(username)}))"

    def _external_id(self, attrs: Any, raw: Any) -> str | None:
        """The stable id; ValueError when the directory sent something that cannot be one."""
        return _first(attrs, self.cfg.id_attribute)

    def _account_state(self, attrs: Any, raw: Any) -> tuple[str, ...]:
        return ()

    def find_user(self, username: str) -> Lookup:
        name = username.strip()
        query = self.user_filter(name) if name and len(name) <= 255 else None
        if query is None:
            return Lookup(None, "unknown user")

        def run() -> list[dict[str, Any]]:
            with self._search_pool.lend() as conn:
                conn.search(self.cfg.users_base, query, SUBTREE, attributes=self._user_attributes(), size_limit=2,
                            time_limit=int(max(1, self.cfg.timeout)))
                return self._entries(conn, "user search")

        found = self._guard("user search", run)
        if not found:
            return Lookup(None, "unknown user")
        if len(found) > 1:
            return Lookup(None, f"ambiguous: the filter {query} matches several entries")
        dn, attrs, raw = found[0]["dn"], found[0].get("attributes"), found[0].get("raw_attributes")
        try:
            external_id = self._external_id(attrs, raw)
            state = self._account_state(attrs, raw)
        except ValueError as exc:
            return Lookup(None, f"entry {dn}: {exc}")
        stored_name = _first(attrs, self.cfg.username_attribute)
        if external_id is None:
            return Lookup(None, f"entry {dn} has no {self.cfg.id_attribute} (the stable id)")
        if stored_name is None:
            return Lookup(None, f"entry {dn} has no {self.cfg.username_attribute}")
        return Lookup(DirectoryEntry(
            dn=dn, external_id=external_id, username=stored_name,
            email=_first(attrs, self.cfg.email_attribute),
            given_name=_first(attrs, self.cfg.given_name_attribute),
            family_name=_first(attrs, self.cfg.family_name_attribute),
            display_name=_first(attrs, self.cfg.display_name_attribute),
            member_of=_all(attrs, "memberOf"),
            account_state=state,
        ))

    def _entries(self, conn: Connection, what: str) -> list[dict[str, Any]]:
        result = conn.result or {}
        code = result.get("result", 0)
        # 0 success, 4 sizeLimitExceeded (more than one match: reported as ambiguous), 32 noSuchObject (the
        # base is empty or gone: nobody matches). Anything else is the directory failing us.
        if code not in (0, 4, 32):
            raise DirectoryUnavailable(UNAVAILABLE, f"directory {self.cfg.name}: {what} failed: "
                                                    f"{result.get('description')} {result.get('message') or ''}")
        return [r for r in (conn.response or []) if r.get("type") == "searchResEntry"]

    def verify_password(self, entry: DirectoryEntry, password: str) -> Refusal | None:
        """None when the password is right, else why not."""
        if not password:
            # An empty password would be an unauthenticated bind, which succeeds (RFC 4513 5.1.2).
            return Refusal("empty password")

        def run() -> Refusal | None:
            with self._bind_pool.lend() as conn:
                conn.authentication, conn.user, conn.password = ldap3.SIMPLE, entry.dn, password
                try:
                    ok = conn.bind(read_server_info=False)
                finally:
                    conn.password = None
                if ok:
                    return None
                result = conn.result or {}
                code = result.get("result")
                if code in (51, 52, 80) or code is None:  # busy, unavailable, other: the server, not the user
                    raise DirectoryUnavailable(UNAVAILABLE, f"directory {self.cfg.name}: bind failed: {result}")
                return self._bind_refusal(code, str(result.get("description") or ""),
                                          str(result.get("message") or ""))

        return self._guard("password check", run)

    def _bind_refusal(self, code: int, description: str, message: str) -> Refusal:
        """What a refused user bind means (a directory with richer answers, such as AD, says more)."""
        if code == INVALID_CREDENTIALS:
            return Refusal("bad password")
        return Refusal(f"bind refused: {description} {message}".strip())

    # --- groups ------------------------------------------------------------------------------------------

    def groups(self, entry: DirectoryEntry, *, use_cache: bool = True) -> Groups:
        key = entry.dn.lower()
        if use_cache and (hit := self._groups.get(key)) is not None:
            return Groups(hit.names, hit.levels, hit.truncated, cached=True)
        found = self._guard("group search", lambda: self._resolve(entry))
        self._groups.put(key, found)
        return found

    def _resolve(self, entry: DirectoryEntry) -> Groups:
        c = self.cfg
        names: dict[str, str] = {}  # lower-cased DN -> group name
        with self._search_pool.lend() as conn:
            if c.group_mode == "posix":
                # posixGroup members are user names, not DNs, so there is nothing to nest.
                query = f"(&{c.group_filter}(memberUid={escape_filter_chars(entry.username)}))"
                for found in self._search_groups(conn, query):
                    names.setdefault(found[0], found[1])
                return Groups(tuple(sorted(set(names.values()))), 1, False)
            if c.group_mode == IN_CHAIN:
                # The server walks the nesting itself (cycles included): every group in one search.
                query = f"(&{c.group_filter}(member:{IN_CHAIN_RULE}:={escape_filter_chars(entry.dn)}))"
                for found in self._search_groups(conn, query):
                    names.setdefault(found[0].lower(), found[1])
                return Groups(tuple(sorted(set(names.values()))), 0, False)
            if c.group_mode == "memberof":
                frontier = []
                for dn in entry.member_of:
                    if dn.lower() in names:
                        continue
                    name = _rdn_value(dn, c.group_name_attribute) or self._group_name(conn, dn)
                    if name:
                        names[dn.lower()] = name
                        frontier.append(dn)
                levels = 1
            else:
                frontier, levels = [entry.dn], 0
            seen = {entry.dn.lower(), *names}
            # Breadth first, one search per level: the groups that have any of the frontier as a member. The
            # seen set ends cycles; the depth limit ends pathological chains.
            while frontier and levels < c.group_depth:
                parents: list[str] = []
                for start in range(0, len(frontier), _BATCH):
                    batch = frontier[start:start + _BATCH]
                    members = "".join(f"({attr}={escape_filter_chars(dn)})"
                                      for dn in batch for attr in c.group_member_attributes)
                    for dn, name in self._search_groups(conn, f"(&{c.group_filter}(|{members}))"):
                        if dn.lower() not in seen:
                            seen.add(dn.lower())
                            names[dn.lower()] = name
                            parents.append(dn)
                frontier = parents
                if parents:
                    levels += 1
            return Groups(tuple(sorted(set(names.values()))), levels, bool(frontier))

    def _search_groups(self, conn: Connection, query: str) -> Iterator[tuple[str, str]]:
        conn.search(self.cfg.groups_base, query, SUBTREE, attributes=[self.cfg.group_name_attribute],
                    time_limit=int(max(1, self.cfg.timeout)))
        for found in self._entries(conn, "group search"):
            name = _first(found.get("attributes"), self.cfg.group_name_attribute)
            if name:
                yield found["dn"], name

    def _group_name(self, conn: Connection, dn: str) -> str | None:
        conn.search(dn, "(objectClass=*)", BASE, attributes=[self.cfg.group_name_attribute])
        found = self._entries(conn, "group lookup")
        return _first(found[0].get("attributes"), self.cfg.group_name_attribute) if found else None

    # --- diagnostics (idp directory test) ----------------------------------------------------------------

    def probe(self) -> list[tuple[str, str | None]]:
        """Each URL on its own: connect (and StartTLS), then the service bind. (url, None) or (url, error)."""
        out: list[tuple[str, str | None]] = []
        for url, server in zip(self.cfg.urls, self._servers, strict=True):
            try:
                conn = self._open(server, self.cfg.bind_dn, self._bind_password)
                try:
                    if self.cfg.bind_dn and not conn.bind(read_server_info=False):
                        result = conn.result or {}
                        out.append((url, f"service bind refused: {result.get('description')}"))
                        continue
                finally:
                    _close_quietly(conn)
                out.append((url, None))
            except DirectoryUnavailable as exc:
                out.append((url, exc.reason))
            except LDAPException as exc:
                out.append((url, _describe(exc)))
        return out
