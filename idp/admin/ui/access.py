"""/admin/accounts, /admin/permission-sets and /admin/assignments: AWS accounts in their OU tree, what a
permission set grants, and who holds which permission set where, until when. Every change goes through
:mod:`idp.access.accounts`, :mod:`idp.access.permission_sets` and :mod:`idp.access.assignments` (the CLI's
and the API's services), whose refusals are shown on the form."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import Select, func, or_, select
from werkzeug.wrappers import Response as BaseResponse
from wtforms import (
    BooleanField,
    DateField,
    Field,
    IntegerField,
    SelectField,
    StringField,
    TextAreaField,
    ValidationError,
)
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from idp import clock
from idp.access import accounts, assignments, permission_sets
from idp.access.accounts import AccountChanges
from idp.access.permission_sets import PermissionSetSpec
from idp.admin.api.base import MAX_JSON_DEPTH, too_deep
from idp.admin.ui import admin_actor, bp
from idp.admin.ui.forms import ConfirmForm, choices, confirm_step, ending, lines, refused, show_error, until_step
from idp.admin.ui.paging import paged
from idp.admin.ui.refusals import place
from idp.errors import BadRequest, Conflict, IdpError
from idp.extensions import db
from idp.store import Account, Assignment, OrganizationalUnit, PermissionSet

Page = str | tuple[str, int] | BaseResponse
ROOT_CHOICE = ("", "(root)")


def _ou_choices(*, exclude: str | None = None) -> list[Any]:
    """Every OU, indented under its parent, the root first; ``exclude`` leaves an OU and its sub-OUs out."""
    out, skip_below = [ROOT_CHOICE], None
    for node in accounts.ou_tree():
        if skip_below is not None and node.depth > skip_below:
            continue
        skip_below = node.depth if node.name == exclude else None
        if skip_below is None:
            out.append((node.name, "\u2003" * node.depth + node.name))
    return choices(out)


def _done(message: str, endpoint: str, **values: Any) -> BaseResponse:
    db.session.commit()
    flash(message, "success")
    return redirect(url_for(endpoint, **values), 303)


# --- accounts and OUs -----------------------------------------------------------------------------------


class OuForm(FlaskForm):  # type: ignore[misc]
    ou_name = StringField("Name", validators=[DataRequired("An OU needs a name."), Length(max=128)])
    parent = SelectField("Under", validate_choice=False)


class AccountFields(FlaskForm):  # type: ignore[misc]
    account_name = StringField("Name", validators=[DataRequired("An account needs a name."), Length(max=255)])
    saml_provider_arn = StringField(
        "SAML provider ARN", validators=[DataRequired("Give the ARN of the account's IAM identity provider."),
                                         Length(max=2048)],
        description="arn:aws:iam::ACCOUNT:saml-provider/NAME: the IAM identity provider that trusts this bridge.")
    ou = SelectField("OU", validate_choice=False)
    signin_url = StringField("Sign-in URL", validators=[Length(max=2048)],
                             description="A regional AWS sign-in SAML endpoint; empty: "
                                         "https://signin.aws.amazon.com/saml.")


class AccountForm(AccountFields):
    account_id = StringField("Account ID", validators=[DataRequired("Give the 12-digit AWS account ID."),
                                                       Length(max=12)], render_kw={"inputmode": "numeric"})


def _place_account_refusal(form: AccountFields, exc: IdpError) -> None:
    taken = [("account '", form.account_id)] if isinstance(form, AccountForm) else []
    place(form, exc, {"name": form.account_name}, [*taken, ("organizational unit", form.ou)])


def _accounts_page(*, ou_form: OuForm | None = None, account_form: AccountForm | None = None,
                   status: int = 200) -> tuple[str, int]:
    ou_form = ou_form or OuForm(formdata=None)
    account_form = account_form or AccountForm(formdata=None)
    ou_form.parent.choices = account_form.ou.choices = _ou_choices()
    paths = accounts.ou_paths()
    by_ou: dict[str | None, list[Account]] = {}
    for account in accounts.list_accounts():
        by_ou.setdefault(paths[account.ou_id].rsplit("/", 1)[-1] if account.ou_id else None, []).append(account)
    page = render_template("admin/accounts.html", tree=accounts.ou_tree(), by_ou=by_ou, ou_form=ou_form,
                           account_form=account_form)
    return page, status


@bp.get("/accounts", endpoint="accounts")
def accounts_page() -> Page:
    return _accounts_page()


@bp.post("/accounts/ous")
def ou_add() -> Page:
    form = OuForm()
    if form.validate_on_submit():
        try:
            ou = accounts.add_ou(form.ou_name.data, parent=form.parent.data or None, actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            place(form, exc, {"name": form.ou_name},
                  [("already exists", form.ou_name), ("organizational unit", form.parent)])
        else:
            return _done(f"Added the OU {accounts.ou_path(ou.id)}.", "admin.accounts")
    return _accounts_page(ou_form=form, status=422)


@bp.post("/accounts/new")
def account_add() -> Page:
    form = AccountForm()
    if form.validate_on_submit():
        try:
            account = accounts.add_account(
                form.account_id.data, name=form.account_name.data, saml_provider_arn=form.saml_provider_arn.data,
                ou=form.ou.data or None, signin_url=form.signin_url.data or None, actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            _place_account_refusal(form, exc)
        else:
            return _done(f"Added the account {account.name} ({account.account_id}).", "admin.account",
                         account_id=account.account_id)
    return _accounts_page(account_form=form, status=422)


def _account_page(account: Account, form: AccountFields | None = None, status: int = 200) -> tuple[str, int]:
    if form is None:
        paths = accounts.ou_paths()
        form = AccountFields(formdata=None, data={
            "account_name": account.name, "saml_provider_arn": account.saml_provider_arn,
            "signin_url": account.signin_url or "",
            "ou": paths[account.ou_id].rsplit("/", 1)[-1] if account.ou_id else ""})
    form.ou.choices = _ou_choices()
    info = accounts.describe_account(account)
    return render_template("admin/accounts_show.html", account=account, info=info, form=form,
                           assignments=_reaching(account), now=clock.now()), status


def _reaching(account: Account) -> list[assignments.AssignmentInfo]:
    """The assignments that reach the account: its own and those of its OU and the OUs above it."""
    parents = {pk: parent for pk, parent in db.session.execute(
        select(OrganizationalUnit.id, OrganizationalUnit.parent_id))}
    above: list[int] = []
    ou_id = account.ou_id
    while ou_id is not None and ou_id not in above:
        above.append(ou_id)
        ou_id = parents.get(ou_id)
    rows = db.session.scalars(select(Assignment).where(
        or_(Assignment.account_id == account.id, Assignment.ou_id.in_(above))).order_by(Assignment.id))
    return assignments.describe_assignments(list(rows))


@bp.route("/accounts/<account_id>", methods=["GET", "POST"])
def account(account_id: str) -> Page:
    row = accounts.require_account(account_id)
    if request.method == "GET":
        return _account_page(row)
    form = AccountFields()
    form.ou.choices = _ou_choices()
    if form.validate_on_submit():
        changes = AccountChanges(name=form.account_name.data, saml_provider_arn=form.saml_provider_arn.data,
                                 signin_url=form.signin_url.data or "", ou=form.ou.data or "")
        try:
            changed = accounts.update_account(row.account_id, changes, actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            _place_account_refusal(form, exc)
        else:
            return _done(f"Saved {row.name}: changed {', '.join(k.replace('_', ' ') for k in changed)}."
                         if changed else "Nothing changed.", "admin.account", account_id=row.account_id)
    return _account_page(row, form, 422)


@bp.route("/accounts/<account_id>/remove", methods=["GET", "POST"])
def account_remove(account_id: str) -> Page:
    row = accounts.require_account(account_id)
    form = ConfirmForm()
    form.confirm.label.text = f"Yes, remove {row.name} ({row.account_id})"

    def act() -> str:
        removed = accounts.remove_account(row.account_id, actor=admin_actor())
        return f"Removed the account {account_id}" + (f" and its {removed} assignment(s)." if removed else ".")

    own = len(db.session.scalars(select(Assignment.id).where(Assignment.account_id == row.id)).all())
    return confirm_step(form, title=f"Remove {row.name} ({row.account_id})", button="Remove", act=act,
                        back=url_for("admin.account", account_id=row.account_id), done=url_for("admin.accounts"),
                        warning=f"Its {own} own assignment(s) go with it; no one can open it from here any more.")


class MoveOuForm(FlaskForm):  # type: ignore[misc]
    parent = SelectField("Under", validate_choice=False)


def _ou_page(name: str, form: MoveOuForm | None = None, status: int = 200) -> tuple[str, int]:
    ou = accounts.require_ou(name)
    paths = accounts.ou_paths()
    parent = paths[ou.parent_id].rsplit("/", 1)[-1] if ou.parent_id else ""
    form = form or MoveOuForm(formdata=None, data={"parent": parent})
    form.parent.choices = _ou_choices(exclude=ou.name)
    rows = db.session.scalars(select(Assignment).where(Assignment.ou_id == ou.id).order_by(Assignment.id))
    children = [n for n in accounts.ou_tree() if n.parent == ou.name]
    members = db.session.scalars(select(Account).where(Account.ou_id == ou.id).order_by(Account.name)).all()
    return render_template("admin/accounts_ou.html", ou=ou, path=paths[ou.id], form=form, children=children,
                           accounts=members, assignments=assignments.describe_assignments(list(rows)),
                           now=clock.now()), status


@bp.get("/accounts/ous/<name>")
def ou(name: str) -> Page:
    return _ou_page(name)


@bp.post("/accounts/ous/<name>/move")
def ou_move(name: str) -> Page:
    ou = accounts.require_ou(name)
    form = MoveOuForm()
    if form.validate_on_submit():
        try:
            accounts.move_ou(ou.name, parent=form.parent.data or None, actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            show_error(form, exc, form.parent)
        else:
            return _done(f"{ou.name} is now at {accounts.ou_path(ou.id)}.", "admin.ou", name=ou.name)
    return _ou_page(ou.name, form, 422)


@bp.route("/accounts/ous/<name>/remove", methods=["GET", "POST"])
def ou_remove(name: str) -> Page:
    ou = accounts.require_ou(name)
    form = ConfirmForm()
    form.confirm.label.text = f"Yes, remove the OU {ou.name}"

    def act() -> str:  # refused while it still holds accounts or OUs
        removed = accounts.remove_ou(ou.name, actor=admin_actor())
        return f"Removed the OU {name}" + (f" and its {removed} assignment(s)." if removed else ".")

    return confirm_step(form, title=f"Remove the OU {ou.name}", button="Remove", act=act,
                        back=url_for("admin.ou", name=ou.name), done=url_for("admin.accounts"),
                        warning="Only an empty OU can be removed; the assignments made in it go with it.")


# --- permission sets ------------------------------------------------------------------------------------


def _json_object(form: FlaskForm, field: Field) -> None:
    if (field.data or "").strip():
        try:
            value = json.loads(field.data)
        except (ValueError, RecursionError) as exc:  # deep nesting exhausts the parser's stack
            raise ValidationError(f"Not valid JSON: {exc}.") from None
        if too_deep(value):  # as the API refuses it: the stored JSON is walked recursively
            raise ValidationError(f"The policy nests lists and objects more than {MAX_JSON_DEPTH} levels deep.")
        if not isinstance(value, dict):
            raise ValidationError("An IAM policy is a JSON object: {\"Version\": ..., \"Statement\": [...]}.")


class PermissionSetForm(FlaskForm):  # type: ignore[misc]
    session_hours = IntegerField("Session duration (hours)", validators=[
        InputRequired("Give the session duration."), NumberRange(1, 12, "From 1 to 12 hours.")],
        render_kw={"min": 1, "max": 12})
    role_name = StringField("IAM role name", validators=[DataRequired("Name the IAM role."), Length(max=64)],
                            description="The role assumed in each account: arn:aws:iam::ACCOUNT:role/NAME.")
    description = TextAreaField("Description", validators=[Length(max=700)], render_kw={"rows": 2})
    managed_policy_arns = TextAreaField("Managed policy ARNs", render_kw={"rows": 3, "spellcheck": "false"},
                                        description="One per line, e.g. arn:aws:iam::aws:policy/ReadOnlyAccess.")
    inline_policy = TextAreaField("Inline policy (JSON)", validators=[_json_object],
                                  render_kw={"rows": 8, "spellcheck": "false"})
    relay_state = StringField("Relay state", validators=[Length(max=2048)],
                              description="Where the console opens after sign-in (an https URL); empty: its home.")
    mfa_required = BooleanField("Require MFA", description="Only users who signed in with MFA get this role. "
                                "No sign-in has a second factor yet: nobody gets it.")


class NewPermissionSetForm(PermissionSetForm):
    name = StringField("Name", validators=[DataRequired("A permission set needs a name."), Length(max=32)],
                       description="Up to 32 of letters, digits and +=,.@_-")
    role_name = StringField("IAM role name", validators=[Length(max=64)],
                            description="Empty: the permission set's name.")


def _spec(form: PermissionSetForm, *, clearing: bool) -> PermissionSetSpec:
    """The form as a spec; ``clearing`` (an edit): an emptied field clears the setting."""
    policy = (form.inline_policy.data or "").strip()
    return PermissionSetSpec(
        session_hours=form.session_hours.data, role_name=(form.role_name.data or "").strip() or None,
        description=form.description.data or ("" if clearing else None),
        managed_policy_arns=lines(form.managed_policy_arns.data),
        inline_policy=json.loads(policy) if policy else ({} if clearing else None),
        relay_state=form.relay_state.data or ("" if clearing else None),
        mfa_required=bool(form.mfa_required.data))


def _place_pset_refusal(form: PermissionSetForm, exc: IdpError) -> None:
    place(form, exc, words=[("already exists", form.name)] if isinstance(form, NewPermissionSetForm) else [])


@bp.get("/permission-sets", endpoint="permission_sets")
def permission_sets_page() -> str:
    counts = {pk: n for pk, n in db.session.execute(
        select(Assignment.permission_set_id, func.count()).group_by(Assignment.permission_set_id))}
    return render_template("admin/permission_sets.html", psets=permission_sets.list_permission_sets(),
                           counts=counts)


@bp.route("/permission-sets/new", methods=["GET", "POST"])
def permission_set_new() -> Page:
    form = NewPermissionSetForm(data={"session_hours": 1})
    if form.validate_on_submit():
        try:
            pset = permission_sets.add_permission_set(form.name.data, _spec(form, clearing=False),
                                                      actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            _place_pset_refusal(form, exc)
        else:
            return _done(f"Added the permission set {pset.name}.", "admin.permission_set", name=pset.name)
    if request.method == "POST":
        return refused("admin/permission_sets_new.html", form=form)
    return render_template("admin/permission_sets_new.html", form=form)


def _pset_form(pset: PermissionSet) -> PermissionSetForm:
    return PermissionSetForm(formdata=None, data={
        "session_hours": pset.session_duration_seconds // 3600, "role_name": pset.role_name,
        "description": pset.description or "", "managed_policy_arns": "\n".join(pset.managed_policy_arns or []),
        "inline_policy": json.dumps(pset.inline_policy, indent=2) if pset.inline_policy else "",
        "relay_state": pset.relay_state or "", "mfa_required": pset.mfa_required})


def _pset_page(pset: PermissionSet, form: PermissionSetForm | None = None, status: int = 200) -> tuple[str, int]:
    rows = db.session.scalars(select(Assignment).where(Assignment.permission_set_id == pset.id)
                              .order_by(Assignment.id))
    return render_template("admin/permission_sets_show.html", pset=pset, form=form or _pset_form(pset),
                           assignments=assignments.describe_assignments(list(rows)), now=clock.now()), status


@bp.route("/permission-sets/<name>", methods=["GET", "POST"])
def permission_set(name: str) -> Page:
    pset = permission_sets.require_permission_set(name)
    if request.method == "GET":
        return _pset_page(pset)
    form = PermissionSetForm()
    if form.validate_on_submit():
        try:
            changed = permission_sets.update_permission_set(pset.name, _spec(form, clearing=True),
                                                            actor=admin_actor())
        except IdpError as exc:
            db.session.rollback()
            _place_pset_refusal(form, exc)
        else:
            return _done(f"Saved {pset.name}: changed {', '.join(k.replace('_', ' ') for k in changed)}."
                         if changed else "Nothing changed.", "admin.permission_set", name=pset.name)
    return _pset_page(pset, form, 422)


class DeletePermissionSetForm(ConfirmForm):
    force = BooleanField("Also remove the assignments that use it")


@bp.route("/permission-sets/<name>/delete", methods=["GET", "POST"])
def permission_set_delete(name: str) -> Page:
    pset = permission_sets.require_permission_set(name)
    form = DeletePermissionSetForm()
    form.confirm.label.text = f"Yes, delete the permission set {pset.name}"
    if form.validate_on_submit():
        try:
            removed = permission_sets.delete_permission_set(pset.name, force=bool(form.force.data),
                                                            actor=admin_actor())
        except IdpError as exc:  # still in use, without force
            db.session.rollback()
            show_error(form, exc, form.force)
        else:
            return _done(f"Deleted the permission set {name}"
                         + (f" and {removed} assignment(s)." if removed else "."), "admin.permission_sets")
    used = len(accounts.assignment_lines(Assignment.permission_set_id == pset.id))
    page = render_template(
        "admin/permission_sets_delete.html", form=form, pset=pset, used=used, action=request.path,
        back=url_for("admin.permission_set", name=pset.name))
    return (page, 422) if request.method == "POST" else page


# --- assignments ----------------------------------------------------------------------------------------


def _targets() -> list[tuple[str, str]]:
    """Accounts and OUs, as "account:ID" and "ou:NAME" (one select: exactly one target by construction)."""
    return [*((f"account:{a.account_id}", f"account {a.name} ({a.account_id})") for a in accounts.list_accounts()),
            *((f"ou:{n.name}", f"OU {n.name} (its accounts and those below)") for n in accounts.ou_tree())]


def _target(value: str) -> dict[str, str]:
    kind, _, key = value.partition(":")
    return {"account": key} if kind == "account" else {"ou": key}


class AssignmentForm(FlaskForm):  # type: ignore[misc]
    principal = StringField("User or group", validators=[DataRequired("Name a user or a group."), Length(max=300)],
                            description="user:NAME, group:NAME, or a bare name (a user, else a known group). "
                                        "A directory group nobody has signed in with yet: group:NAME.")
    permission_set = SelectField("Permission set", validators=[DataRequired("Choose a permission set.")])
    target = SelectField("Where", validators=[DataRequired("Choose an account or an OU.")])
    until = DateField("Until (optional)", validators=[Optional()],
                      description="The assignment works through that day (UTC); empty: no end.")


def _assignment_form_choices(form: AssignmentForm) -> None:
    form.permission_set.choices = choices([("", "Choose a permission set"),
                                           *((p.name, p.name) for p in permission_sets.list_permission_sets())])
    form.target.choices = choices([("", "Choose an account or an OU"), *_targets()])


class AssignmentFilter(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False  # a GET filter changes nothing

    principal = StringField("User or group", validators=[Optional(), Length(max=300)])
    permission_set = SelectField("Permission set", validate_choice=False)
    target = SelectField("Where", validate_choice=False)
    status = SelectField("Status", choices=choices([("", "All"), ("active", "Running"), ("ended", "Ended")]),
                         default="")


def _place_assignment_refusal(form: AssignmentForm | AssignmentFilter, exc: IdpError) -> None:
    # What names no field is a missing permission set, account, OU, or (whatever else) user or group.
    place(form, exc, words=[("permission set", form.permission_set), ("no account", form.target),
                            ("organizational unit", form.target), ("", form.principal)])


def _filtered(form: AssignmentFilter) -> Select[tuple[Assignment]]:
    """The assignments the filter form selects; an unknown user, group or permission set is refused."""
    target = _target(form.target.data) if form.target.data else {}
    return assignments.assignment_query(
        principal=(form.principal.data or "").strip() or None, permission_set=form.permission_set.data or None,
        account=target.get("account"), ou=target.get("ou"),
        active={"active": True, "ended": False}.get(form.status.data), now=clock.now())


@bp.get("/assignments", endpoint="assignments")
def assignments_page() -> Page:
    form = AssignmentFilter(request.args)
    form.permission_set.choices = choices([("", "All"),
                                           *((p.name, p.name) for p in permission_sets.list_permission_sets())])
    form.target.choices = choices([("", "Anywhere"), *_targets()])
    if form.validate():
        try:
            query = _filtered(form)
        except IdpError as exc:
            db.session.rollback()
            _place_assignment_refusal(form, exc)
        else:
            page = paged(query)
            return render_template("admin/assignments.html", form=form, page=page,
                                   rows=assignments.describe_assignments(page.items), now=clock.now())
    return refused("admin/assignments.html", form=form, page=None, rows=[], now=clock.now())


@bp.route("/assignments/new", methods=["GET", "POST"])
def assignment_new() -> Page:
    if request.method == "GET":  # prefilled by links from an account, an OU or a group
        form = AssignmentForm(formdata=None, data={k: request.args.get(k, "") for k in
                                                   ("principal", "permission_set", "target")})
    else:
        form = AssignmentForm()
    _assignment_form_choices(form)
    if form.validate_on_submit():
        try:
            until = (assignments.parse_until(form.until.data.isoformat(), clock.now())
                     if form.until.data else None)
        except BadRequest as exc:
            show_error(form, exc, form.until)
        else:
            try:
                done = assignments.assign(form.principal.data, form.permission_set.data, until=until,
                                          actor=admin_actor(), **_target(form.target.data))
            except Conflict as exc:  # the same assignment is running
                db.session.rollback()
                show_error(form, exc)
            except IdpError as exc:
                db.session.rollback()
                _place_assignment_refusal(form, exc)
            else:
                return _done(f"Assigned {done.what} to {done.principal} in {done.where}"
                             + (f" until {done.until:%Y-%m-%d %H:%M} UTC." if done.until else "."),
                             "admin.assignments")
    if request.method == "POST":
        return refused("admin/assignments_new.html", form=form)
    return render_template("admin/assignments_new.html", form=form)


@bp.route("/assignments/<int:assignment_id>", methods=["GET", "POST"])
def assignment(assignment_id: int) -> Page:
    """When the assignment ends: its form (GET), and the change (POST)."""
    info = assignments.describe_assignments([assignments.require_assignment(assignment_id)])[0]

    def change(until: datetime | None) -> str:
        done = assignments.update_assignment(assignment_id, until=until, actor=admin_actor())
        return f"{done.what} is assigned to {done.principal} in {done.where} {ending(done.until)}."

    return until_step(current=info.until, title=f"End of {info.permission_set} for {info.who.label} in {info.where}",
                      back=url_for("admin.assignments"), change=change)


@bp.route("/assignments/<int:assignment_id>/remove", methods=["GET", "POST"])
def assignment_remove(assignment_id: int) -> Page:
    info = assignments.describe_assignments([assignments.require_assignment(assignment_id)])[0]
    form = ConfirmForm()
    what = f"{info.permission_set} for {info.who.label} in {info.where}"
    form.confirm.label.text = f"Yes, take back {what}"

    def act() -> str:
        done = assignments.unassign_by_id(assignment_id, actor=admin_actor())
        return f"Took back {done.what} from {done.principal} in {done.where}."

    return confirm_step(form, title=f"Remove the assignment of {what}", button="Remove", act=act,
                        back=url_for("admin.assignments"), done=url_for("admin.assignments"))
