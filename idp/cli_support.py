"""What every `idp` command group shares: who is acting, for the audit log; the ``--role`` option's syntax."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from idp.access.claims import parse_role_spec
from idp.errors import BadRequest
from idp.files import read_bounded

# A JWKS or an inline policy: far smaller (IAM takes 10,240 characters of policy).
JSON_FILE_MAX_BYTES = 1024 * 1024


def read_json_file(path: str) -> Any:
    """The JSON value in a file named on the command line, or BadRequest saying why not."""
    try:
        data = read_bounded(Path(path), JSON_FILE_MAX_BYTES)
    except OSError as exc:
        raise BadRequest(f"cannot read {path}: {exc.strerror}") from None
    if data is None:
        raise BadRequest(f"{path} is larger than {JSON_FILE_MAX_BYTES} bytes")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(f"{path} is not UTF-8 text") from None
    except RecursionError:
        raise BadRequest(f"{path} is not JSON: nested too deeply") from None
    except ValueError as exc:
        raise BadRequest(f"{path} is not JSON: {exc}") from None


def stdin_line() -> str:
    """One line of stdin (a password), without its line ending. Read as bytes: a text stdin decodes strictly under
    a UTF-8 locale, and bytes that are not UTF-8 then raised before anyone could say so; they come back as lone
    surrogates, which the callers refuse (idp.text.unstorable_text)."""
    return sys.stdin.buffer.readline().decode("utf-8", "surrogateescape").rstrip("\r\n")


def actor() -> str:
    """The operating-system account running the CLI."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "cli:unknown"


def role_spec(spec: str) -> tuple[str, str, str]:
    """``--role NAME:GROUP=ROLE`` (``idp sp``, ``idp oidc-client``) as (name, group, role), or BadRequest."""
    try:
        return parse_role_spec(spec)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def echo_record(info: Mapping[str, Any], as_json: bool,
                render: Mapping[str, Callable[[Any], list[str]]] | None = None) -> None:
    """What a `show` command prints: the record as JSON, or a `key: value` line each, a list as one line per
    item ("-" when empty); ``render`` gives some keys lines of their own."""
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if render and key in render:
            lines = render[key](value)
        elif isinstance(value, list):
            lines = [str(item) for item in value] or ["-"]
        else:
            lines = [str(value)]
        for line in lines:
            click.echo(f"{key}: {line}")
