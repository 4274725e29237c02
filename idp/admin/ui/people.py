"""/admin/people and /admin/groups: the built-in directory's users and groups, and what a user may open.

A user or group of an LDAP or AD directory is shown read-only: their profile, password and groups belong to
their directory. Every change goes through :mod:`idp.authn.directory`, whose refusals are shown on the form.
"""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from werkzeug.wrappers import Response as BaseResponse
from wtforms import HiddenField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, Length, Optional

from idp.access import assignments
from idp.admin.ui import admin, admin_actor, bp
from idp.admin.ui.forms import ConfirmForm, MultiCheckboxField, choices, confirm_step, refused, show_error, subject
from idp.admin.ui.paging import paged
from idp.admin.ui.refusals import place
from idp.authn import directory
from idp.authn.connectors.chain import configured
from idp.authn.principal import group_key
from idp.errors import Conflict, IdpError, NotFound
from idp.extensions import db
from idp.runtime import settings
from idp.store import Group, User

Page = str | tuple[str, int] | BaseResponse
LOCAL = "local"


# PasswordField never renders its value: a refused form does not echo a password back.
_NEW_PASSWORD = {"autocomplete": "new-password"}
_PASSWORD_AGAIN = PasswordField("Password again", validators=[EqualTo("password", "The two passwords differ.")],
                                render_kw=_NEW_PASSWORD)


class SearchForm(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False  # a GET filter changes nothing

    q = StringField("Username or email", validators=[Optional(), Length(max=255)])
    source = SelectField("Directory", validate_choice=False)


class ProfileForm(FlaskForm):  # type: ignore[misc]
    email = StringField("Email", validators=[Length(max=320)], render_kw={"autocomplete": "off"})
    given_name = StringField("Given name", validators=[Length(max=255)])
    family_name = StringField("Family name", validators=[Length(max=255)])
    display_name = StringField("Display name", validators=[Length(max=255)])


class NewPersonForm(ProfileForm):
    username = StringField("Username", validators=[DataRequired("A user needs a username."), Length(max=255)],
                           description="Lower case; letters, digits and . _ @ + -")
    password = PasswordField("Password", validators=[Length(max=1024)], render_kw=_NEW_PASSWORD,
                             description="Empty: the user cannot sign in until someone sets one.")
    password_again = _PASSWORD_AGAIN
    groups = MultiCheckboxField("Groups")


class PasswordForm(FlaskForm):  # type: ignore[misc]
    password = PasswordField("New password", validators=[DataRequired("Type the new password."), Length(max=1024)],
                             render_kw=_NEW_PASSWORD)
    password_again = _PASSWORD_AGAIN


class AddGroupForm(FlaskForm):  # type: ignore[misc]
    # The service says what is wrong with a group that is not offered.
    add_group = SelectField("Group", validators=[DataRequired("Choose a group.")], validate_choice=False)


class RemoveGroupForm(ConfirmForm):
    group = HiddenField(validators=[DataRequired()])


class ActionForm(FlaskForm):  # type: ignore[misc]
    """A button: only the CSRF token."""


def _profile(form: ProfileForm) -> dict[str, str | None]:
    return {k: form[k].data for k in directory.PROFILE_FIELDS}


# --- people ---------------------------------------------------------------------------------------------


def _sources() -> list[str]:
    """Every directory users come from (the built-in one first)."""
    found = set(db.session.scalars(select(User.source).distinct())) | {LOCAL}
    return sorted(found, key=lambda s: (s != LOCAL, s))


@bp.get("/people")
def people() -> Page:
    form = SearchForm(request.args)
    form.source.choices = choices([("", "All"), *((s, "built in" if s == LOCAL else s) for s in _sources())])
    if not form.validate():
        return refused("admin/people.html", form=form, users=None)
    users = paged(directory.search_users(q=form.q.data, source=form.source.data))
    return render_template("admin/people.html", form=form, users=users)


@bp.route("/people/new", methods=["GET", "POST"])
def person_new() -> Page:
    form = NewPersonForm()
    form.groups.choices = choices((g.name, g.name) for g in directory.list_groups())
    if form.validate_on_submit():
        try:
            user = directory.create_user(form.username.data, password=form.password.data or None,
                                         actor=admin_actor(), groups=form.groups.data or (), **_profile(form))
        except IdpError as exc:
            db.session.rollback()
            place(form, exc, words=[("user '", form.username), ("group", form.groups)])  # taken; no such group
        else:
            db.session.commit()
            flash(f"Created {user.username}" + ("." if user.password_hash else
                                                 ": without a password, they cannot sign in yet."), "success")
            return redirect(url_for("admin.person", username=user.username), 303)
    if request.method == "POST":
        return refused("admin/people_new.html", form=form)
    return render_template("admin/people_new.html", form=form)


def _directory_type(source: str) -> str | None:
    """The type (ldap, ad) of the directory a user comes from, when it is still configured."""
    return next((c.cfg.type for c in configured() if c.name == source and c.cfg is not None), None)


def _person_page(user: User, *, status: int = 200, **failed: FlaskForm) -> tuple[str, int]:
    """A user's page; a form posted in vain (``failed``) replaces the fresh one of that name."""
    context: dict[str, Any] = {"user": user}
    # Local groups are the bridge's own, whoever the member: a directory user joins one here (the admin group,
    # a group that apps are assigned to), as through the group's page and the API.
    forms: dict[str, FlaskForm] = {"add_group_form": AddGroupForm(formdata=None)}
    if user.source == LOCAL:
        forms.update(profile_form=ProfileForm(formdata=None, obj=user), password_form=PasswordForm(formdata=None),
                     action_form=ActionForm(formdata=None))
    else:
        context["directory_type"] = _directory_type(user.source)
    forms.update(failed)
    joined = {g.name for g in user.groups}
    forms["add_group_form"].add_group.choices = choices(
        [("", "Choose a group"), *((g.name, g.name) for g in directory.list_groups() if g.name not in joined)])
    context.update(forms)
    return render_template("admin/people_show.html", **context), status


def _local_user(username: str) -> User:
    """The user a change of profile, password, status or existence is about: a directory user's are the
    directory's, their page has no such forms, and posting them changes nothing."""
    user = directory.require_user(username)
    if user.source != LOCAL:
        raise Conflict(f"{user.username} comes from directory {user.source}: change them there")
    return user


def _saved(user: User, message: str) -> BaseResponse:
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("admin.person", username=user.username), 303)


