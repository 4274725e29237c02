"""Settings: read from ``IDP_*`` environment variables, validated all at once."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from idp.authn.connectors.settings import DirectoryConfig, load_file
from idp.urls import split_url

# AWS's limits on session tags (IDP_AWS_PRINCIPAL_TAGS).
_AWS_MAX_SESSION_TAGS = 50
_AWS_TAG_KEY = re.compile(r"[\w .:/=+@-]{1,128}")


class ConfigError(Exception):
    """Every problem found in the settings, reported together."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


# What a yes-or-no setting may say; anything else is a mistake to report, not a silent "no".
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
# PostgreSQL's statement_timeout is a 32-bit count of milliseconds: a larger value refuses every connection.
_MAX_STATEMENT_TIMEOUT = (2**31 - 1) // 1000
# An hour of silence is no longer a network bound (and keeps libpq's keepalive settings within Linux's limits).
_MAX_NETWORK_TIMEOUT = 3600


# Settings that may hold a password: also read from a file (IDP_*_FILE, a mounted Secret), so that they need
# not be in the environment, which /proc/<pid>/environ and `docker inspect` show.
_FROM_FILE = frozenset({"secret_key", "database_url", "redis_url"})
# Lists, where empty means none.
_MAY_BE_EMPTY = frozenset({"aws_principal_tags", "signing_published_cert_files", "ec_signing_published_key_files"})


