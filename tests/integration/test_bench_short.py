"""The benchmark commands in bench/ in their short mode: each starts `idp serve` and its peer (SimpleSAMLphp
under Apache, node's oidc-provider; slapd for the LDAP sign-in), drives both with its load generator for about
a second each and must finish without one error response. Figures are not checked, only that they are
printed. In the production pass (PostgreSQL and Redis) the bridge runs on a database made for the command and
on the suite's Redis."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import PG_URL, REDIS_URL
from psycopg import sql

BENCH = Path(__file__).resolve().parents[2] / "bench"

# Per command: its arguments, how many runs (a server over a flow) and comparisons (bridge against peer) it prints.
COMMANDS = {
    # SSO and each OIDC flow measure a third server: the stack's floor for that answer (bench/peers).
    "saml_sso": (["saml_sso.py"], 3, 1),
    # The built-in directory's login POST alone is a fifth run (the bridge by itself).
    "saml_signin": (["saml_signin.py"], 5, 2),
    "oidc": (["oidc.py"], 9, 3),
}
# Printed for each run, then once per comparison.
FIGURES = ("throughput", "latency p50/p95/p99", "server CPU", "per server CPU-second", "load generator CPU")
REFERENCE = "reference: raw RSA-2048 SHA-256 signatures with the same key"
RATIOS = {
    "saml_sso": ["bridge / SimpleSAMLphp", "raw signatures per CPU-s", "floor / SimpleSAMLphp", "bridge / floor"],
    "saml_signin": ["bridge / SimpleSAMLphp", "raw signatures per CPU-s",
                    "server CPU per sign-in (three requests) / one password hash in the server",
                    "server CPU per login POST alone / one password hash in the server",
                    "server CPU per login POST alone / one password hash in a loop"],
    "oidc": ["bridge / oidc-provider", "raw signatures per CPU-s", "floor / oidc-provider", "bridge / floor"],
}
NEEDED = ["apache2", "slapd", "ldapadd", "node", "npm"]


def _require_peers() -> None:
    """Missing peers skip the test on a laptop and fail it in CI."""
    missing = [b for b in NEEDED if not shutil.which(b, path=os.environ.get("PATH", "") + ":/usr/sbin")]
    if not Path("/usr/share/simplesamlphp/www").is_dir():
        missing.append("simplesamlphp")
    if missing:
        reason = f"benchmark peers not installed: {', '.join(missing)} (see tests/run's APT_PACKAGES)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@contextlib.contextmanager
def database_for_bench() -> Iterator[list[str]]:
    """In the production pass, an empty database of the suite's PostgreSQL for one command, and a Redis
    database of the suite's Redis that no test uses (emptied after): the command's bridge options."""
    if not PG_URL:
        yield []
        return
    conninfo = PG_URL.replace("postgresql+psycopg://", "postgresql://")
    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    bench_redis = REDIS_URL.rsplit("/", 1)[0] + "/15" if REDIS_URL else None
    try:
        yield ["--database-url", PG_URL.rsplit("/", 1)[0] + "/" + name,
               *(["--redis-url", bench_redis] if bench_redis else [])]
    finally:
        if bench_redis:
            with redis.Redis.from_url(bench_redis) as r:
                r.flushdb()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("command", COMMANDS)
def test_benchmark_runs_in_short_mode(command: str) -> None:
    _require_peers()
    args, runs, comparisons = COMMANDS[command]
    with database_for_bench() as bridge_options:
        done = subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:], "--short", *bridge_options],
                              capture_output=True, text=True, timeout=240, check=False)
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr}"
    completed = re.findall(r"^\s+completed\s+(\d+) .* \((\d+) errors\)$", out, re.MULTILINE)
    assert len(completed) == runs, out
    assert all(int(flows) > 0 and errors == "0" for flows, errors in completed), out
    for figure in FIGURES:
        assert len(re.findall(rf"^\s+{re.escape(figure)}\s", out, re.MULTILINE)) == runs, f"{figure!r}\n{out}"
    assert out.count(REFERENCE) == comparisons, out
    for ratio in RATIOS[command]:
        assert re.search(rf"^\s+ratio\s+.*{re.escape(ratio)}.*: \d+\.\d+", out, re.MULTILINE), f"{ratio!r}\n{out}"


def test_rounds_alternate_the_servers_and_report_the_median_round() -> None:
    """--rounds 3: bridge and peer measured in turn three times, after each ran the flow unmeasured (--settle);
    the ratio printed is the median round's."""
    if PG_URL:
        pytest.skip("the SQLite pass runs it: rounds are the harness's, whatever the bridge's database")
    _require_peers()
    done = subprocess.run([sys.executable, str(BENCH / "saml_sso.py"), "--short", "--rounds", "3", "--settle", "0.5"],
                          capture_output=True, text=True, timeout=240, check=False)
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out}\n{done.stderr}"
    settled = out.find("each server ran the flow unmeasured for 0.5 s first")
    assert 0 <= settled < out.find("  bridge (idp serve"), out
    servers = re.findall(r"^  (bridge \(idp serve|SimpleSAMLphp)", out, re.MULTILINE)
    assert servers == ["bridge (idp serve", "SimpleSAMLphp"] * 3, out
    rounds = re.search(r"3 rounds, bridge / peer per server CPU-second: (\d+\.\d+), (\d+\.\d+), (\d+\.\d+); "
                       r"the median round counts", out)
    assert rounds is not None, out
    ratios = [float(r) for r in rounds.groups()]
    assert ratios == sorted(ratios), out
    printed = re.search(r"ratio  bridge / SimpleSAMLphp, responses per server CPU-second: (\d+\.\d+)", out)
    assert printed is not None and float(printed.group(1)) == ratios[1], out


def test_a_negative_settle_is_refused_before_anything_starts() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "saml_sso.py"), "--settle", "-1"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "--settle: 0 or more seconds" in done.stderr, done.stderr
    assert "bridge" not in done.stdout, done.stdout
