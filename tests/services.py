"""Throwaway PostgreSQL and Redis servers that a test starts, stops and restarts itself (the fault tests), a
PgBouncer in front of such a PostgreSQL, and a network cut between such a server and its clients.

Each lives in a folder of its own on a free loopback port, with its own socket directory: nothing here can
touch the suite's PostgreSQL (IDP_TEST_DATABASE_URL) or Redis (IDP_TEST_REDIS_URL).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from helpers import free_port, freeze, wait_listening


@contextmanager
def cut_off(port: int) -> Iterator[None]:
    """For the block, the server on ``port`` (loopback) is gone as far as its clients can tell, as after a network
    partition or a failover that took its host away: every IPv4 packet it sends is dropped, so nothing it gets is
    acknowledged or answered (unlike a stopped server, whose kernel still acknowledges), and its clients' kernels
    retransmit and probe in silence. Only the server's side is dropped: a packet dropped on its sender's own way
    out fails to send, which TCP takes for local congestion and tries again, never counting a probe lost, as it
    would on a real network. The loopback's other traffic is untouched. Needs CAP_NET_ADMIN (root, as CI): tc
    sends the port's packets to an HTB class whose queue holds none."""
    def tc(*args: str) -> None:
        done = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=10)
        assert done.returncode == 0, f"tc {' '.join(args)}: {done.stderr.strip()}"

    # The loopback has no root qdisc of its own (noqueue); one here is a cut left by a run killed inside this
    # block, which would refuse the new one.
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, timeout=10)
    tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb")  # no default: unmatched packets go straight out
    try:
        tc("class", "add", "dev", "lo", "parent", "1:", "classid", "1:20", "htb", "rate", "1mbit")
        tc("qdisc", "add", "dev", "lo", "parent", "1:20", "handle", "20:", "pfifo", "limit", "0")
        tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
           "match", "ip", "sport", str(port), "0xffff", "flowid", "1:20")
        yield
    finally:
        # Not an assertion: it would hide the block's own failure.
        subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True, timeout=10)


class RedisServer:
    """redis-server as production must run it: persistence on (append-only file), so that a stop and a start
    keep the sessions it holds."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def running(self) -> bool:
        return self._proc is not None

    def start(self) -> None:
        with open(self.folder / "redis.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                 "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while True:
            try:
                with redis.Redis(port=self.port, socket_timeout=1) as client:
                    client.ping()
                return
            except redis.exceptions.ConnectionError:  # includes "loading the dataset in memory" (BusyLoading)
                assert self._proc.poll() is None, (self.folder / "redis.log").read_text(errors="replace")
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        """A clean shutdown (SHUTDOWN, as `redis-cli shutdown` sends): the append-only file is flushed first."""
        assert self._proc is not None
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown"], capture_output=True, timeout=15)
        self._proc.wait(15)
        self._proc = None

    def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing answers (a hung server)."""
        assert self._proc is not None
        freeze(self._proc.pid)

    def thaw(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None


class PostgresServer:
    """A PostgreSQL cluster made with initdb, run with pg_ctl as the postgres user (initdb refuses root), as
    tests/run makes CI's. Its folder is outside pytest's (root-only) temporary tree, so that user can use it."""

    def __init__(self) -> None:
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1])
        self.folder = Path(tempfile.mkdtemp(prefix="idp-faults-pg."))
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.running = False
        if os.getuid() == 0:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8", "-N")

    def _run(self, program: str, *args: str) -> None:
        runner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        done = subprocess.run([*runner, str(self.bin / program), *args], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, f"{program} {' '.join(args)}: {done.stdout}{done.stderr}"

    def _ctl(self, action: str, *args: str) -> None:
        # -l: without a log file the server would keep pg_ctl's output pipe open, and the call would not return.
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-w", *args, action)

    def start(self) -> None:
        self._ctl("start", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off "
                                 "-c synchronous_commit=off -c full_page_writes=off")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._ctl("stop", "-m", mode)
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        self._ctl("restart", "-m", mode)

    def freeze(self) -> None:
        """SIGSTOP the postmaster: connections are accepted by the kernel, none is ever answered (a hung
        server); the backends of connections opened before go on."""
        freeze(self._postmaster())

    def thaw(self) -> None:
        os.kill(self._postmaster(), signal.SIGCONT)

    def _postmaster(self) -> int:
        return int((self.folder / "data" / "postmaster.pid").read_text().split()[0])

    def remove(self) -> None:
        """Stop whatever runs (immediately) and delete the cluster."""
        runner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run([*runner, str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


class PgBouncer:
    """Debian's PgBouncer in front of ``server`` in transaction mode, one server connection shared by all clients:
    each transaction may run on a server connection that other clients' transactions used before, as behind a
    production pooler. Run as the postgres user (PgBouncer refuses root), with its files in the server's folder."""

    def __init__(self, server: PostgresServer) -> None:
        self.folder = server.folder
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        (self.folder / "pgbouncer.users").write_text('"postgres" ""\n')
        (self.folder / "pgbouncer.ini").write_text(f"""\
[databases]
postgres = host=127.0.0.1 port={server.port} dbname=postgres user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.folder / "pgbouncer.users"}
pool_mode = transaction
default_pool_size = 1
logfile = {self.folder / "pgbouncer.log"}
""")
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(["pgbouncer", str(self.folder / "pgbouncer.ini")],
                                      user="postgres" if os.getuid() == 0 else None,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_listening(self.port, self._proc, self.folder / "pgbouncer.log", "pgbouncer")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:  # it may wait for its clients to leave
                self._proc.kill()
                self._proc.wait()
