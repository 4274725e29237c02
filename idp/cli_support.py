"""What every `idp` command group shares: who is acting, for the audit log; the ``--role`` option's syntax."""

from __future__ import annotations

import getpass

from idp.access.claims import parse_role_spec
from idp.errors import BadRequest


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
