"""/admin/clients: OpenID Connect clients. Register one (its secret shown once, on the answer to the POST),
edit what :func:`idp.oidc.clients.update` changes, rotate its secret, open it to everyone or assign it to
users and groups, delete it. Every change goes through :mod:`idp.oidc.clients` and :mod:`idp.access.assignments`,
whose refusals are shown on the form."""

from __future__ import annotations

import dataclasses
from functools import partial

from flask import flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import func, or_, select
from wtforms import BooleanField, RadioField, SelectField, StringField, TextAreaField, URLField
from wtforms.validators import URL, DataRequired, InputRequired, Length, Optional

from idp import clock
from idp.admin.ui import admin_actor, app_access, bp
from idp.admin.ui.forms import (
    UNPROCESSABLE,
    ConfirmForm,
    MultiCheckboxField,
    Page,
    choices,
    confirm_step,
    lines,
    refused,
    show_error,
)
from idp.admin.ui.refusals import place
from idp.errors import IdpError
from idp.extensions import db
from idp.oidc import clients
from idp.store import AppAssignment, OidcClient

_GRANT_LABELS = {
    "authorization_code": "Authorization code (sign-in in a browser)",
    "refresh_token": "Refresh token",
    "client_credentials": "Client credentials (a machine, no user)",
    "urn:ietf:params:oauth:grant-type:device_code": "Device code (TVs, command lines)",
}
_DEFAULT_GRANTS = ["authorization_code", "refresh_token"]


class _ClientFields(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired("The app needs a name."), Length(max=255)])
    redirect_uris = TextAreaField("Redirect URIs", validators=[Length(max=64 * 1024)], render_kw={"rows": 3},
                                  description="One per line: where the app receives the sign-in's answer.")
    grant_types = MultiCheckboxField("Grant types", choices=choices((g, _GRANT_LABELS[g]) for g in clients.GRANT_TYPES),
                                     default=_DEFAULT_GRANTS)
    scopes = MultiCheckboxField("Scopes it may ask for", choices=choices((s, s) for s in clients.SCOPES),
                                default=list(clients.SCOPES))
    login_url = URLField("Login URL (optional)", validators=[
        Optional(), URL(require_tld=False, message="An https:// address."), Length(max=2048)],
        description="Where the portal sends a user to start signing in to the app.")
    access_token_format = SelectField(
        "Access tokens", choices=choices([("opaque", "Opaque (checked by introspection)"),
                                          ("jwt", "JWT (RFC 9068, signed RS256; audience: the client ID)")]),
        default="opaque", description="A JWT lets the app's API check tokens offline against the JWKS.")
    require_pkce = BooleanField("Require PKCE", description="A public app always uses it; a confidential one too "
                                "when ticked (RFC 9700 advises it for every app).")


class RegisterForm(_ClientFields):
    kind = RadioField("Type", choices=choices([("confidential", "Confidential: a server that can keep a secret"),
                                               ("public", "Public: a browser or mobile app, no secret (PKCE)")]),
                      default="confidential", validators=[InputRequired()])
    open_to_all = BooleanField("Open to every signed-in user",
                               description="Otherwise only the users and groups you assign it to.")


class EditForm(_ClientFields):
    post_logout_redirect_uris = TextAreaField(
        "Post-logout redirect URIs", validators=[Length(max=64 * 1024)], render_kw={"rows": 2},
        description="One per line: where the app may send users after signing out.")
    id_token_alg = SelectField("ID token signature", choices=choices((a, a) for a in clients.ID_TOKEN_ALGS))
    first_party = BooleanField("First-party app: no consent page",
                               description="Only for apps of your own organisation.")


class RotateForm(ConfirmForm):
    pass


# --- listing and registering ------------------------------------------------------------------------------


@bp.get("/clients", endpoint="clients")
def client_list() -> str:
    now = clock.now()
    counts = {app: n for app, n in db.session.execute(
        select(AppAssignment.client_id, func.count()).where(
            AppAssignment.client_id.is_not(None), or_(AppAssignment.until.is_(None), AppAssignment.until > now))
        .group_by(AppAssignment.client_id))}
    return render_template("admin/clients.html", clients=clients.all_clients(), counts=counts)


@bp.route("/clients/new", methods=["GET", "POST"])
def client_new() -> Page:
    form = RegisterForm()
    if form.validate_on_submit():
        options = clients.ClientOptions(
            name=form.name.data, redirect_uris=lines(form.redirect_uris.data), public=form.kind.data == "public",
            grant_types=tuple(form.grant_types.data), scopes=tuple(form.scopes.data),
            login_url=form.login_url.data or None, open_to_all=bool(form.open_to_all.data),
            access_token_format=form.access_token_format.data, require_pkce=bool(form.require_pkce.data))
        try:
            registered = clients.add(options, admin_actor())
        except IdpError as exc:
            db.session.rollback()
            place(form, exc)
        else:
            db.session.commit()
            # Not a redirect: the secret exists in clear only in this answer (never in a flash cookie).
            return render_template("admin/clients_secret.html", client=clients.get_or_404(registered.client_id),
                                   registered=registered, new=True)
    if request.method == "POST":
        return refused("admin/clients_new.html", form=form)
    return render_template("admin/clients_new.html", form=form)


