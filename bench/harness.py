"""What every benchmark shares: command-line options, the load generator, server CPU read from /proc,
latency statistics, the raw RSA reference and the printed figures.

The load generator is one OS process per client (no GIL between clients), each looping over one flow with a
keep-alive ``requests`` session. Server CPU is the user + system time of the server's whole process tree
(master, workers, and the children it reaped) between the start and the end of the measured window, read
from /proc: the clients' own CPU is reported apart and never counted as the server's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import html
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Protocol

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


# --- options -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Options:
    seconds: float
    warmup: float
    settle: float
    clients: int
    workers: int
    threads: int
    rounds: int
    short: bool
    log_level: str
    database_url: str | None
    redis_url: str | None


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10, help="measured seconds per server (default 10)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per client first (default 1)")
    p.add_argument("--settle", type=float,
                   help="unmeasured seconds of the same load on each server before its first round (default 5, "
                   "none with --short): node's JIT compiler is still warming up after a 1 s warm-up")
    p.add_argument("--clients", type=int, default=4,
                   help="concurrent client processes, the same for the bridge and its peer (default 4)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn workers of idp serve (default 2)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads per gunicorn worker (IDP_THREADS; default 1 here: the flows are CPU-bound)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure the bridge and its peer this many times in turn and judge by the median round "
                   "(default 1; the host's noise moves a single round's ratio by up to 0.1)")
    p.add_argument("--short", action="store_true",
                   help="a check that everything works: about a second per server, 2 clients; exits 1 on any error")
    p.add_argument("--log-level", default="INFO", help="the bridge's IDP_LOG_LEVEL (default INFO, its default)")
    p.add_argument("--database-url", help="run the bridge on this database (e.g. PostgreSQL) instead of SQLite; "
                   "it must be empty: the benchmark migrates it and adds its users and clients")
    p.add_argument("--redis-url", help="the bridge's IDP_REDIS_URL")
    return p


def options(args: argparse.Namespace) -> Options:
    if args.rounds < 1:
        raise SystemExit("--rounds: at least 1")
    if args.settle is not None and args.settle < 0:
        raise SystemExit("--settle: 0 or more seconds")
    if args.short:
        return Options(seconds=1.0, warmup=0.2, settle=args.settle or 0.0, clients=2, workers=args.workers,
                       threads=args.threads, rounds=args.rounds, short=True, log_level=args.log_level,
                       database_url=args.database_url, redis_url=args.redis_url)
    return Options(seconds=args.seconds, warmup=args.warmup, settle=5.0 if args.settle is None else args.settle,
                   clients=args.clients,
                   workers=args.workers, threads=args.threads, rounds=args.rounds, short=False,
                   log_level=args.log_level, database_url=args.database_url, redis_url=args.redis_url)


# --- processes and ports -------------------------------------------------------------------------------------

class SetupError(Exception):
    """A server or peer could not be set up; the message says which and what it said."""


def main(body: Callable[[], None]) -> None:
    """Run a benchmark command: a setup failure is one readable message and exit status 2."""
    try:
        body()
    except SetupError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


class PortTaken(SetupError):
    """Another process bound the free port we picked before our server did."""


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                holders = set(listener_pids(port))
                if not holders or holders & process_tree([proc.pid], _process_table()):
                    return
                raise PortTaken(f"port {port} was taken by another process ({sorted(holders)}) before {what} bound it")
        if proc.poll() is not None:
            raise SetupError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        if time.monotonic() > deadline:
            raise SetupError(f"{what} did not listen on port {port} within {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.05)


def start_server(what: str, log: Path, launch: Callable[[int], subprocess.Popen[bytes]]) -> tuple[
        subprocess.Popen[bytes], int]:
    """``launch(port)`` on a free loopback port until the server listens there; on another port when someone else
    took the one we picked first (other servers start on this machine too)."""
    attempts = 3
    while True:
        attempts -= 1
        port = free_port()
        proc = launch(port)
        try:
            wait_for_port(port, proc, log, what)
            return proc, port
        except PortTaken:
            stop(proc)
            if not attempts:
                raise
        except BaseException:
            stop(proc)
            raise


class Launched:
    """A server that is one process tree (started with :func:`start_server`) writing one log file."""

    proc: subprocess.Popen[bytes] | None = None
    log: Path

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def cpu_roots(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid]

    def logs(self) -> str:
        return tail(self.log)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run(cmd: Sequence[str], *, env: dict[str, str] | None = None, input: str | None = None,
        timeout: float = 120) -> str:
    """Run a setup command; its stdout, or an error that shows what it said."""
    done = subprocess.run(list(cmd), env=env, input=input, capture_output=True, text=True, timeout=timeout,
                          check=False)
    if done.returncode != 0:
        raise SetupError(f"{' '.join(cmd[:4])} ... failed ({done.returncode}):\n{done.stderr.strip()}\n"
                           f"{done.stdout.strip()}")
    return done.stdout


# --- server CPU ----------------------------------------------------------------------------------------------

def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, user+system clock ticks of the process and of the children it has reaped)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name, which may hold spaces: state ppid ... utime(14) stime cutime cstime(17)
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return table


def process_tree(roots: Sequence[int], table: dict[int, tuple[int, int]]) -> set[int]:
    """These processes and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    stack = [pid for pid in roots if pid in table]
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack.extend(children.get(pid, []))
    return seen


