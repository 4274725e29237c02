"""Who may use an application, as its admin page shows and changes it: open to every signed-in user or to
those it is assigned to (users and groups, each until an optional end, which can be changed). The views behind
the access forms of both the SAML app and the OIDC client pages (each page module routes to them with its
:class:`App`); the changes go through :mod:`idp.access.assignments` like the CLI's and the API's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from flask import flash, redirect
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from idp import clock
from idp.access import assignments
from idp.admin.ui import admin_actor
from idp.admin.ui.forms import (
    UNPROCESSABLE,
    ConfirmForm,
    Page,
    choices,
    confirm_step,
    ending,
    show_error,
    subject,
    until_step,
)
from idp.errors import BadRequest, IdpError, NotFound
from idp.extensions import db
from idp.store import AppAssignment, OidcClient, ServiceProvider, User


class OpenForm(FlaskForm):  # type: ignore[misc]
    open_to_all = BooleanField("Open to every signed-in user",
                               description="Otherwise only the users and groups it is assigned to may use it.")


class AssignForm(FlaskForm):  # type: ignore[misc]
    kind = SelectField("Assign to", choices=choices([("group", "Group"), ("user", "User")]), default="group")
    name = StringField("Group or user name", validators=[DataRequired("Name a group or a user."), Length(max=255)],
                       description="A directory group can be assigned before anyone of it has signed in.")
    until = StringField("Until (optional)", validators=[Optional(), Length(max=64)],
                        description="A date (2027-03-31: through that day, UTC) or an ISO time; empty: no end.")


class UnassignForm(ConfirmForm):
    principal = HiddenField(validators=[DataRequired()])


def forms_for(row: ServiceProvider | OidcClient) -> tuple[OpenForm, AssignForm]:
    """The page's two access forms as they start: the app's switch, an empty assignment."""
    return (OpenForm(prefix="access", formdata=None, data={"open_to_all": row.open_to_all}),
            AssignForm(prefix="assign", formdata=None))


@dataclass(frozen=True)
class Holder:
    """One app assignment as the page lists it."""

    id: int  # the row, as update_app_assignment takes it
    principal: str  # what assign_app/unassign_app take: "group:NAME" or "user:NAME"
    label: str  # "group NAME"
    until: datetime | None
    created_by: str


def holders(row: ServiceProvider | OidcClient) -> list[Holder]:
    """The app's assignments, groups first, ended ones included (the page marks them)."""
    column = AppAssignment.sp_id if isinstance(row, ServiceProvider) else AppAssignment.client_id
    found = db.session.execute(select(AppAssignment, User.username).outerjoin(User, User.id == AppAssignment.user_id)
                               .where(column == row.id))
    out = [Holder(a.id, f"group:{a.group_name}", f"group {a.group_name}", a.until, a.created_by)
           if a.group_name is not None
           else Holder(a.id, f"user:{username}", f"user {username}", a.until, a.created_by) for a, username in found]
    return sorted(out, key=lambda h: (not h.principal.startswith("group:"), h.principal.lower()))


def is_ended(holder: Holder) -> bool:
    return holder.until is not None and holder.until <= clock.now()


@dataclass(frozen=True)
class App:
    """An app as its access views need it."""

    row: ServiceProvider | OidcClient
    url: str  # its admin page
    page: Callable[..., tuple[str, int]]  # that page again, with a refused form: (open_form=|assign_form=, status=)

    @property
    def key(self) -> str:
        """What the assignment services take: an SP's entity ID, a client's client_id."""
        return self.row.entity_id if isinstance(self.row, ServiceProvider) else self.row.client_id

    @property
    def name(self) -> str:
        return self.row.name


def open_view(app: App) -> Page:
    """POST of the open-to-all switch."""
    form = OpenForm(prefix="access")
    if form.validate_on_submit():
        opened = bool(form.open_to_all.data)
        try:
            changed = assignments.set_open_to_all(app.key, opened, actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            show_error(form, exc)
        else:
            db.session.commit()
            flash((f"{app.name} is now open to every signed-in user." if opened
                   else f"{app.name} is now only for those it is assigned to.") if changed else "Nothing changed.",
                  "success")
            return redirect(app.url, 303)
    return app.page(open_form=form, status=UNPROCESSABLE)


def assign_view(app: App) -> Page:
    """POST of the assign form."""
    form = AssignForm(prefix="assign")
    if form.validate_on_submit() and (done := _assign(app.key, form)) is not None:
        flash(f"Assigned {done.what} to {done.principal}.", "success")
        return redirect(app.url, 303)
    return app.page(assign_form=form, status=UNPROCESSABLE)


def _assign(key: str, form: AssignForm) -> assignments.Assigned | None:
    """Assign the app as the form says; None when refused (the reason is on the form)."""
    try:
        until = assignments.parse_until(form.until.data, clock.now()) if form.until.data else None
    except BadRequest as exc:
        show_error(form, exc, form.until)
        return None
    try:
        done = assignments.assign_app(key, f"{form.kind.data}:{form.name.data.strip()}", until=until,
                                      actor=admin_actor())
    except (BadRequest, NotFound) as exc:  # an invalid group name, an unknown user
        db.session.rollback()
        show_error(form, exc, form.name)
        return None
    except IdpError as exc:
        db.session.rollback()
        show_error(form, exc)
        return None
    db.session.commit()
    return done


def unassign_view(app: App) -> Page:
    """The confirmation step of an unassignment (GET ?principal=group:NAME), and the unassignment (POST)."""
    form = UnassignForm()
    principal = subject(form.principal, "principal", "group:NAME")
    form.confirm.label.text = f"Yes, {app.name} is no longer for {principal.replace(':', ' ', 1)}"

    def act() -> str:
        done = assignments.unassign_app(app.key, principal, actor=admin_actor())
        return f"{done.what} is no longer assigned to {done.principal}."

    return confirm_step(form, title=f"Unassign {app.name}", button="Unassign", back=app.url, act=act, done=app.url)


def until_view(app: App, assignment_id: int) -> Page:
    """The end of one of the app's assignments: its form (GET), and the change (POST)."""
    row = assignments.require_app_assignment(assignment_id)
    if (row.sp_id if isinstance(app.row, ServiceProvider) else row.client_id) != app.row.id:  # another app's
        raise NotFound(f"no assignment {assignment_id} of {app.name}")
    holder = next(h for h in holders(app.row) if h.id == row.id)

    def change(until: datetime | None) -> str:
        done = assignments.update_app_assignment(row.id, until=until, actor=admin_actor())
        return f"{done.what} is assigned to {done.principal} {ending(done.until)}."

    return until_step(current=row.until, title=f"End of {app.name} for {holder.label}", back=app.url, change=change)
