"""The LDAP directory client (ldap3): failover over the configured URLs, pooled connections, user lookup,
password check by bind, group resolution (memberOf, member search, posixGroup memberUid; nested, cycle-safe, depth
limited) and a short-lived membership cache. It knows LDAP only: no database, no Flask.

Every outage (no server reachable, TLS refused, timeout, the service account refused) raises
DirectoryUnavailable with the cause as its reason; a wrong password is an answer, never an exception.
"""

from __future__ import annotations

import ast
import logging
import math
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import ldap3
from ldap3 import BASE, NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPCommunicationError,
    LDAPException,
    LDAPInvalidDnError,
    LDAPPasswordIsMandatoryError,
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
)
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from idp import clock
from idp.authn.connectors.settings import IN_CHAIN, DirectoryConfig
from idp.errors import DirectoryUnavailable
from idp.observers import Observers

log = logging.getLogger(__name__)
T = TypeVar("T")

# A server found down (refused, reset, timed out, TLS failed) goes to the back of the order for this long, for
# every connection of its directory: a hung first URL then costs one timeout per period, not one per sign-in.
DOWN_SECONDS = 30.0
INVALID_CREDENTIALS = 49
# Bind answers that are the server's state, not the user's: busy, unavailable, other. Another server may do.
_SERVER_TROUBLE = (51, 52, 80)
# Member searches put at most this many DNs in one OR filter.
_BATCH = 50
# The simple paged results control (RFC 2696), and the page asked for: at most AD's MaxPageSize.
_PAGED = "1.2.840.113556.1.4.319"
_PAGE = 1000
SIZE_LIMIT_EXCEEDED = 4
UNAVAILABLE = "The directory is unavailable right now. Try again in a few minutes."
# LDAP_MATCHING_RULE_IN_CHAIN: Active Directory follows member links transitively for this rule.
IN_CHAIN_RULE = "1.2.840.113556.1.4.1941"
# Why a server or a directory failed an operation, for the error counters: a fixed set, so metric labels stay bounded.
TIMEOUT, UNREACHABLE, TLS, BUSY, SERVICE_BIND, ERROR_ANSWER, BAD_REQUEST, POOL_EXHAUSTED = (
    "timeout", "unavailable", "tls", "busy", "service_bind_refused", "error_answer", "bad_request", "pool_exhausted")


class Observer(Protocol):
    """Told of every directory operation (idp.ops.metrics is one): ``operation`` is "bind" (a password check) or
    "search" (a user or group search), timed whole, failover included; ``error`` once per server that failed it
    and once for a directory with no time left or no free connection, ``kind`` one of the constants above."""

    def operation(self, directory: str, operation: str, seconds: float) -> None: ...

    def error(self, directory: str, kind: str) -> None: ...


_observers: Observers[Observer] = Observers("directory observer")


def watch(observer: Observer) -> None:
    """Tell ``observer`` of every operation of every directory in this process (once, however often called)."""
    _observers.add(observer)


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
    # When read from the directory (the bridge's clock, epoch seconds), for groups taken from the cache; None: now.
    cached_at: float | None = None


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


class _ServerFailed(Exception):
    """This server cannot serve the operation now (StartTLS refused, busy, no TLS): try the next one."""

    def __init__(self, message: str, kind: str = BUSY) -> None:
        super().__init__(message)
        self.kind = kind


class _ServiceBindRefused(DirectoryUnavailable):
    """The directory refused the service account (told apart from other outages for the error counters)."""


def _arm(conn: Connection, until: float) -> None:
    """Give the next exchange on ``conn`` what is left of its time (Python's socket timeout bounds each send and
    receive; ldap3's own receive_timeout only takes whole seconds and is fixed per connection)."""
    left = until - time.monotonic()
    if left <= 0:
        raise TimeoutError("no time left for this server")
    if conn.socket is not None:
        conn.socket.settimeout(left)


def _time_limit(until: float) -> int:
    """The server-side time limit for a search (whole seconds, at least 1; 0 would mean none): the socket
    timeout set by _arm is the real bound, this only lets the server give up too."""
    return max(1, math.ceil(until - time.monotonic()))


def _timed_out(exc: BaseException) -> bool:
    # ldap3 re-raises socket errors as classes derived from both its own error and the original type.
    return isinstance(exc, TimeoutError | LDAPResponseTimeoutError)