def tree_cpu_seconds(roots: Sequence[int]) -> float:
    """CPU seconds of these processes and all their descendants. A worker that exits counts through its parent's
    cutime/cstime, so a pool that recycles children is still measured whole."""
    table = _process_table()
    return sum(table[pid][1] for pid in process_tree(roots, table)) / os.sysconf("SC_CLK_TCK")


def listener_pids(port: int) -> list[int]:
    """Processes holding a listening TCP socket on this port (a server we started, a PostgreSQL or Redis the user
    runs), found through /proc/net/tcp* and the processes' file descriptors."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(cols[9])
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd.path) in wanted for fd in os.scandir(f"/proc/{entry.name}/fd")):
                pids.append(int(entry.name))
    return pids


# --- the load generator --------------------------------------------------------------------------------------

class FlowError(Exception):
    """The server answered something the flow does not expect."""


class Flow(Protocol):
    """One client's work against one server. Instances are copied into each client process (fork), so a flow
    may keep per-client state (a session cookie, the latest refresh token)."""

    def setup(self, http: requests.Session) -> None:
        """Per-client preparation, not measured (sign in once, get a first refresh token)."""

    def once(self, http: requests.Session) -> int:
        """One measured flow; returns how many HTTP requests it made. Raises FlowError or a requests error."""


def expect(resp: requests.Response, *statuses: int) -> requests.Response:
    if resp.status_code not in statuses:
        body = resp.text[:300].replace("\n", " ")
        raise FlowError(f"{resp.request.method} {resp.url.split('?')[0]} answered {resp.status_code}: {body}")
    return resp


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    cpu: float = 0.0

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.samples) < 3:
            self.samples.append(f"{type(exc).__name__}: {exc}")


def _client(flow: Flow, seconds: float, warmup: float, barrier: Barrier,
            results: multiprocessing.Queue[ClientResult]) -> None:
    http = requests.Session()
    result = ClientResult()
    ready = True
    try:
        flow.setup(http)
        until = time.monotonic() + warmup
        while time.monotonic() < until:
            flow.once(http)
    except Exception as exc:
        result.error(exc)
        ready = False
    barrier.wait()
    cpu0 = time.process_time()
    until = time.monotonic() + seconds
    while ready and time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            result.requests += flow.once(http)
        except Exception as exc:
            result.error(exc)
            # Start the client over (a refused refresh token ends its chain); a failing setup ends the client.
            try:
                flow.setup(http)
            except Exception as again:
                result.error(again)
                ready = False
            continue
        result.latencies.append(time.perf_counter() - t0)
    result.cpu = time.process_time() - cpu0
    results.put(result)


@dataclass
class Run:
    """One server's figures for one flow."""

    flows: int
    requests: int
    errors: int
    samples: list[str]
    wall: float
    cpu: float
    client_cpu: float
    latencies: list[float]

    @property
    def per_cpu(self) -> float:
        return self.flows / self.cpu if self.cpu > 0 else float("nan")

    def percentiles(self) -> tuple[float, float, float]:
        if len(self.latencies) < 2:
            return (float("nan"),) * 3
        q = statistics.quantiles(self.latencies, n=100, method="inclusive")
        return q[49], q[94], q[98]


