"""Flask's signed-cookie session, decoded only when something reads it.

It carries the CSRF token and the admin pages' flashed messages (the SSO session is server-side), so only pages
with a form, the POSTs they send and the admin pages need it. Flask decodes it when every request starts:
verifying the signature and reading the JSON were 2-3% of a SAML answer's CPU, for a cookie the answer never
looks at.

What this gives up: a session nobody reads is not saved, so a *permanent* session would not be refreshed by
requests that leave it unread (SESSION_REFRESH_EACH_REQUEST); the bridge never makes it permanent. The stand-in
is a mapping with the session's attributes, not a SessionMixin: Flask and flask-wtf use nothing more, but it
cannot be copied, JSON-encoded or type-checked as the session itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from flask import Flask, Request, Response
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin


class _LazySession(MutableMapping[str, Any]):
    """The request's session, read from its cookie at the first key or attribute anybody asks for."""

    def __init__(self, load: Callable[[], SecureCookieSession]) -> None:
        object.__setattr__(self, "_load", load)
        object.__setattr__(self, "_real", None)

    @property
    def loaded(self) -> bool:
        return self._real is not None

    def session(self) -> SecureCookieSession:
        real: SecureCookieSession | None = self._real
        if real is None:
            real = self._load()
            object.__setattr__(self, "_real", real)
        return real

    def __getitem__(self, key: str) -> Any:
        return self.session()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.session()[key] = value

    def __delitem__(self, key: str) -> None:
        del self.session()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.session()

    def __iter__(self) -> Iterator[str]:
        return iter(self.session())

    def __len__(self) -> int:
        return len(self.session())

    def __getattr__(self, name: str) -> Any:  # permanent, modified, accessed, new
        if name.startswith("_"):  # copy and pickle probe these on an instance __init__ never ran on
            raise AttributeError(name)
        return getattr(self.session(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.session(), name, value)


class LazyCookieSessions(SecureCookieSessionInterface):
    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not app.secret_key:
            return None  # Flask's null session, as before

        def load() -> SecureCookieSession:
            session = SecureCookieSessionInterface.open_session(self, app, request)
            assert session is not None
            return session

        # Duck-typed for Flask and flask-wtf, which only use it as a mapping with Flask's session attributes.
        return _LazySession(load)  # type: ignore[return-value]

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        if isinstance(session, _LazySession):
            if not session.loaded:
                return  # never read, so never changed: the cookie stays as the browser has it
            session = session.session()
        super().save_session(app, session, response)