@bp.get("/people/<username>")
def person(username: str) -> Page:
    return _person_page(directory.require_user(username))


@bp.post("/people/<username>/profile")
def person_profile(username: str) -> Page:
    user = _local_user(username)
    form = ProfileForm()
    if form.validate_on_submit():
        try:
            directory.update_user(user.username, actor=admin_actor(), email=form.email.data,
                                  given_name=form.given_name.data, family_name=form.family_name.data,
                                  display_name=form.display_name.data)
        except IdpError as exc:
            db.session.rollback()
            place(form, exc)
        else:
            return _saved(user, f"Saved the profile of {user.username}.")
    return _person_page(user, status=422, profile_form=form)


@bp.post("/people/<username>/password")
def person_password(username: str) -> Page:
    user = _local_user(username)
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            directory.set_password(user.username, form.password.data, actor=admin_actor())
        except IdpError as exc:  # the password policy
            db.session.rollback()
            show_error(form, exc, form.password)
        else:
            return _saved(user, f"Set a new password for {user.username}.")
    return _person_page(user, status=422, password_form=form)


@bp.post("/people/<username>/disable")
def person_disable(username: str) -> Page:
    user = _local_user(username)
    form = ActionForm()
    if not form.validate_on_submit():
        return _person_page(user, status=422, action_form=form)
    ended = directory.disable_user(user.username, actor=admin_actor())
    return _saved(user, f"Disabled {user.username}: they can no longer sign in"
                        + (f"; {ended} session{'' if ended == 1 else 's'} ended." if ended else "."))


@bp.post("/people/<username>/enable")
def person_enable(username: str) -> Page:
    user = _local_user(username)
    form = ActionForm()
    if not form.validate_on_submit():
        return _person_page(user, status=422, action_form=form)
    directory.enable_user(user.username, actor=admin_actor())
    return _saved(user, f"Enabled {user.username}.")