@dataclass(frozen=True)
class Settings:
    base_url: str = "http://127.0.0.1:5000"
    data_dir: Path = Path("instance")
    # May hold a password: never in a repr (nor redis_url).
    database_url: str | None = field(default=None, repr=False)
    # PostgreSQL's statement_timeout for the server's queries (0: none). A query waiting on a lock or a server
    # too busy to answer is cancelled and the request answered 503, instead of holding a worker thread.
    database_statement_timeout_seconds: int = 10
    # How long an open PostgreSQL connection may stay silent (sent data unacknowledged, or no sign of life while a
    # reply is awaited) before it is dropped and its request answered 503 (0: the system's TCP defaults, which
    # wait about 15 minutes): a server gone in a failover, or cut off by the network, cancels nothing itself.
    database_network_timeout_seconds: int = 10
    # psycopg prepares a statement on the server once a connection has run it five times. Off behind a pooler in
    # transaction mode (PgBouncer before 1.21, or without max_prepared_statements): the next transaction may run on
    # another server connection, where that statement does not exist.
    database_prepared_statements: bool = True
    # IDP_REDIS_URL: sessions, login throttling, replay caches, parked requests and OIDC codes live in Redis
    # when set (several instances share them there); in the database otherwise.
    redis_url: str | None = field(default=None, repr=False)
    # Flask's signing key (CSRF tokens); generated into data_dir when unset.
    secret_key: str | None = field(default=None, repr=False)
    signing_key_file: Path | None = None
    signing_cert_file: Path | None = None
    # IDP_SIGNING_PUBLISHED_CERT_FILES: certificates published beside IDP_SIGNING_CERT_FILE (comma-separated),
    # never signed with: the next key's before the files are swapped, the previous key's after. A key kept in
    # files then rotates with an overlap, as `idp keys rotate` does on the data dir.
    signing_published_cert_files: str | None = None
    # IDP_EC_SIGNING_KEY_FILE: the ES256 key (PEM, P-256); generated into data_dir when unset. Several
    # instances must share it as they share the RSA key, or one instance's JWKS lacks another's key.
    ec_signing_key_file: Path | None = None
    # IDP_EC_SIGNING_PUBLISHED_KEY_FILES: EC public keys (PEM) published in the JWKS beside it, never signed with:
    # the same overlap for a rotation of the ES256 key kept in files.
    ec_signing_published_key_files: str | None = None
    session_idle_seconds: int = 1800
    session_max_seconds: int = 8 * 3600
    login_max_failures: int = 5
    login_ip_max_failures: int = 50
    login_failure_window_seconds: int = 900
    login_lockout_seconds: int = 900
    saml_clock_skew_seconds: int = 180
    saml_assertion_lifetime_seconds: int = 300
    saml_max_message_bytes: int = 256 * 1024
    # AWS federation: session tags as "Key=attribute,..." (our attribute names, idp.access.claims.SOURCES),
    # and which attribute gives the SourceIdentity (username|email|none) and the RoleSessionName (username|email).
    # Tags and a SourceIdentity need sts:TagSession / sts:SetSourceIdentity in every role's trust policy, or AWS
    # refuses the sign-in: both are off unless asked for.
    aws_principal_tags: str | None = None
    aws_source_identity: str = "none"
    aws_role_session_name: str = "username"
    # Members of this group (from any directory) may use the admin web UI at /admin.
    admin_group: str = "idp-admins"
    log_format: str = "json"
    log_level: str = "INFO"
    workers: int = 2
    # Threads per worker: requests waiting on a directory or the database overlap. Each worker runs Python one
    # thread at a time, so CPU-bound loads go further with more workers and 1 thread (bench/README.md).
    threads: int = 4
    # Reverse proxies in front of the bridge whose X-Forwarded-For/-Proto/-Host to believe (0: none, the
    # peer's address is the client's). More than there are lets a client choose its address for the throttle.
    trusted_proxy_hops: int = 0
    # IDP_CONFIG: an optional YAML file for lists, such as the directory connectors.
    config: Path | None = None
    # IDP_PRESETS_DIR: the SAML app presets (idp sp add --preset); default: the repository's metadata/presets/.
    presets_dir: Path | None = None
    # Read from the IDP_CONFIG file (not an environment variable of its own).
    directories: tuple[DirectoryConfig, ...] = ()

    @property
    def base(self) -> str:
        return self.base_url.rstrip("/")

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    def cookie_name(self, name: str) -> str:
        """On https, ``__Host-name`` (ASVS 3.4.4): browsers keep such a cookie only if it is Secure, for path /
        and from this host itself, so no sibling subdomain can plant or overwrite it."""
        return "__Host-" + name if self.https else name

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'idp.db'}"

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def weak_secret_key(self) -> bool:
        """IDP_SECRET_KEY shorter than 32 characters: it signs the cookie and CSRF tokens (a short one can be found
        offline from any page's token) and encrypts stored bind passwords, so it is warned of at start-up rather
        than refused: changing it makes those passwords unreadable."""
        return self.secret_key is not None and len(self.secret_key) < 32

    @property
    def bind(self) -> str:
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = unquote(parts.hostname or "")  # an IPv6 zone: fe80::1%25eth0 in a URL
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # an IPv6 address goes in brackets

    def stray_variables(self, env: Mapping[str, str] | None = None) -> list[str]:
        """``IDP_*`` variables that set nothing, each said with the setting it resembles: a misspelt name leaves
        its setting at the default (IDP_DATABASE_UR for IDP_DATABASE_URL: each instance on a SQLite file of its
        own). Said, not refused: other tools' variables may share the prefix."""
        env = os.environ if env is None else env
        known = {"IDP_" + f.name.upper() for f in fields(self) if f.name != "directories"}
        known |= {"IDP_" + name.upper() + "_FILE" for name in _FROM_FILE}
        known |= {d.bind_password_env for d in self.directories if d.bind_password_env}
        out = []
        for name in sorted(n for n in env if n.startswith("IDP_") and n not in known):
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
            out.append(f"{name} is no setting of the bridge and is ignored"
                       + (f"; did you mean {close[0]}?" if close else ""))
        return out

    @property
    def published_cert_files(self) -> tuple[Path, ...]:
        return _paths(self.signing_published_cert_files)

    @property
    def ec_published_key_files(self) -> tuple[Path, ...]:
        return _paths(self.ec_signing_published_key_files)

    @property
    def aws_tags(self) -> tuple[tuple[str, str], ...]:
        """IDP_AWS_PRINCIPAL_TAGS as (tag key, our attribute) pairs, in the order given."""
        pairs = (item.rpartition("=") for item in (self.aws_principal_tags or "").split(",") if item.strip())
        return tuple((key.strip(), attribute.strip()) for key, _, attribute in pairs)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``IDP_*`` variables (and ``IDP_*_FILE`` for secrets), then validate."""
        env = os.environ if env is None else env
        problems: list[str] = []
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "directories":
                continue
            name = "IDP_" + f.name.upper()
            raw = env.get(name)
            source = name
            if f.name in _FROM_FILE and env.get(name + "_FILE") is not None:
                source = name + "_FILE"
                if not env[source].strip():
                    problems.append(f"{source}: set but empty; unset it for the default")
                    continue
                if raw is not None:
                    problems.append(f"{name} and {source} are both set: set one")
                    continue
                try:
                    raw = Path(env[source]).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    problems.append(f"{source}: cannot read {env[source]!r} ({exc.strerror})")
                    continue
                except UnicodeDecodeError:
                    problems.append(f"{source}: {env[source]!r} is not UTF-8 text")
                    continue
            if raw is None:
                continue
            if not raw.strip() and f.name not in _MAY_BE_EMPTY:
                # Mostly a compose or shell variable that expanded to nothing: taken for "unset", an empty
                # IDP_DATABASE_URL would quietly give each instance a SQLite database of its own.
                problems.append(f"{source}: set but empty; unset it for the default")
                continue
            default = f.default
            try:
                if isinstance(default, bool):
                    word = raw.strip().lower()
                    if word not in _BOOLEANS:
                        problems.append(f"{name}: {raw!r} must be true or false")
                        continue
                    values[f.name] = _BOOLEANS[word]
                elif isinstance(default, int):
                    values[f.name] = int(raw)
                elif f.name in ("data_dir", "signing_key_file", "signing_cert_file", "ec_signing_key_file", "config",
                                "presets_dir"):
                    values[f.name] = Path(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                problems.append(f"{name}: {raw!r} is not a whole number")
        values.update(overrides)
        if values.get("config") is not None and "directories" not in overrides:
            values["directories"], file_problems = load_file(values["config"])
            problems.extend(file_problems)
        settings = cls(**values)
        problems.extend(settings.problems())
        if problems:
            raise ConfigError(problems)
        return settings

    def problems(self) -> list[str]:
        out: list[str] = []
        parts = split_url(self.base_url)
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            out.append(f"IDP_BASE_URL: {self.base_url!r} must be an absolute http(s) URL")
        elif parts.query or parts.fragment:
            out.append("IDP_BASE_URL: must not have a query or fragment")
        elif parts.port == 0:
            out.append("IDP_BASE_URL: port 0 is no port to serve on")
        if self.database_url is not None and not self.database_url.startswith(("sqlite:", "postgresql")):
            out.append("IDP_DATABASE_URL: only sqlite:// and postgresql:// URLs are supported")
        if self.redis_url is not None and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            out.append("IDP_REDIS_URL: only redis://, rediss:// and unix:// URLs are supported")
        for label, url in (("IDP_DATABASE_URL", self.database_url), ("IDP_REDIS_URL", self.redis_url)):
            # user:p@ss@host reads as the password "p" at the host "ss@host": the rest of the password would be
            # in every connection error logged. (Said without the URL, which holds it.)
            if url is not None and url.partition("://")[2].partition("/")[0].count("@") > 1:
                out.append(f"{label}: more than one '@' before the host: write an '@' in the user name or "
                           "password as %40")
            elif url is not None and (problem := _url_problem(label, url)):
                out.append(f"{label}: {problem}")
        if (self.signing_key_file is None) != (self.signing_cert_file is None):
            out.append("IDP_SIGNING_KEY_FILE and IDP_SIGNING_CERT_FILE must be set together")
        for label, path in (("IDP_SIGNING_KEY_FILE", self.signing_key_file),
                            ("IDP_SIGNING_CERT_FILE", self.signing_cert_file),
                            ("IDP_EC_SIGNING_KEY_FILE", self.ec_signing_key_file),
                            *(("IDP_SIGNING_PUBLISHED_CERT_FILES", p) for p in self.published_cert_files),
                            *(("IDP_EC_SIGNING_PUBLISHED_KEY_FILES", p) for p in self.ec_published_key_files)):
            if path is not None and not path.is_file():
                out.append(f"{label}: {path} is not a readable file")
        if self.published_cert_files and self.signing_key_file is None:
            out.append("IDP_SIGNING_PUBLISHED_CERT_FILES: only with IDP_SIGNING_KEY_FILE (generated keys rotate with "
                       "`idp keys rotate`)")
        if self.ec_published_key_files and self.ec_signing_key_file is None:
            out.append("IDP_EC_SIGNING_PUBLISHED_KEY_FILES: only with IDP_EC_SIGNING_KEY_FILE (generated keys rotate "
                       "with `idp keys rotate`)")
        if self.presets_dir is not None and not self.presets_dir.is_dir():
            out.append(f"IDP_PRESETS_DIR: {self.presets_dir} is not a directory")
        positive = {
            "IDP_SESSION_IDLE_SECONDS": self.session_idle_seconds,
            "IDP_SESSION_MAX_SECONDS": self.session_max_seconds,
            "IDP_LOGIN_MAX_FAILURES": self.login_max_failures,
            "IDP_LOGIN_IP_MAX_FAILURES": self.login_ip_max_failures,
            "IDP_LOGIN_FAILURE_WINDOW_SECONDS": self.login_failure_window_seconds,
            "IDP_LOGIN_LOCKOUT_SECONDS": self.login_lockout_seconds,
            "IDP_SAML_ASSERTION_LIFETIME_SECONDS": self.saml_assertion_lifetime_seconds,
            "IDP_SAML_MAX_MESSAGE_BYTES": self.saml_max_message_bytes,
            "IDP_WORKERS": self.workers,
            "IDP_THREADS": self.threads,
        }
        out.extend(f"{k}: must be greater than 0" for k, v in positive.items() if v <= 0)
        if self.saml_clock_skew_seconds < 0:
            out.append("IDP_SAML_CLOCK_SKEW_SECONDS: must not be negative")
        if not 0 <= self.database_statement_timeout_seconds <= _MAX_STATEMENT_TIMEOUT:
            out.append(f"IDP_DATABASE_STATEMENT_TIMEOUT_SECONDS: must be between 0 (off) and {_MAX_STATEMENT_TIMEOUT}")
        if not 0 <= self.database_network_timeout_seconds <= _MAX_NETWORK_TIMEOUT:
            out.append(f"IDP_DATABASE_NETWORK_TIMEOUT_SECONDS: must be between 0 (off) and {_MAX_NETWORK_TIMEOUT}")
        if self.trusted_proxy_hops < 0:
            out.append("IDP_TRUSTED_PROXY_HOPS: must not be negative")
        if self.session_idle_seconds > self.session_max_seconds:
            out.append("IDP_SESSION_IDLE_SECONDS: must not exceed IDP_SESSION_MAX_SECONDS")
        out.extend(self._aws_problems())
        if self.log_format not in ("json", "text"):
            out.append(f"IDP_LOG_FORMAT: {self.log_format!r} must be 'json' or 'text'")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            out.append(f"IDP_LOG_LEVEL: {self.log_level!r} must be DEBUG, INFO, WARNING or ERROR")
        return out

    def _aws_problems(self) -> list[str]:
        # Imported here: the claims module reaches the models, and settings are read before anything else.
        from idp.access.claims import SOURCES

        out: list[str] = []
        if self.aws_source_identity not in ("username", "email", "none"):
            out.append(f"IDP_AWS_SOURCE_IDENTITY: {self.aws_source_identity!r} must be username, email or none")
        if self.aws_role_session_name not in ("username", "email"):
            out.append(f"IDP_AWS_ROLE_SESSION_NAME: {self.aws_role_session_name!r} must be username or email")
        tags = self.aws_tags
        if len(tags) > _AWS_MAX_SESSION_TAGS:
            out.append(f"IDP_AWS_PRINCIPAL_TAGS: AWS takes at most {_AWS_MAX_SESSION_TAGS} session tags")
        seen: set[str] = set()
        for key, attribute in tags:
            if not _AWS_TAG_KEY.fullmatch(key) or key.lower().startswith("aws:"):
                out.append(f"IDP_AWS_PRINCIPAL_TAGS: {key!r} is not a valid tag key (1 to 128 letters, digits, "
                           "spaces or _.:/=+-@, not starting with aws:)")
            elif key.lower() in seen:  # AWS compares tag keys without case
                out.append(f"IDP_AWS_PRINCIPAL_TAGS: tag {key!r} is given twice")
            seen.add(key.lower())
            if attribute == "groups" or attribute not in SOURCES:  # a tag has one value, and groups many
                single = [s for s in SOURCES if s != "groups"]
                out.append(f"IDP_AWS_PRINCIPAL_TAGS: tag {key!r} needs one of {', '.join(single)}, "
                           f"not {attribute!r}")
        return out


def _url_problem(label: str, url: str) -> str | None:
    """What keeps the database or Redis URL from being used, as its client library would find at the first
    connection. Never quotes the URL, which may hold a password (SQLAlchemy's own message would)."""
    from redis.connection import parse_url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if label == "IDP_REDIS_URL":
        try:
            parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            # Not its text: a '/' in the password ends the host part there, and urllib quotes the rest as the port.
            if "Port" in str(exc):
                return ("not a valid URL: its port is not a number from 1 to 65535 (write a '/', '?', '#' or '@' in "
                        "the password as %2F, %3F, %23 or %40)")
            return "not a valid URL: a query parameter's value is not one redis-py takes"
        return None
    try:
        port = make_url(url).port
    except ArgumentError:
        return "not a valid URL"
    except ValueError:
        return "not a valid URL: the port must be a number"
    if port is not None and not 0 < port < 65536:
        return f"port {port} is out of range"
    return None


def _paths(listed: str | None) -> tuple[Path, ...]:
    """A comma-separated list of files, as the *_PUBLISHED_* settings give them."""
    return tuple(Path(item.strip()) for item in (listed or "").split(",") if item.strip())
