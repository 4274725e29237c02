"""Test helpers for the sign-in pages and the directory: sign in the way a browser does, make users.

Import as ``from helpers import login, make_user`` (pytest puts tests/ on sys.path through conftest.py).
"""

from __future__ import annotations

import html
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import requests
from flask import Flask, g, has_app_context
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from werkzeug.test import TestResponse

from idp import create_app
from idp.authn import directory
from idp.config import Settings
from idp.database import MIGRATIONS
from idp.extensions import db
from idp.state import sessions
from idp.store import User

IDP = str(Path(sys.executable).with_name("idp"))
R = TypeVar("R")
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
_ACTION = re.compile(r'<form[^>]*action="([^"]*)"')


def csrf_token(page: str) -> str:
    match = _CSRF.search(page)
    assert match, "no CSRF token in the page"
    return match.group(1)


def form_action(page: str) -> str:
    match = _ACTION.search(page)
    assert match, "no form in the page"
    return html.unescape(match.group(1))


def login(
    client: FlaskClient, username: str, password: str, next: str | None = None, *, force: bool = False,
    **request_kwargs: Any,
) -> TestResponse:
    """Fetch the login form (``/login?next=...&force=1``), read its CSRF token and post the credentials to the
    form's action. ``request_kwargs`` (e.g. ``environ_base={"REMOTE_ADDR": ...}``, ``base_url=...``) go to
    both requests. Returns the POST's response without following it: on success a 302 to ``next``, or the answer
itself when ``next`` is a parked SAML request (/saml/continue/<id>)."""
    query: dict[str, str] = {}
    if next is not None:
        query["next"] = next
    if force:
        query["force"] = "1"
    # The `app` fixture keeps one app context for the whole test, so Flask-WTF's per-request cache of the
    # CSRF token in `g` would leak from one test client (browser) to the next.
    if has_app_context():
        g.pop("csrf_token", None)
    page = client.get("/login", query_string=query, **request_kwargs)
    assert page.status_code == 200, page.status_code
    text = page.get_data(as_text=True)
    # A browser sends the page's address as Referer (same-origin policy); Flask-WTF requires it on https.
    headers = {"Referer": page.request.url}
    return client.post(
        form_action(text),
        data={"csrf_token": csrf_token(text), "username": username, "password": password},
        headers=headers, **request_kwargs,
    )


def login_http(
    session: requests.Session, base_url: str, username: str, password: str, next: str | None = None,
    *, force: bool = False,
) -> requests.Response:
    """The same over real HTTP (live_server): GET the form, POST it; redirects are not followed."""
    params: dict[str, str] = {}
    if next is not None:
        params["next"] = next
    if force:
        params["force"] = "1"
    page = session.get(f"{base_url}/login", params=params, allow_redirects=False, timeout=10)
    assert page.status_code == 200, page.status_code
    return session.post(
        base_url + form_action(page.text),
        data={"csrf_token": csrf_token(page.text), "username": username, "password": password},
        headers={"Referer": page.url}, allow_redirects=False, timeout=10,
    )


DEFAULT_PASSWORD = "correct horse battery"
# The session lifetimes of the ``short_app`` fixture (tests/conftest.py): idle 10 minutes, absolute 40.
SHORT_IDLE, SHORT_MAX = 600, 2400


def make_user(
    username: str, password: str | None = DEFAULT_PASSWORD, groups: Iterable[str] = (), **profile: str | None,
) -> User:
    """A directory user (needs an app context); missing groups are created."""
    groups = list(groups)
    for name in groups:
        if directory.get_group(name) is None:
            directory.create_group(name, actor="test")
    return directory.create_user(username, password=password, actor="test", groups=groups, **profile)


def migrate(settings: Settings, users: Iterable[str] = ()) -> None:
    """Bring the database of ``settings`` to the latest schema and add these users (DEFAULT_PASSWORD), from an
    app of its own whose connections are closed after (a server a test starts itself)."""
    app = create_app(settings)
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        for username in users:
            make_user(username)
        db.session.commit()
        db.engine.dispose()


def signed_in(client: FlaskClient) -> bool:
    """Whether ``client``'s session lets it see the home page (else it is sent to sign in)."""
    resp = client.get("/")
    if resp.status_code == 302:
        assert resp.headers["Location"].startswith("/login")
        return False
    assert resp.status_code == 200
    return True


def session_counts(usernames: Iterable[str]) -> dict[str, int]:
    """How many SSO sessions each user has, as the state layer (database or Redis) stores them now."""
    # No transaction is kept open around the count: it would show an old snapshot of the database, and its
    # connection could be one that a database restart has cut since.
    db.session.close()
    counts: dict[str, int] = {}
    for name in usernames:
        user = directory.get_user(name)
        assert user is not None, name
        counts[name] = len(sessions.user_session_ids(user.id))
    db.session.close()
    return counts