def measure(flow: Flow, opts: Options, cpu_roots: Callable[[], list[int]]) -> Run:
    """Run ``opts.clients`` client processes over ``flow`` for ``opts.seconds`` after their setup and warm-up,
    and read the server's CPU (the trees of ``cpu_roots()``) over exactly that window."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(opts.clients + 1)
    results: multiprocessing.Queue[ClientResult] = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(flow, opts.seconds, opts.warmup, barrier, results), daemon=True)
             for _ in range(opts.clients)]
    for proc in procs:
        proc.start()
    try:
        barrier.wait(timeout=300)
        roots = cpu_roots()
        cpu0, t0 = tree_cpu_seconds(roots), time.monotonic()
        collected = [results.get(timeout=opts.seconds + 300) for _ in procs]
        wall, cpu = time.monotonic() - t0, tree_cpu_seconds(roots) - cpu0
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return Run(flows=sum(len(r.latencies) for r in collected), requests=sum(r.requests for r in collected),
               errors=sum(r.errors for r in collected), samples=[s for r in collected for s in r.samples],
               wall=wall, cpu=cpu, client_cpu=sum(r.cpu for r in collected),
               latencies=sorted(x for r in collected for x in r.latencies))


class Server(Protocol):
    """A server under load, ours or a peer."""

    def label(self) -> str: ...

    def describe(self) -> str:
        """Which processes its CPU figure counts."""

    def cpu_roots(self) -> list[int]: ...

    def logs(self) -> str:
        """The end of its logs, shown when a run had errors."""


# --- references ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SigningKey:
    """One RSA-2048 key and self-signed certificate that the bridge and its peer both sign with."""

    key_file: Path
    cert_file: Path

    @property
    def key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.key_file.read_bytes(), None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key


def make_signing_key(directory: Path) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "benchmark IdP")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=30)).sign(key, hashes.SHA256()))
    signing = SigningKey(directory / "signing.key", directory / "signing.crt")
    signing.key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    signing.key_file.chmod(0o600)
    signing.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return signing


def raw_rsa_rate(key: rsa.RSAPrivateKey, seconds: float) -> float:
    """RSA PKCS#1 v1.5 SHA-256 signatures per CPU-second of this process with a parsed key (the floor of any
    signing), counted in CPU time like the servers' figures, so that other load on the machine does not lower it."""
    data = os.urandom(256)
    count, cpu0, until = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < until:
        key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        count += 1
    return count / (time.process_time() - cpu0)


# --- printing ------------------------------------------------------------------------------------------------