class _Failover:
    """Which of a directory's URLs were found down lately, shared by all its connections and threads.

    The order is the configured one, except that a server found down within DOWN_SECONDS goes last: still a
    last resort (when everything is down, whatever answers first wins), never a toll on every sign-in."""

    def __init__(self, count: int, hold: float = DOWN_SECONDS) -> None:
        self._down_until = [0.0] * count
        self._hold = hold
        self._lock = threading.Lock()

    def plan(self) -> list[tuple[int, bool]]:
        """(server index, found down lately) in the order to try them."""
        now = time.monotonic()
        with self._lock:
            down = [until > now for until in self._down_until]
        return [(i, False) for i, d in enumerate(down) if not d] + [(i, True) for i, d in enumerate(down) if d]

    def down(self, index: int) -> None:
        with self._lock:
            self._down_until[index] = time.monotonic() + self._hold

    def up(self, index: int) -> None:
        with self._lock:
            self._down_until[index] = 0.0


def _describe(exc: BaseException) -> str:
    text = str(exc.args[0]) if len(exc.args) == 1 else str(exc)
    # ldap3 wraps some messages in the repr of a one-element tuple, sometimes twice: unwrap them.
    while text.startswith("(") and text.endswith(",)"):
        try:
            inner = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            break
        if not (isinstance(inner, tuple) and len(inner) == 1):
            break
        text = str(inner[0])
    text = text or type(exc).__name__
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
    """The value of the DN's first RDN when it is ``attribute`` (cn=staff,ou=groups -> staff), unescaped
    (RFC 4514: cn=Sales\\, EMEA names the group "Sales, EMEA"); None when it is not, or is not plain text."""
    try:
        rdn = parse_dn(dn)[0]
    except (LDAPInvalidDnError, IndexError):
        return None
    return _unescaped(str(rdn[1])) if str(rdn[0]).lower() == attribute.lower() else None


