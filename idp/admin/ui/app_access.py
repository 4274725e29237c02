"""Who may use an application, as its admin page shows and changes it: open to every signed-in user or to
those it is assigned to (users and groups, each until an optional end). Shared by the SAML app and OIDC client
pages; the changes go through :mod:`idp.access.assignments` like the CLI's and the API's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import request
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional

from idp import clock
from idp.access import assignments
from idp.admin.ui import admin_actor
from idp.admin.ui.forms import ConfirmForm, Page, choices, confirm_step, show_error
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

    principal: str  # what assign_app/unassign_app take: "group:NAME" or "user:NAME"
    label: str  # "group NAME"
    until: datetime | None
    created_by: str


def holders(row: ServiceProvider | OidcClient) -> list[Holder]:
    """The app's assignments, groups first, ended ones included (the page marks them)."""
    column = AppAssignment.sp_id if isinstance(row, ServiceProvider) else AppAssignment.client_id
    found = db.session.execute(select(AppAssignment, User.username).outerjoin(User, User.id == AppAssignment.user_id)
                               .where(column == row.id))
    out = [Holder(f"group:{a.group_name}", f"group {a.group_name}", a.until, a.created_by) if a.group_name is not None
           else Holder(f"user:{username}", f"user {username}", a.until, a.created_by) for a, username in found]
    return sorted(out, key=lambda h: (not h.principal.startswith("group:"), h.principal.lower()))


def is_ended(holder: Holder) -> bool:
    return holder.until is not None and holder.until <= clock.now()


def set_open(key: str, form: OpenForm) -> bool | None:
    """Apply the open-to-all switch; True/False as the service answers, None when it refused (shown on form)."""
    try:
        changed = assignments.set_open_to_all(key, bool(form.open_to_all.data), actor=admin_actor())
    except IdpError as exc:
        db.session.rollback()
        show_error(form, exc)
        return None
    db.session.commit()
    return changed


def assign(key: str, form: AssignForm) -> assignments.Assigned | None:
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


def unassign_page(key: str, app_name: str, back: str) -> Page:
    """The confirmation step of an unassignment (GET ?principal=group:NAME), and the unassignment (POST)."""
    form = UnassignForm()
    if request.method == "GET":
        form.principal.data = request.args.get("principal", "")
    form.confirm.label.text = f"Yes, {app_name} is no longer for {form.principal.data.replace(':', ' ', 1)}"

    def act() -> str:
        done = assignments.unassign_app(key, form.principal.data, actor=admin_actor())
        return f"{done.what} is no longer assigned to {done.principal}."

    return confirm_step(form, title=f"Unassign {app_name}", button="Unassign", back=back, act=act, done=back)
