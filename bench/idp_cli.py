"""Several `idp` commands in one process, as the benchmarks configure the bridge: each `idp` process spends over
a second importing the app, which the short mode (run in CI) would pay a dozen times.

Reads ``[[args, stdin or null], ...]`` as JSON on stdin and writes ``[{"status", "stdout", "stderr"}, ...]`` as
JSON on stdout, one entry per command run; stops after the first that fails. The environment (IDP_*) is the
instance's, as for `idp` itself.
"""

from __future__ import annotations

import json
import sys
import traceback

from click.testing import CliRunner

from idp.cli import cli


def run_all() -> None:
    results = []
    for args, stdin in json.load(sys.stdin):
        done = CliRunner().invoke(cli, args, input=stdin, prog_name="idp")
        stderr = done.stderr
        if done.exc_info is not None and not isinstance(done.exception, SystemExit):
            stderr += "".join(traceback.format_exception(*done.exc_info))
        results.append({"status": done.exit_code, "stdout": done.stdout, "stderr": stderr})
        if done.exit_code:
            break
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    run_all()