@dataclass
class Report:
    """Collects the runs of one command and decides its exit status."""

    failures: list[str] = field(default_factory=list)

    def title(self, text: str, opts: Options) -> None:
        mode = " (short mode: checks that it works; figures not meaningful)" if opts.short else ""
        print(f"\n== {text}: {opts.clients} concurrent clients, {opts.seconds:g} s measured per server{mode}")
        # Other work on the machine slows every figure but the per-CPU-second ones much less: say how busy it was.
        print(f"  machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} before this benchmark",
              flush=True)

    def run(self, label: str, run: Run, unit: str, server: str) -> None:
        p50, p95, p99 = run.percentiles()
        print(f"  {label}")
        print(f"    completed              {run.flows} {unit} in {run.requests} HTTP requests ({run.errors} errors)")
        print(f"    throughput             {run.flows / run.wall:.1f} {unit}/s, {run.requests / run.wall:.1f} "
              "requests/s")
        print(f"    latency p50/p95/p99    {p50 * 1000:.1f} / {p95 * 1000:.1f} / {p99 * 1000:.1f} ms per flow")
        print(f"    server CPU             {run.cpu:.2f} s ({server})")
        print(f"    per server CPU-second  {run.per_cpu:.1f} {unit}")
        print(f"    load generator CPU     {run.client_cpu:.2f} s (not counted above)", flush=True)
        for sample in run.samples:
            print(f"    error: {sample}", file=sys.stderr)
        if run.errors:
            self.failures.append(f"{label}: {run.errors} errors")
        if run.flows == 0:
            self.failures.append(f"{label}: no flow completed")

    def measure(self, server: Server, flow: Flow, opts: Options, unit: str) -> Run:
        result = measure(flow, opts, server.cpu_roots)
        self.run(server.label(), result, unit, server.describe())
        if result.errors:
            print(f"    end of its logs:\n{server.logs()}", file=sys.stderr)
        return result

    def pair(self, ours: tuple[Server, Flow], theirs: tuple[Server, Flow], opts: Options,
             unit: str) -> tuple[Run, Run]:
        """The bridge and its peer measured back to back, ``opts.rounds`` times in turn; the round whose ratio
        is the median is the one returned (the ratios printed after are that round's). Each server first runs
        the flow unmeasured for ``opts.settle`` seconds: measured cold, node's oidc-provider did 520 code flows
        per CPU-second in its first round and 650 - 760 in the next four, which favoured the bridge."""
        if opts.settle > 0:
            for server, flow in (ours, theirs):
                measure(flow, replace(opts, seconds=opts.settle, warmup=0), server.cpu_roots)
            self.note(f"each server ran the flow unmeasured for {opts.settle:g} s first")
        rounds = [(self.measure(*ours, opts, unit), self.measure(*theirs, opts, unit)) for _ in range(opts.rounds)]
        rounds.sort(key=lambda pair: pair[0].per_cpu / pair[1].per_cpu)
        if len(rounds) > 1:
            ratios = ", ".join(f"{a.per_cpu / b.per_cpu:.3f}" for a, b in rounds)
            self.note(f"{len(rounds)} rounds, bridge / peer per server CPU-second: {ratios}; the median round counts")
        return rounds[len(rounds) // 2]

    def ratio(self, text: str, value: float, target: str = "") -> None:
        print(f"  ratio  {text}: {value:.3f}{f'  (target {target})' if target else ''}", flush=True)

    def note(self, text: str) -> None:
        print(f"  {text}", flush=True)

    def rsa_reference(self, key: SigningKey, per_cpu: float, signatures: int, seconds: float) -> None:
        """The bridge's throughput per CPU-second against what raw signing alone would allow."""
        rate = raw_rsa_rate(key.key, seconds)
        self.note(f"reference: raw RSA-2048 SHA-256 signatures with the same key: {rate:.0f} per CPU-second")
        if signatures:
            self.ratio(f"bridge per CPU-s / (raw signatures per CPU-s / {signatures} per flow)",
                       per_cpu / (rate / signatures))
        else:
            self.ratio("bridge per CPU-s / raw signatures per CPU-s (this flow signs nothing)", per_cpu / rate)

    def exit(self) -> None:
        if self.failures:
            print("\nFAILED: " + "; ".join(self.failures), file=sys.stderr)
            raise SystemExit(1)


@dataclass(frozen=True)
class Form:
    action: str
    fields: dict[str, str]


def form(page: str, having: str) -> Form:
    """The first form of a page with an input named ``having`` (a SAML POST form, a login form): its action and
    its inputs' values."""
    for found in re.finditer(r"<form\b([^>]*)>(.*?)</form>", page, re.S | re.I):
        fields: dict[str, str] = {}
        for tag in re.findall(r"<input\b[^>]*>", found.group(2), re.I):
            name, value = re.search(r'\bname="([^"]*)"', tag), re.search(r'\bvalue="([^"]*)"', tag)
            if name:
                fields[html.unescape(name.group(1))] = html.unescape(value.group(1)) if value else ""
        if having in fields:
            action = re.search(r'\baction="([^"]*)"', found.group(1))
            return Form(html.unescape(action.group(1)) if action else "", fields)
    # A page that refuses says why in an alert (the login page's error): that line, not the page's head.
    alert = re.search(r'role="alert"[^>]*>(.*?)<', page, re.S)
    said = html.unescape(alert.group(1)).strip() if alert else page[:300]
    raise FlowError(f"no form with {having!r} in the page: {said!r}")