@bp.post("/people/<username>/groups")
def person_group_add(username: str) -> Page:
    user = directory.require_user(username)
    form = AddGroupForm()
    form.add_group.choices = choices([("", "Choose a group"), *((g.name, g.name) for g in directory.list_groups())])
    if form.validate_on_submit():
        try:
            added = directory.add_member(form.add_group.data, user.username, actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            show_error(form, exc, form.add_group)
        else:
            return _saved(user, f"Added {user.username} to {form.add_group.data}." if added
                          else f"{user.username} was already in {form.add_group.data}.")
    return _person_page(user, status=422, add_group_form=form)


@bp.route("/people/<username>/groups/remove", methods=["GET", "POST"])
def person_group_remove(username: str) -> Page:
    """The confirmation step of taking the user out of a group (GET ?group=NAME), and the removal (POST)."""
    user = directory.require_user(username)
    form = RemoveGroupForm()
    group = subject(form.group, "group", "NAME")
    return _leave(group, user.username, form, url_for("admin.person", username=user.username))


@bp.route("/people/<username>/delete", methods=["GET", "POST"])
def person_delete(username: str) -> Page:
    user = _local_user(username)
    form = ConfirmForm()
    form.confirm.label.text = f"Yes, delete {user.username}"

    def act() -> str:
        directory.delete_user(user.username, actor=admin_actor())
        return f"Deleted {user.username}."

    return confirm_step(
        form, title=f"Delete {user.username}", back=url_for("admin.person", username=user.username), act=act,
        done=url_for("admin.people"),
        warning="Their sessions end at once; what was assigned to them personally goes too.")


@bp.get("/people/<username>/access")
def person_access(username: str) -> str:
    return render_template("admin/people_access.html", found=assignments.effective_access(username))


# --- groups ---------------------------------------------------------------------------------------------


class NewGroupForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired("A group needs a name."), Length(max=255)],
                       description="Letters, digits and . _ -")
    description = TextAreaField("Description", validators=[Length(max=1024)], render_kw={"rows": 2})


class DescriptionForm(FlaskForm):  # type: ignore[misc]
    description = TextAreaField("Description", validators=[Length(max=1024)], render_kw={"rows": 2},
                                description="What the group is for; empty: none.")


class AddMemberForm(FlaskForm):  # type: ignore[misc]
    username = StringField("Username", validators=[DataRequired("Name a user."), Length(max=255)])


class RemoveMemberForm(ConfirmForm):
    member = HiddenField(validators=[DataRequired()])


def _directory_groups() -> dict[str, list[str]]:
    """Groups directories reported at their users' last sign-ins (no rows here), with those users."""
    out: dict[str, list[str]] = {}
    for username, groups in db.session.execute(
            select(User.username, User.external_groups).where(User.external_groups.is_not(None))
            .order_by(User.username)):
        for name in groups or ():
            out.setdefault(str(name), []).append(username)
    return dict(sorted(out.items(), key=lambda item: item[0].lower()))


def _groups_page(form: NewGroupForm, status: int = 200) -> tuple[str, int]:
    counts = {name: n for name, n in db.session.execute(
        select(Group.name, func.count(User.id)).outerjoin(Group.members).group_by(Group.name))}
    local = directory.list_groups()
    names = {g.name for g in local}
    outside = {name: users for name, users in _directory_groups().items() if name not in names}
    page = render_template("admin/groups.html", form=form, groups=local, counts=counts, directory_groups=outside)
    return page, status


@bp.route("/groups", methods=["GET", "POST"])
def groups() -> Page:
    form = NewGroupForm()
    if not form.validate_on_submit():
        return _groups_page(form, 422 if request.method == "POST" else 200)
    try:
        group = directory.create_group(form.name.data, actor=admin_actor(), description=form.description.data)
    except IdpError as exc:  # an invalid or taken name
        db.session.rollback()
        show_error(form, exc, form.name)
        return _groups_page(form, 422)
    db.session.commit()
    flash(f"Created group {group.name}.", "success")
    return redirect(url_for("admin.group", name=group.name), 303)