_ESCAPED = re.compile(r"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)


def _unescaped(value: str) -> str | None:
    """An RFC 4514 attribute value as text: a backslash and a character is that character, a backslash and two
    hex digits an octet of its UTF-8. None for a value in BER (#...) or octets that are not UTF-8."""
    if value.startswith("#"):
        return None
    octets, at = bytearray(), 0
    for m in _ESCAPED.finditer(value):
        octets += value[at:m.start()].encode() + (bytes.fromhex(m[1]) if len(m[1]) == 2 else m[1].encode())
        at = m.end()
    octets += value[at:].encode()
    try:
        return octets.decode("utf-8")
    except UnicodeDecodeError:
        return None


_SEPARATOR = re.compile(r"(?<!\\)\s*,\s*")


def _under(dn: str, base: str) -> bool:
    """Whether ``dn`` is ``base`` or below it, without case or spaces around the RDNs' commas. Compared as text:
    ldap3's parse_dn refuses DNs that servers return (CN=C# Developers), and a server writes its DNs one way."""
    entry, top = (_SEPARATOR.sub(",", text.strip()).lower() for text in (dn, base))
    if not top or entry == top:
        return True
    if not entry.endswith("," + top):
        return False
    # That comma must separate RDNs: not escaped (an even number of backslashes before it).
    head = entry[:-len(top) - 1]
    return (len(head) - len(head.rstrip("\\"))) % 2 == 0


class _ConnectionPool:
    """A few open connections reused across sign-ins (a TCP and TLS handshake per sign-in would cost more
    than the sign-in). ldap3's synchronous connections are not thread-safe: each is lent to one caller.

    ``size`` bounds the open connections, lent and idle together: a burst of sign-ins waits for one (within
    its deadline) rather than opening a connection each. Each connection belongs to one server (its index)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._idle: list[tuple[int, Connection]] = []
        self._cond = threading.Condition()
        self.live = 0  # open connections, lent or idle
        self.peak = 0  # the most ever open at once (diagnostics)
        self._closed = False

    def take(self, index: int, deadline: float) -> Connection | None:
        """An idle connection to server ``index``, or None with a slot reserved for opening one (give it back
        with ``put`` or ``discard``). DirectoryUnavailable when no slot frees up before ``deadline``."""
        stale: list[Connection] = []
        try:
            with self._cond:
                while True:
                    for pos, (i, conn) in enumerate(self._idle):
                        if i == index:
                            del self._idle[pos]
                            return conn
                    if self._idle and self.live >= self._size:
                        # Idle connections to a server we are not using now: make room for one we need.
                        stale.append(self._idle.pop(0)[1])
                        self.live -= 1
                    if self.live < self._size:
                        self.live += 1
                        self.peak = max(self.peak, self.live)
                        return None
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise DirectoryUnavailable(UNAVAILABLE, f"all {self._size} directory connections are busy")
                    self._cond.wait(left)
        finally:
            for conn in stale:
                _close_quietly(conn)

    def put(self, index: int, conn: Connection) -> None:
        with self._cond:
            if not self._closed:
                # Most recently used last: take() scans from the front, so the oldest stay in use too.
                self._idle.append((index, conn))
                self._cond.notify()
                return
        # Lent when the pool was closed (its directory removed or changed): kept, it would stay bound for good.
        self.discard(conn)

    def discard(self, conn: Connection | None) -> None:
        """Close a lent connection (its state is unknown after a failure) or release an unused slot."""
        if conn is not None:
            _close_quietly(conn)
        with self._cond:
            self.live -= 1
            self._cond.notify()

    def clear(self) -> None:
        """Close the idle connections now and the lent ones as they come back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self.live -= len(idle)
            self._cond.notify_all()
        for _, conn in idle:
            _close_quietly(conn)


def _close_quietly(conn: Connection) -> None:
    conn.password = None
    with suppress(LDAPException, OSError):
        conn.unbind()
    # ldap3 leaves the socket of a connection that failed half-way (refused StartTLS, failed handshake) open.
    if conn.socket is not None:
        with suppress(OSError):
            conn.socket.close()


def _clock_seconds() -> float:
    return clock.now().timestamp()


class _GroupCache:
    """user DN -> group names for ``group_cache_seconds``: a busy sign-in page must not walk the groups every time.

    Timed by the bridge's clock (idp.clock, which tests move) rather than time.monotonic: an entry stored "in
    the future" (the clock went back) counts as expired, so a clock step can only shorten its life."""

    def __init__(self, ttl: float, max_entries: int = 10_000, now: Callable[[], float] = _clock_seconds) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._now = now
        self._data: dict[str, tuple[float, Groups]] = {}  # key -> (stored at, groups)
        self._lock = threading.Lock()

    def _fresh(self, stored: float, t: float) -> bool:
        return stored <= t < stored + self._ttl

    def get(self, key: str) -> Groups | None:
        """The groups stored for ``key``, marked with when they were read, while fresh."""
        if self._ttl <= 0:
            return None
        t = self._now()
        with self._lock:
            hit = self._data.get(key)
            if hit is None or not self._fresh(hit[0], t):
                return None
            return replace(hit[1], cached_at=hit[0])

    def put(self, key: str, groups: Groups) -> None:
        if self._ttl <= 0:
            return
        t = self._now()
        with self._lock:
            if len(self._data) >= self._max:
                self._data = {k: v for k, v in self._data.items() if self._fresh(v[0], t)}
                if len(self._data) >= self._max:
                    self._data.clear()
            self._data[key] = (t, groups)


class LdapDirectory:
    """One configured LDAP directory."""

    def __init__(self, cfg: DirectoryConfig, bind_password: str | None) -> None:
        self.cfg = cfg
        self._bind_password = bind_password
        self._tls = _VerifyingTls(cfg.ca_file, cfg.tls_verify, cfg.tls_server_name)
        # Passwords (the service account's and users') only ever travel over TLS when TLS is configured at all:
        # a server that lost StartTLS, or an ldap:// URL next to ldaps:// ones, must not get them in clear.
        self._tls_required = cfg.start_tls or any(urlsplit(url).scheme == "ldaps" for url in cfg.urls)
        self._failover = _Failover(len(cfg.urls))
        self._search_pool = _ConnectionPool(cfg.pool_size)
        self._bind_pool = _ConnectionPool(cfg.pool_size)
        self._groups = _GroupCache(cfg.group_cache_seconds)
        # A DN nobody has: "unknown user" binds as it, so that it costs what a wrong password costs.
        self._dummy_dn = f"cn=idp-no-such-user-{uuid.uuid4().hex},{cfg.users_base}"

    # --- connections -------------------------------------------------------------------------------------

    def _open(self, index: int, until: float, service: bool) -> Connection:
        """A new connection to server ``index`` (StartTLS done; bound as the service account if ``service``)."""
        # One Server per connection: its connect timeout is this attempt's share of the deadline. receive_timeout
        # stays None (ldap3 would pack it into SO_RCVTIMEO as whole seconds); _arm sets the socket's timeout.
        server = _server(self.cfg.urls[index], self._tls, max(0.001, until - time.monotonic()))
        conn = Connection(server, read_only=True, raise_exceptions=False, receive_timeout=None,
                          auto_bind=ldap3.AUTO_BIND_NONE,
                          # A referral would make ldap3 bind again, with the same credentials, at the referred host.
                          auto_referrals=False)
        try:
            conn.open(read_server_info=False)
            if self.cfg.start_tls and not server.ssl:
                _arm(conn, until)
                if not conn.start_tls(read_server_info=False):
                    raise _ServerFailed(f"StartTLS refused: {(conn.result or {}).get('description')}", TLS)
            if service and self.cfg.bind_dn:
                self._service_bind(conn, until)
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    def _require_tls(self, conn: Connection) -> None:
        if self._tls_required and not (conn.server.ssl or conn.tls_started):
            raise _ServerFailed("refusing to send a password over a connection without TLS", TLS)

    def _service_bind(self, conn: Connection, until: float) -> None:
        self._require_tls(conn)
        _arm(conn, until)
        # As typed, as a user's password (_bind_as): not SASLprep-ed by ldap3.
        secret = self._bind_password.encode("utf-8", "surrogatepass") if self._bind_password is not None else None
        conn.authentication, conn.user, conn.password = ldap3.SIMPLE, self.cfg.bind_dn, secret
        try:
            ok = conn.bind(read_server_info=False)
        finally:
            conn.password = None  # pooled connections must not keep the service password
        if ok:
            return
        result = conn.result or {}
        text = f"{result.get('description')} {result.get('message') or ''}".strip()
        if result.get("result") in _SERVER_TROUBLE or result.get("result") is None:
            raise _ServerFailed(f"service bind failed: {text}")
        # A refused service account is a configuration outage, not a user's wrong password (and the same on
        # every server: no failover).
        raise _ServiceBindRefused(UNAVAILABLE, f"directory {self.cfg.name}: service bind as {self.cfg.bind_dn} "
                                               f"refused: {text}")

    def _run(self, pool: _ConnectionPool, service: bool, what: str, op: Callable[[Connection, float], T]) -> T:
        """``_attempt`` timed for the observers: every ldap3 call of a sign-in goes through here."""
        started = time.perf_counter()
        try:
            return self._attempt(pool, service, what, op)
        finally:
            # Service connections search (users, groups); the others exist to check users' passwords by bind.
            operation, seconds = "search" if service else "bind", time.perf_counter() - started
            _observers.tell(lambda o: o.operation(self.cfg.name, operation, seconds))

    def _failed(self, kind: str) -> None:
        _observers.tell(lambda o: o.error(self.cfg.name, kind))

    def _attempt(self, pool: _ConnectionPool, service: bool, what: str, op: Callable[[Connection, float], T]) -> T:
        """Run ``op(conn, until)`` on a connection to the first server that answers, all within one deadline (the
        timeout). ``until`` is when this server's share of it ends: an op of several exchanges (the group walk)
        arms the socket with what is left before each one (_arm), so the whole op, not each exchange, is bounded.

        Servers are tried in the configured order (those found down lately last), one connection each; a
        server that times out, resets or fails TLS is marked down and the next one tried, with an equal share
        of the time left, so a hung first server cannot eat the whole deadline. A pooled connection that
        fails other than by timing out may just have been closed by the server: it gets one retry on a fresh
        connection to the same server. Answers (DirectoryUnavailable from ``op``) end the walk at once."""
        deadline = time.monotonic() + self.cfg.timeout
        plan = self._failover.plan()
        errors: list[str] = []
        for pos, (index, was_down) in enumerate(plan):
            url = self.cfg.urls[index]
            # Servers found down lately do not shrink the share of the ones believed up.
            left_in_class = sum(1 for _, d in plan[pos:] if d == was_down)
            fresh_only = False
            while True:
                now = time.monotonic()
                if now >= deadline:
                    break
                until = now + (deadline - now) / left_in_class
                try:
                    conn = pool.take(index, deadline)
                except DirectoryUnavailable:
                    self._failed(POOL_EXHAUSTED)
                    raise
                pooled = conn is not None and not fresh_only
                try:
                    if conn is None or fresh_only:
                        if conn is not None:  # the stale one: replace it, keeping its slot
                            _close_quietly(conn)
                        conn = self._open(index, until, service)
                    _arm(conn, until)
                    result = op(conn, until)
                except DirectoryUnavailable as exc:
                    pool.discard(conn)
                    self._failed(SERVICE_BIND if isinstance(exc, _ServiceBindRefused) else ERROR_ANSWER)
                    raise
                except _ServerFailed as exc:
                    pool.discard(conn)
                    self._failed(exc.kind)
                    errors.append(f"{url}: {exc}")
                except (LDAPCommunicationError, LDAPStartTLSError, LDAPResponseTimeoutError, OSError) as exc:
                    # (ssl.SSLError and socket timeouts are OSErrors; ldap3's socket errors derive from them.)
                    pool.discard(conn)
                    if pooled and not _timed_out(exc):
                        fresh_only = True  # not counted: servers close idle connections
                        continue
                    self._failed(TIMEOUT if _timed_out(exc) else
                                 TLS if isinstance(exc, ssl.SSLError | LDAPStartTLSError) else UNREACHABLE)
                    errors.append(f"{url}: {_describe(exc)}")
                except LDAPException as exc:
                    # Not the network: a request ldap3 refused to build. Another server would not do better.
                    pool.discard(conn)
                    self._failed(BAD_REQUEST)
                    raise DirectoryUnavailable(UNAVAILABLE, f"directory {self.cfg.name}: {what} failed: "
                                                            f"{_describe(exc)}") from exc
                except BaseException:
                    pool.discard(conn)
                    raise
                else:
                    pool.put(index, conn)
                    if was_down:
                        self._failover.up(index)
                    return result
                self._failover.down(index)
                log.info("directory %s: %s; trying the next server", self.cfg.name, errors[-1])
                break
            if time.monotonic() >= deadline:
                break
        if not errors:
            self._failed(TIMEOUT)
            errors.append(f"no answer within {self.cfg.timeout:g} s")
        reason = f"directory {self.cfg.name}: {what} failed: " + "; ".join(errors)
        log.warning("%s", reason)
        raise DirectoryUnavailable(UNAVAILABLE, reason)

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

    def id_filter(self, external_id: str) -> str:
        """The search for the entry with this stable id (as _external_id spells it), escaped like any value."""
        return f"(&{self.cfg.user_filter}({self.cfg.id_attribute}={escape_filter_chars(external_id)}))"

    def find_user(self, username: str) -> Lookup:
        name = username.strip()
        query = self.user_filter(name) if name and len(name) <= 255 else None
        if query is None:
            return Lookup(None, "unknown user")
        return self._lookup(query)

    def find_by_id(self, external_id: str) -> Lookup:
        """The entry of a user already known by their stable id (revalidating a shadow row): "unknown user"
        when it is gone, or no longer matches the user filter."""
        try:
            query = self.id_filter(external_id)
        except ValueError:
            return Lookup(None, "unknown user")
        return self._lookup(query)

    def _lookup(self, query: str) -> Lookup:
        def run(conn: Connection, until: float) -> list[dict[str, Any]]:
            conn.search(self.cfg.users_base, query, SUBTREE, attributes=self._user_attributes(), size_limit=2,
                        time_limit=_time_limit(until))
            return self._entries(conn, "user search")

        found = self._run(self._search_pool, True, "user search", run)
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
        names = {n.lower() for n in _all(attrs, self.cfg.username_attribute)}
        if len(names) > 1:
            # uid is multi-valued in LDAP's schema: the first value is the server's order, and whoever typed
            # another one would be signed in under it (and take that name from its owner).
            return Lookup(None, f"entry {dn} has {len(names)} values of {self.cfg.username_attribute}, and a user "
                                "has one name: choose a single-valued username_attribute")
        return Lookup(DirectoryEntry(
            dn=dn, external_id=external_id, username=stored_name,
            email=_first(attrs, self.cfg.email_attribute),
            given_name=_first(attrs, self.cfg.given_name_attribute),
            family_name=_first(attrs, self.cfg.family_name_attribute),
            display_name=_first(attrs, self.cfg.display_name_attribute),
            member_of=_all(attrs, "memberOf"),
            account_state=state,
        ))

    def _entries(self, conn: Connection, what: str, *, absent_ok: bool = False) -> list[dict[str, Any]]:
        """The entries a search found. ``absent_ok`` (an entry looked up by its DN): a base that does not exist
        means no entry, not an outage."""
        result = conn.result or {}
        code = result.get("result", 0)
        if code == 32 and absent_ok:
            return []
        # 0 success, 4 sizeLimitExceeded (more than one match: reported as ambiguous). Anything else is the
        # directory failing us, 32 noSuchObject too: the base is gone (renamed, a typo), which says nothing about
        # who exists; taken for "unknown user", it would let a later directory sign in someone else of that name.
        if code in (51, 52):  # busy, unavailable: another server may answer
            raise _ServerFailed(f"{what} failed: {result.get('description')}")
        if code == 32:  # another server (a replica that has the base) may answer
            raise _ServerFailed(f"{what} failed: its base DN does not exist there (noSuchObject); check the "
                                "directory's base DNs")
        if code not in (0, 4):
            raise DirectoryUnavailable(UNAVAILABLE, f"directory {self.cfg.name}: {what} failed: "
                                                    f"{result.get('description')} {result.get('message') or ''}")
        return [r for r in (conn.response or []) if r.get("type") == "searchResEntry"]

    def verify_password(self, entry: DirectoryEntry, password: str) -> Refusal | None:
        """None when the password is right, else why not."""
        if not password:
            # An empty password would be an unauthenticated bind, which succeeds (RFC 4513 5.1.2).
            return Refusal("empty password")
        return self._bind_as(entry.dn, password)

    def dummy_bind(self, password: str) -> None:
        """A bind that fails, as costly as checking a real user's password: "unknown user" must not answer
        measurably faster than "wrong password" (that would tell which names exist). An outage here is not
        reported: the answer is "unknown user" either way."""
        if not password:
            return
        try:
            self._bind_as(self._dummy_dn, password)
        except DirectoryUnavailable as exc:
            log.debug("directory %s: dummy bind failed: %s", self.cfg.name, exc.reason)

    def _bind_as(self, dn: str, password: str) -> Refusal | None:
        # The password as typed, in UTF-8 octets: given text, ldap3 applies SASLprep (RFC 4511 4.2's SHOULD):
        # NFKC, a no-break space made a space, emoji joiners and variation selectors dropped, mixed scripts
        # refused. OpenLDAP and Active Directory compare what they stored, as their own tools and Windows send it,
        # unprepared: such a password never matched, and each try counted towards a lockout.
        secret = password.encode("utf-8", "surrogatepass")

        def run(conn: Connection, until: float) -> Refusal | None:
            self._require_tls(conn)
            conn.authentication, conn.user, conn.password = ldap3.SIMPLE, dn, secret
            try:
                ok = conn.bind(read_server_info=False)
            except LDAPPasswordIsMandatoryError:  # nothing to send: an unauthenticated bind, never a sign-in
                return Refusal("bad password")
            finally:
                conn.password = None
            if ok:
                return None
            result = conn.result or {}
            code = result.get("result")
            if code in _SERVER_TROUBLE or code is None:  # the server, not the user
                raise _ServerFailed(f"bind failed: {result.get('description')} {result.get('message') or ''}")
            return self._bind_refusal(code, str(result.get("description") or ""), str(result.get("message") or ""))

        return self._run(self._bind_pool, False, "password check", run)

    def _bind_refusal(self, code: int, description: str, message: str) -> Refusal:
        """What a refused user bind means (a directory with richer answers, such as AD, says more)."""
        if code == INVALID_CREDENTIALS:
            return Refusal("bad password")
        return Refusal(f"bind refused: {description} {message}".strip())

    # --- groups ------------------------------------------------------------------------------------------

    def groups(self, entry: DirectoryEntry, *, use_cache: bool = True) -> Groups:
        key = entry.dn.lower()
        if use_cache and (hit := self._groups.get(key)) is not None:
            return hit
        found = self._run(self._search_pool, True, "group search",
                          lambda conn, until: self._resolve(conn, until, entry))
        self._groups.put(key, found)
        return found

    def _resolve(self, conn: Connection, until: float, entry: DirectoryEntry) -> Groups:
        c = self.cfg
        names: dict[str, str] = {}  # lower-cased DN -> group name
        if c.group_mode == "posix":
            # posixGroup members are user names, not DNs, so there is nothing to nest.
            query = f"(&{c.group_filter}(memberUid={escape_filter_chars(entry.username)}))"
            for found in self._search_groups(conn, until, query):
                names.setdefault(found[0], found[1])
            return Groups(tuple(sorted(set(names.values()))), 1, False)
        if c.group_mode == IN_CHAIN:
            # The server walks the nesting itself (cycles included): every group in one search.
            query = f"(&{c.group_filter}(member:{IN_CHAIN_RULE}:={escape_filter_chars(entry.dn)}))"
            for found in self._search_groups(conn, until, query):
                names.setdefault(found[0].lower(), found[1])
            return Groups(tuple(sorted(set(names.values()))), 0, False)
        if c.group_mode == "memberof":
            frontier = []
            for dn in entry.member_of:
                # The groups the other modes would find: under the group base only. Elsewhere (an OU whose
                # admin may make groups) a group named like an admin group must not count as one.
                if dn.lower() in names or not _under(dn, c.groups_base):
                    continue
                name = _rdn_value(dn, c.group_name_attribute) or self._group_name(conn, until, dn)
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
                for dn, name in self._search_groups(conn, until, f"(&{c.group_filter}(|{members}))"):
                    if dn.lower() not in seen:
                        seen.add(dn.lower())
                        names[dn.lower()] = name
                        parents.append(dn)
            frontier = parents
            if parents:
                levels += 1
        return Groups(tuple(sorted(set(names.values()))), levels, bool(frontier))

    def _search_groups(self, conn: Connection, until: float, query: str) -> Iterator[tuple[str, str]]:
        for found in self._group_entries(conn, until, query):
            name = _first(found.get("attributes"), self.cfg.group_name_attribute)
            if name:
                yield found["dn"], name

    def _group_entries(self, conn: Connection, until: float, query: str) -> list[dict[str, Any]]:
        """Every group the search finds. One answer holds them as a rule; more than the server's size limit
        (AD answers 1,000 entries, OpenLDAP 500 by default) are asked for again in pages. A result still cut
        short is an error: the groups left out would silently take roles away from the user."""
        paged, cookie, entries = False, None, []  # cookie: bytes from the server; None asks for the first page
        while True:
            # Each level of a nested walk (and each page) gets only what is left of the call's time, not a fresh
            # timeout: a slow server must not stretch a walk to depth x timeout. Running out is an outage.
            _arm(conn, until)
            conn.search(self.cfg.groups_base, query, SUBTREE, attributes=[self.cfg.group_name_attribute],
                        time_limit=_time_limit(until), paged_size=_PAGE if paged else None, paged_cookie=cookie)
            if (conn.result or {}).get("result") == SIZE_LIMIT_EXCEEDED:
                if paged:
                    raise DirectoryUnavailable(UNAVAILABLE, f"directory {self.cfg.name}: a group search finds more "
                                               "groups than the server lets the service account read, even in pages "
                                               "(sizeLimitExceeded); raise that account's limit (OpenLDAP: "
                                               "size.prtotal)")
                paged = True
                continue
            entries += self._entries(conn, "group search")
            if not paged:
                return entries
            cookie = (conn.result.get("controls") or {}).get(_PAGED, {}).get("value", {}).get("cookie")
            if not cookie:
                return entries

    def _group_name(self, conn: Connection, until: float, dn: str) -> str | None:
        _arm(conn, until)
        conn.search(dn, "(objectClass=*)", BASE, attributes=[self.cfg.group_name_attribute],
                    time_limit=_time_limit(until))
        found = self._entries(conn, "group lookup", absent_ok=True)  # memberOf naming a group gone since
        return _first(found[0].get("attributes"), self.cfg.group_name_attribute) if found else None

    # --- diagnostics (idp directory test) ----------------------------------------------------------------

    def probe(self) -> list[tuple[str, str | None]]:
        """Each URL on its own: connect (and StartTLS), then the service bind. (url, None) or (url, error)."""
        out: list[tuple[str, str | None]] = []
        for index, url in enumerate(self.cfg.urls):
            try:
                _close_quietly(self._open(index, time.monotonic() + self.cfg.timeout, True))
                out.append((url, None))
            except DirectoryUnavailable as exc:
                out.append((url, exc.reason))
            except (_ServerFailed, LDAPException, OSError) as exc:
                out.append((url, _describe(exc)))
        return out