def committed_elsewhere(app: Flask, work: Callable[[], object]) -> None:
    """``work`` done and committed by someone else, before this returns: in another thread, with its own app
    context, request state, session and connection (a concurrent request, another instance)."""
    def run() -> None:
        with app.app_context():
            work()
            db.session.commit()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


@contextmanager
def sql_statements() -> Iterator[list[str]]:
    """The SQL statements the app's engine runs inside the block, whitespace collapsed (needs an app context)."""
    seen: list[str] = []

    def _record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", _record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", _record)


def _connection_lost(statement: str) -> Exception:
    return OperationalError(statement, {}, Exception("server closed the connection unexpectedly"))


@contextmanager
def statement_fails(prefix: str, *, given: str | None = None, nth: int | None = None,
                    error: Callable[[str], Exception] = _connection_lost) -> Iterator[list[str]]:
    """Inside the block the statements starting with ``prefix`` (with ``given`` among their parameters, when
    given) raise ``error(statement)``, by default a lost database: every one, or the ``nth`` only (needs an app
    context). The failover a request may meet midway. Yields the statements it failed."""
    seen: list[int] = []
    failed: list[str] = []

    def fail(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.startswith(prefix) and (given is None or given in str(parameters)):
            seen.append(1)
            if nth is None or len(seen) == nth:
                failed.append(statement)
                raise error(statement)

    event.listen(db.engine, "before_cursor_execute", fail)
    try:
        yield failed
    finally:
        event.remove(db.engine, "before_cursor_execute", fail)


def audit_insert_lost(event_type: str | None = None, *, nth: int | None = None
                      ) -> AbstractContextManager[list[str]]:
    """The database lost as an audit event (of ``event_type``, when given) is written: :func:`statement_fails`."""
    return statement_fails("INSERT INTO audit_events", given=event_type, nth=nth)


_HANDED_OUT: set[int] = set()
_HANDING_OUT = threading.Lock()


def free_port() -> int:
    """A loopback port nothing listens on now, and none handed out before in this run: a port is taken only when
    the server asked for it starts, and the kernel may offer the one just released again (two instances and
    their load balancer once got the same one, and the balancer never started)."""
    with _HANDING_OUT:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


class Aside(Generic[R]):
    """A request (``send``) run in a thread of its own, so that one that hangs fails the test instead of holding
    it: it is left to finish on its own."""

    def __init__(self, send: Callable[[], R]) -> None:
        self._answers: list[R] = []
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(send,), daemon=True)
        self._thread.start()

    def _run(self, send: Callable[[], R]) -> None:
        try:
            self._answers.append(send())
        except BaseException as exc:  # reported by answer(), in the test's thread
            self._errors.append(exc)

    def pending(self) -> bool:
        return self._thread.is_alive()

    def answer(self, within: float) -> R:
        started = time.monotonic()
        self._thread.join(within)
        assert not self._thread.is_alive(), f"no answer {time.monotonic() - started:.1f} s on: the request hangs"
        assert not self._errors, self._errors
        return self._answers[0]


def freeze(pid: int) -> None:
    """SIGSTOP ``pid``, back once every thread of it is stopped (a hung server: the kernel accepts connections,
    nothing answers). kill() only queues the signal and wakes one thread: on a busy machine another thread of a
    multi-threaded server answered a request sent just after it (slapd, seen in CI)."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 10
    while not all(_state(t) in ("T", "t") for t in Path(f"/proc/{pid}/task").iterdir()):
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.005)


def _state(task: Path) -> str:
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0]  # the name before it may hold anything
    except FileNotFoundError:  # the thread has ended
        return "T"


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, name: str, seconds: float = 15) -> None:
    """Until something listens on ``port`` (loopback); fails with ``name``'s log if ``proc`` exits first or
    ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            output = log.read_text(errors="replace") if log.exists() else "(no log)"
            what = f"exited ({proc.returncode})" if proc.returncode is not None else f"did not listen on {port}"
            raise AssertionError(f"{name} {what}:\n{output}")
        time.sleep(0.05)


@dataclass
class Served:
    url: str
    log: Path
    pid: int  # the idp process: gunicorn's master for `idp serve`

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def idp_process(args: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[Served]:
    """Run the real ``idp`` console script (a server) until it answers on ``port``; stop it afterwards.

    Output goes to a file, not a pipe: a pipe nobody reads fills up and stalls the server.
    """
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out, subprocess.Popen([IDP, *args], env=env, stdout=out, stderr=subprocess.STDOUT) as proc:
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    requests.get(url + "/login", timeout=2)
                    break
                except requests.ConnectionError:
                    assert proc.poll() is None, log.read_text(errors="replace")
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.2)
            yield Served(url, log, proc.pid)
        finally:
            proc.terminate()
            proc.wait(15)