def _group_page(name: str, *, add_form: AddMemberForm | None = None, description_form: DescriptionForm | None = None,
                status: int = 200) -> tuple[str, int]:
    group = directory.get_group(name)
    if group is None:
        members = _directory_groups().get(name)
        if not members:
            raise NotFound(f"no group '{name}'")
        return render_template("admin/groups_show.html", group=None, name=name, members=members), status
    return render_template(
        "admin/groups_show.html", group=group, name=group.name, members=[u.username for u in group.members],
        add_form=add_form or AddMemberForm(formdata=None),
        description_form=description_form or DescriptionForm(formdata=None, obj=group)), status


@bp.get("/groups/<name>")
def group(name: str) -> Page:
    return _group_page(name)


def _group_saved(name: str, message: str) -> BaseResponse:
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("admin.group", name=name), 303)


@bp.post("/groups/<name>/description")
def group_description(name: str) -> Page:
    group = directory.require_group(name)
    form = DescriptionForm()
    if form.validate_on_submit():
        before = group.description
        try:
            directory.update_group(group.name, description=form.description.data, actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            show_error(form, exc, form.description)
        else:
            return _group_saved(group.name, f"Saved the description of {group.name}." if group.description != before
                                else "Nothing changed.")
    return _group_page(group.name, description_form=form, status=422)


@bp.post("/groups/<name>/members")
def group_member_add(name: str) -> Page:
    group = directory.require_group(name)
    form = AddMemberForm()
    if form.validate_on_submit():
        try:
            added = directory.add_member(group.name, form.username.data, actor=admin_actor())
        except IdpError as exc:  # no such user
            db.session.rollback()
            show_error(form, exc, form.username)
        else:
            who = directory.normalize_username(form.username.data)
            return _group_saved(group.name, f"Added {who} to {group.name}." if added
                                else f"{who} was already in {group.name}.")
    return _group_page(group.name, add_form=form, status=422)


@bp.route("/groups/<name>/members/remove", methods=["GET", "POST"])
def group_member_remove(name: str) -> Page:
    """The confirmation step of taking a member out of the group (GET ?member=NAME), and the removal (POST)."""
    group = directory.require_group(name)
    form = RemoveMemberForm()
    member = subject(form.member, "member", "USERNAME")
    return _leave(group.name, member, form, url_for("admin.group", name=group.name))


def _leave(group: str, username: str, form: ConfirmForm, back: str) -> Page:
    """One click must not take someone out of a group (the admin group above all): the removal is confirmed."""
    username = directory.normalize_username(username)
    form.confirm.label.text = f"Yes, take {username} out of {group}"
    warning = None
    member = directory.get_user(username)
    # A directory that reports a group of that name keeps the user in it whatever the local membership.
    admins = group_key(settings().admin_group)  # in any case, as Principal.in_group
    if group_key(group) == admins and (member is None or admins not in
                                       {group_key(g) for g in member.external_groups or ()}):
        warning = (f"{group} is the admin group: {username} can no longer use these pages"
                   + (", and neither can you, from your next page." if username == admin().username else "."))

    def act() -> str:
        directory.remove_member(group, username, actor=admin_actor())
        return f"Removed {username} from {group}."

    return confirm_step(form, title=f"Remove {username} from {group}", button="Remove", back=back, act=act,
                        done=back, warning=warning)


@bp.route("/groups/<name>/delete", methods=["GET", "POST"])
def group_delete(name: str) -> Page:
    group = directory.require_group(name)
    form = ConfirmForm()
    form.confirm.label.text = f"Yes, delete the group {group.name}"

    def act() -> str:
        directory.delete_group(group.name, actor=admin_actor())
        return f"Deleted the group {name}."

    return confirm_step(
        form, title=f"Delete the group {group.name}", back=url_for("admin.group", name=group.name), act=act,
        done=url_for("admin.groups"),
        warning=f"Its {len(group.members)} member(s) leave it. Assignments to the group name stay, and apply "
                "again to a directory group of the same name.")
