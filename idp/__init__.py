"""The identity bridge: a SAML 2.0 IdP and OpenID Connect provider over the built-in directory, LDAP and AD."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from flask import Flask, Response
from werkzeug.middleware.proxy_fix import ProxyFix

from idp import state
from idp.config import Settings
from idp.cookie_session import LazyCookieSessions
from idp.database import MIGRATIONS, engine_options, upgrade_embedded
from idp.errors import register_error_handlers
from idp.extensions import csrf, db, migrate
from idp.keys import EC, KeyError_, KeyStore, data_dir_lock, write_private
from idp.logs import configure_logging, init_request_ids
from idp.ops import init_ops

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    from_env = settings is None
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    for stray in settings.stray_variables() if from_env else ():
        log.warning("%s", stray)
    if settings.weak_secret_key:
        log.warning("IDP_SECRET_KEY is shorter than 32 characters: a short key can be guessed offline from any "
                    "CSRF token. Set a long one (`openssl rand -hex 32`); directories added with `idp directory "
                    "add` then need their bind password set again, as the key encrypts it.")
    app = Flask(__name__)
    app.session_interface = LazyCookieSessions()
    app.extensions["idp.settings"] = settings
    _configure(app, settings)
    db.init_app(app)
    state.init_app(app, settings)
    migrate.init_app(app, db, directory=MIGRATIONS)
    init_request_ids(app, trust_forwarded=settings.trusted_proxy_hops > 0)
    init_ops(app)
    # After the request ID and the latency timer (hooks run in order): a form refused for its CSRF token is
    # named and timed like any other answer.
    csrf.init_app(app)
    register_error_handlers(app)
    _security_headers(app)
    keys = KeyStore(settings)
    keys.ensure()
    app.extensions["idp.keys"] = keys
    # ES256 ID tokens: a second ring, generated and rotated like the RSA one.
    ec_keys = KeyStore(settings, kind=EC)
    ec_keys.ensure()
    app.extensions["idp.keys.ec"] = ec_keys
    upgrade_embedded(app, settings)
    _register_blueprints(app)
    _trust_proxies(app, settings)
    return app


def _configure(app: Flask, settings: Settings) -> None:
    app.config.update(
        SECRET_KEY=settings.secret_key or _generated_secret(settings.data_dir),
        SQLALCHEMY_DATABASE_URI=settings.effective_database_url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(settings),
        # Flask's own cookie carries only the CSRF token; the SSO session is server-side.
        SESSION_COOKIE_NAME=settings.cookie_name("idp_csrf"),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.https,
        # A posted message is base64 of the XML (4/3 larger) plus the other form fields.
        MAX_CONTENT_LENGTH=settings.saml_max_message_bytes * 4 // 3 + 16 * 1024,
        WTF_CSRF_TIME_LIMIT=settings.session_max_seconds,
        PREFERRED_URL_SCHEME="https" if settings.https else "http",
    )


def _trust_proxies(app: Flask, settings: Settings) -> None:
    """With N trusted hops, the client's address (and scheme, host) is what the Nth proxy from us saw: the
    Nth X-Forwarded-For entry from the right, which that proxy appended. Entries left of it are the client's
    to choose, so they never reach the login throttle; with 0 hops the headers are ignored altogether."""
    n = settings.trusted_proxy_hops
    if n:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]


def _generated_secret(data_dir: Path) -> str:
    path = data_dir / "secret_key"
    with data_dir_lock(data_dir):
        try:
            found = path.read_text().strip() if path.exists() else ""
            if not found:  # none yet (an empty one is what a crash mid-write left before writes were atomic)
                found = secrets.token_hex(32)
                write_private(path, found.encode())
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyError_(f"IDP_DATA_DIR: cannot use {path} ({getattr(exc, 'strerror', None) or exc})") from exc
    return found


def _security_headers(app: Flask) -> None:
    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        # same-origin, not no-referrer: Flask-WTF's CSRF check on https requires a same-origin Referer.
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        # Auto-posting SAML forms need one inline script; they set their own policy with a nonce.
        resp.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action *"
        )
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp


def _register_blueprints(app: Flask) -> None:
    from idp.admin.api import init_api
    from idp.admin.ui import bp as admin_bp
    from idp.authn.views import bp as authn_bp
    from idp.oidc.views import bp as oidc_bp
    from idp.portal import bp as portal_bp
    from idp.saml.views import bp as saml_bp

    app.register_blueprint(authn_bp)
    app.register_blueprint(saml_bp)
    app.register_blueprint(oidc_bp)
    app.register_blueprint(portal_bp)
    app.register_blueprint(admin_bp)
    init_api(app)