# --- one client -------------------------------------------------------------------------------------------


def _edit_form(client: OidcClient) -> EditForm:
    return EditForm(formdata=None, data={
        "name": client.name, "redirect_uris": "\n".join(client.redirect_uris),
        "post_logout_redirect_uris": "\n".join(client.post_logout_redirect_uris),
        "grant_types": list(client.grant_types), "scopes": list(client.scopes), "login_url": client.login_url,
        "id_token_alg": client.id_token_alg, "first_party": client.first_party,
        "access_token_format": client.access_token_format, "require_pkce": client.require_pkce})


def _client_page(client: OidcClient, *, form: EditForm | None = None, open_form: FlaskForm | None = None,
                 assign_form: FlaskForm | None = None, rotate_form: FlaskForm | None = None,
                 status: int = 200) -> tuple[str, int]:
    rotate = rotate_form or RotateForm(prefix="rotate", formdata=None)
    rotate.confirm.label.text = "Yes: the current secret stops working at once"
    blank_open, blank_assign = app_access.forms_for(client)
    page = render_template(
        "admin/clients_edit.html", client=client, form=form or _edit_form(client),
        open_form=open_form or blank_open, assign_form=assign_form or blank_assign,
        rotate_form=rotate, holders=app_access.holders(client), is_ended=app_access.is_ended,
        uses_secret=client.auth_method in ("client_secret_basic", "client_secret_post"))
    return page, status


@bp.route("/clients/<client_id>", methods=["GET", "POST"])
def client(client_id: str) -> Page:
    row = clients.get_or_404(client_id)
    if request.method == "GET":
        return _client_page(row)
    form = EditForm()
    if not form.validate_on_submit():
        return _client_page(row, form=form, status=UNPROCESSABLE)
    options = dataclasses.replace(
        clients.options_of(row), name=form.name.data, redirect_uris=lines(form.redirect_uris.data),
        post_logout_redirect_uris=lines(form.post_logout_redirect_uris.data),
        grant_types=tuple(form.grant_types.data), scopes=tuple(form.scopes.data),
        login_url=form.login_url.data or None, id_token_alg=form.id_token_alg.data,
        first_party=bool(form.first_party.data), access_token_format=form.access_token_format.data,
        require_pkce=bool(form.require_pkce.data))
    try:
        changed = clients.update(client_id, options, admin_actor())
    except IdpError as exc:
        db.session.rollback()
        place(form, exc)
        return _client_page(row, form=form, status=UNPROCESSABLE)
    db.session.commit()
    flash(f"Saved {row.name}: changed {', '.join(k.replace('_', ' ') for k in changed)}." if changed
          else "Nothing changed.", "success")
    return redirect(url_for("admin.client", client_id=client_id), 303)


@bp.post("/clients/<client_id>/secret")
def client_secret(client_id: str) -> Page:
    row = clients.get_or_404(client_id)
    form = RotateForm(prefix="rotate")
    if form.validate_on_submit():
        try:
            registered = clients.rotate_secret(client_id, admin_actor())
        except IdpError as exc:
            db.session.rollback()
            show_error(form, exc)
        else:
            db.session.commit()
            return render_template("admin/clients_secret.html", client=row, registered=registered, new=False)
    return _client_page(row, rotate_form=form, status=UNPROCESSABLE)


def _app(client_id: str) -> app_access.App:
    row = clients.get_or_404(client_id)
    return app_access.App(row, url_for("admin.client", client_id=row.client_id), partial(_client_page, row))


@bp.post("/clients/<client_id>/access")
def client_open(client_id: str) -> Page:
    return app_access.open_view(_app(client_id))


@bp.post("/clients/<client_id>/assign")
def client_assign(client_id: str) -> Page:
    return app_access.assign_view(_app(client_id))


@bp.route("/clients/<client_id>/unassign", methods=["GET", "POST"])
def client_unassign(client_id: str) -> Page:
    return app_access.unassign_view(_app(client_id))


@bp.route("/clients/<client_id>/assignments/<int:assignment_id>", methods=["GET", "POST"])
def client_until(client_id: str, assignment_id: int) -> Page:
    return app_access.until_view(_app(client_id), assignment_id)


@bp.route("/clients/<client_id>/delete", methods=["GET", "POST"])
def client_delete(client_id: str) -> Page:
    row = clients.get_or_404(client_id)
    form = ConfirmForm()
    form.confirm.label.text = f"Yes, delete {row.name} ({row.client_id})"

    def act() -> str:
        clients.remove(client_id, admin_actor())
        return f"Deleted {row.name}."

    return confirm_step(
        form, title=f"Delete {row.name}", back=url_for("admin.client", client_id=client_id), act=act,
        done=url_for("admin.clients"),
        warning="Its tokens are revoked at once, and its users' consents and pending codes are deleted.")
