"""What every `idp` command group shares: who is acting, for the audit log."""

from __future__ import annotations

import getpass


def actor() -> str:
    """The operating-system account running the CLI."""
    try:
        return "cli:" + getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "cli:unknown"
