"""Login and logout (the home page is the portal's). They render; decisions live in signin.py and session.py."""

from __future__ import annotations

from collections.abc import Callable

from flask import Blueprint, Flask, current_app, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from idp.authn.forms import LoginForm, LogoutForm
from idp.authn.session import apply_cookie, current_principal, current_session, login_url, sign_out, start_session
from idp.authn.signin import Status, sign_in

bp = Blueprint("authn", __name__)
bp.after_app_request(apply_cookie)

GENERIC_FAILURE = "Incorrect username or password."
LOCKED_OUT = "Too many failed attempts. Try again later."
MISSING_INPUT = "Enter your username and password."
UNAVAILABLE = "The directory is unavailable right now, so your password cannot be checked. Try again in a few minutes."


# Views that finish a request parked for the sign-in (SAML's /saml/continue/<id>) and read nothing but their path
# and the session: the login POST answers them itself, so the browser gets the protocol's answer one round trip
# sooner, as from Keycloak's or SimpleSAMLphp's login form. Registered by the protocol: authn never imports it.
_ANSWER_INLINE = "idp.answer_after_sign_in"


def answer_after_sign_in(app: Flask, endpoint: str, view: Callable[..., BaseResponse]) -> None:
    app.extensions.setdefault(_ANSWER_INLINE, {})[endpoint] = view


def _go_on(next_path: str) -> BaseResponse:
    """Where a successful sign-in leads: a registered view's answer at once, else a redirect to ``next_path``."""
    inline: dict[str, Callable[..., BaseResponse]] = current_app.extensions.get(_ANSWER_INLINE, {})
    path, _, query = next_path.partition("?")
    root = request.script_root
    adapter = current_app.create_url_adapter(request)
    if inline and adapter is not None and not query and path.startswith(root + "/"):
        try:
            endpoint, args = adapter.match(path[len(root):], method="GET")
        except HTTPException:  # no such view (or only a redirect to one): the browser follows the redirect
            endpoint = ""
        if endpoint in inline:
            return inline[endpoint](**args)
    return redirect(next_path)


def safe_next(value: str | None) -> str:
    """Only a path on this site: anything a browser could read as another origin becomes "/"."""
    if not value or len(value) > 2048 or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    # Browsers drop tabs and newlines and treat "\" as "/", so "/\t/evil" or "/\\evil" would leave the site.
    if "\\" in value or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        return "/"
    return value


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    # Signing in with nowhere else to go lands on the portal: what the user may open.
    next_path = safe_next(request.args.get("next") or url_for("portal.index"))
    force = request.args.get("force") == "1"
    if request.method == "GET" and not force and current_session() is not None:
        return redirect(next_path)
    form = LoginForm()
    action = login_url(next_path, force)
    if request.method == "GET":
        principal = current_principal() if force else None
        if principal is not None:
            form.username.data = principal.username  # re-authentication: ask the same user again
        elif request.args.get("login_hint"):  # an OIDC client's hint; only prefills the field
            form.username.data = request.args.get("login_hint", "")[:255]
        return render_template("login.html", form=form, action=action)
    # CSRFProtect has already refused a POST without a valid token (400) before we get here.
    if not form.validate_on_submit():
        return render_template("login.html", form=form, action=action, error=MISSING_INPUT)
    # The browser's current session is loaded (and its own writes committed: a touch, an expiry) before the
    # sign-in writes anything: the tries it holds in advance (committed at once), then what a success settles
    # (committed apart), then its login event, which commits only with the new session (start_session).
    current_session()
    result = sign_in(form.username.data or "", form.password.data or "", request.remote_addr)
    if result.status is Status.LOCKED:
        return render_template("login.html", form=form, action=action, error=LOCKED_OUT), 429
    if result.status is Status.UNAVAILABLE:
        return render_template("login.html", form=form, action=action, error=UNAVAILABLE), 503
    if result.principal is None:
        return render_template("login.html", form=form, action=action, error=result.message or GENERIC_FAILURE)
    start_session(result.principal.user_id)
    _new_csrf_token()
    return _go_on(next_path)


def _new_csrf_token() -> None:
    """A form token known before the sign-in (a page read signed out, a cookie planted from a sibling host) is
    worth nothing after it: flask-wtf makes a new one for the next form."""
    name = current_app.config["WTF_CSRF_FIELD_NAME"]
    session.pop(name, None)
    g.pop(name, None)


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> BaseResponse | str:
    form = LogoutForm()
    sso = current_session()
    if request.method == "POST" and form.validate_on_submit():
        if sso is not None and (hop := sign_out(sso, "user signed out")) is not None:
            return hop
        return render_template("logout.html", signed_out=True)
    if sso is None:
        return render_template("logout.html", signed_out=True)
    return render_template("logout.html", signed_out=False, form=form, principal=current_principal())
