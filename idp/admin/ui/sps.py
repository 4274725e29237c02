"""/admin/sps: SAML applications. Register one from its metadata (an uploaded file, pasted XML, a URL) or from
an app preset, edit its NameID format, signing and encryption switches and attribute map, open it to everyone
or assign it to users and groups, delete it. Every change goes through :mod:`idp.saml.providers` and
:mod:`idp.access.assignments`, whose refusals are shown on the form."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import func, or_, select
from wtforms import BooleanField, FieldList, Form, FormField, SelectField, StringField, TextAreaField, URLField
from wtforms.validators import URL, DataRequired, Length, Optional

from idp import clock
from idp.access.claims import ROLES, add_role
from idp.access.decide import AWS_ENTITY_ID
from idp.admin.ui import admin_actor, app_access, bp
from idp.admin.ui.forms import UNPROCESSABLE, ConfirmForm, Page, choices, confirm_step, refused, show_error
from idp.admin.ui.refusals import place
from idp.errors import BadRequest, IdpError
from idp.extensions import db
from idp.saml import presets, providers
from idp.saml.metadata import METADATA_MAX_BYTES, NAMEID_FORMATS
from idp.store import AppAssignment, ServiceProvider

_NAME = StringField("Name", validators=[Optional(), Length(max=255)],
                    description="How the portal and these pages name the app; empty: from the metadata.")

# --- registering ------------------------------------------------------------------------------------------


class FileForm(FlaskForm):  # type: ignore[misc]
    metadata = FileField("Metadata file", validators=[FileRequired("Choose the app's metadata file.")])
    name = _NAME


class XmlForm(FlaskForm):  # type: ignore[misc]
    metadata = TextAreaField("Metadata XML", validators=[DataRequired("Paste the app's metadata.")],
                             render_kw={"rows": 10, "spellcheck": "false"})
    name = _NAME


class UrlForm(FlaskForm):  # type: ignore[misc]
    metadata = URLField("Metadata URL", validators=[
        DataRequired("Give the address of the app's metadata."),
        URL(require_tld=False, message="An http:// or https:// address.")])
    name = _NAME


# Each way to register has its own form on the page; the prefix keeps their fields apart.
_SOURCES: dict[str, type[FlaskForm]] = {"file": FileForm, "xml": XmlForm, "url": UrlForm}


def _register_forms(failed: tuple[str, FlaskForm] | None = None) -> dict[str, FlaskForm]:
    forms = {via: cls(prefix=via, formdata=None) for via, cls in _SOURCES.items()}
    if failed is not None:
        forms[failed[0]] = failed[1]
    return forms


def _metadata_of(via: str, form: FlaskForm) -> tuple[bytes, str | None]:
    """The metadata bytes the form gives, and the source `refresh` may re-read (a URL only)."""
    if via == "file":
        return form.metadata.data.read(METADATA_MAX_BYTES + 1), None
    if via == "xml":
        return str(form.metadata.data).encode("utf-8"), None
    url = str(form.metadata.data).strip()
    return providers.fetch_url(url), url


def _new_page(forms: dict[str, FlaskForm]) -> str:
    try:
        found, problem = presets.load_all(), None
    except IdpError as exc:  # a broken preset file must not take the other ways to register with it
        found, problem = [], exc.message
    return render_template("admin/sps_new.html", forms=forms, presets=found, presets_problem=problem)


@bp.get("/sps/new")
def sp_new() -> str:
    return _new_page(_register_forms())


@bp.post("/sps/new/<via>")
def sp_register(via: str) -> Page:
    if via not in _SOURCES:
        abort(404)
    form = _SOURCES[via](prefix=via)
    if form.validate_on_submit():
        try:
            xml, source = _metadata_of(via, form)
            sp = providers.add(xml, source, providers.SpOptions(name=form.name.data or None), admin_actor())
        except IdpError as exc:  # the parser's reason, a duplicate entity ID, a failed fetch
            db.session.rollback()
            show_error(form, exc, form.metadata)
        else:
            db.session.commit()
            flash(f"Registered {sp.name}. Check its settings, then open it or assign it.", "success")
            return redirect(url_for("admin.sp", sp_id=sp.id), 303)
    return _new_page(_register_forms((via, form))), UNPROCESSABLE


class GroupRoleRow(Form):  # type: ignore[misc]
    group = StringField("Group", validators=[Optional(), Length(max=255)])
    role = StringField("Role", validators=[Optional(), Length(max=1024)])


def _preset_form(preset: presets.Preset) -> type[FlaskForm]:
    """A form with one field per preset parameter (``param_<name>``), and group→role rows when the preset
    names the attribute the app takes roles from."""

    class PresetForm(FlaskForm):  # type: ignore[misc]
        name = _NAME

    for p in preset.parameters:
        required = [DataRequired(f"{p.name} is needed.")] if p.required else [Optional()]
        setattr(PresetForm, f"param_{p.name}", StringField(
            p.name, validators=[*required, Length(max=253)], default=p.default,
            description=p.help or ("a host name" if p.kind == "host" else None)))
    if preset.role_attribute is not None:
        PresetForm.roles = FieldList(FormField(GroupRoleRow), min_entries=3)
    return PresetForm


@bp.route("/sps/presets/<key>", methods=["GET", "POST"])
def sp_preset(key: str) -> Page:
    preset = presets.load(key)
    form = _preset_form(preset)()
    params = [(p, form[f"param_{p.name}"]) for p in preset.parameters]
    if form.validate_on_submit():
        try:
            sp = _register_preset(preset, form, params)
        except IdpError as exc:
            db.session.rollback()
            # The preset's messages name the parameter they are about.
            field = next((f for p, f in params if f"parameter '{p.name}'" in exc.message), None)
            show_error(form, exc, field)
        else:
            db.session.commit()
            flash(f"Registered {sp.name} from the {preset.display_name} preset.", "success")
            return redirect(url_for("admin.sp", sp_id=sp.id), 303)
    if request.method == "POST":
        return refused("admin/sps_preset.html", preset=preset, form=form, params=params)
    return render_template("admin/sps_preset.html", preset=preset, form=form, params=params)


def _register_preset(preset: presets.Preset, form: FlaskForm,
                     params: list[tuple[presets.Parameter, Any]]) -> ServiceProvider:
    given = {p.name: str(f.data).strip() for p, f in params if f.data and str(f.data).strip()}
    rules: list[dict[str, Any]] | None = None
    if preset.role_attribute is not None:
        name, fmt = preset.role_attribute.name, preset.role_attribute.name_format
        for row in form.roles:
            group, role = (row.form.group.data or "").strip(), (row.form.role.data or "").strip()
            if group or role:
                if not (group and role):
                    raise BadRequest("each role row needs both a group and a role")
                rules = add_role(rules if rules is not None else preset.attributes, name, group, role,
                                 name_format=fmt)
    options = providers.SpOptions(name=form.name.data or None,
                                  attribute_map=tuple(rules) if rules is not None else None)
    return presets.register(preset.key, given, options, admin_actor())


# --- listing ----------------------------------------------------------------------------------------------


@bp.get("/sps")
def sps() -> str:
    now = clock.now()
    counts = {app: n for app, n in db.session.execute(
        select(AppAssignment.sp_id, func.count()).where(
            AppAssignment.sp_id.is_not(None), or_(AppAssignment.until.is_(None), AppAssignment.until > now))
        .group_by(AppAssignment.sp_id))}
    return render_template("admin/sps.html", sps=providers.all_providers(), counts=counts, aws=AWS_ENTITY_ID)


# --- one app ----------------------------------------------------------------------------------------------

_NAMEID_CHOICES = [(urn, short) for short, urn in NAMEID_FORMATS.items()]
_NAME_FORMAT_CHOICES = [(urn, short) for short, urn in providers.NAME_FORMATS.items()]


class AttributeRow(Form):  # type: ignore[misc]
    attribute = SelectField("Our attribute", choices=choices([("", "(none)"), *((a, a) for a in providers.ATTRIBUTES)]))
    name = StringField("Name", validators=[Optional(), Length(max=1024)])
    name_format = SelectField("Name format", choices=choices(_NAME_FORMAT_CHOICES))


class RoleRow(Form):  # type: ignore[misc]
    name = StringField("Attribute name", validators=[Optional(), Length(max=1024)])
    name_format = SelectField("Name format", choices=choices(_NAME_FORMAT_CHOICES))
    group = StringField("Group", validators=[Optional(), Length(max=255)])
    role = StringField("Role", validators=[Optional(), Length(max=1024)])


class SpForm(FlaskForm):  # type: ignore[misc]
    name = StringField("Name", validators=[DataRequired("The app needs a name."), Length(max=255)])
    nameid_format = SelectField("NameID format", choices=choices(_NAMEID_CHOICES))
    sign_response = BooleanField("Sign the Response")
    sign_assertion = BooleanField("Sign the Assertion")
    encrypt_assertion = BooleanField("Encrypt the Assertion",
                                     description="Needs an encryption certificate in the app's metadata.")
    require_signed_requests = BooleanField("Require signed AuthnRequests",
                                           description="Needs a signing certificate in the app's metadata.")
    allow_sha1 = BooleanField("Accept SHA-1 signatures from the app", description="Only for apps that can do "
                              "nothing better: SHA-1 is broken.")
    attributes = FieldList(FormField(AttributeRow))
    roles = FieldList(FormField(RoleRow))


_BLANK_ROWS = 2


def _rows(rules: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A release map as the form's two tables: attribute rows, and one row per group→role pair."""
    attributes: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    for rule in rules:
        if rule.get("attribute") == ROLES:
            roles += [{"name": rule.get("name"), "name_format": rule.get("name_format"), "group": group,
                       "role": role} for group, values in (rule.get("roles") or {}).items() for role in values]
        else:
            attributes.append({k: rule.get(k) for k in ("attribute", "name", "name_format")})
    return attributes, roles


def _sp_form(sp: ServiceProvider) -> SpForm:
    attributes, roles = _rows(sp.attribute_map)
    data = {k: getattr(sp, k) for k in ("name", "nameid_format", "sign_response", "sign_assertion",
                                        "encrypt_assertion", "require_signed_requests", "allow_sha1")}
    form = SpForm(formdata=None, data={**data, "attributes": attributes + [{}] * _BLANK_ROWS,
                                       "roles": roles + [{}] * _BLANK_ROWS})
    if sp.nameid_format not in dict(_NAMEID_CHOICES):
        form.nameid_format.choices = choices([*_NAMEID_CHOICES, (sp.nameid_format, sp.nameid_format)])
    return form


def _release_map(form: SpForm) -> list[dict[str, Any]] | None:
    """The map the rows give, each row checked by the service's own rule check (its reason shown on the row);
    None when a row was refused. Blank rows are left out: clearing a row removes it."""
    rules: list[dict[str, Any]] = []
    ok = True
    for row in form.attributes:
        f = row.form
        if not (f.attribute.data or (f.name.data or "").strip()):
            continue
        try:
            rules.append(providers.attribute_rule(f.attribute.data or "", f.name.data or "", f.name_format.data))
        except BadRequest as exc:
            show_error(f, exc, f.name)
            ok = False
    for row in form.roles:
        f = row.form
        name, group, role = ((f[k].data or "").strip() for k in ("name", "group", "role"))
        if not (name or group or role):
            continue
        try:
            if not (group and role):
                raise BadRequest("a role rule needs a group and a role")
            providers.attribute_rule(ROLES, name, f.name_format.data, {group: [role]})
        except BadRequest as exc:
            show_error(f, exc, f.name)
            ok = False
            continue
        rules = add_role(rules, name, group, role, name_format=f.name_format.data)
    return rules if ok else None


def _sp_page(sp: ServiceProvider, *, form: SpForm | None = None, open_form: FlaskForm | None = None,
             assign_form: FlaskForm | None = None, status: int = 200) -> tuple[str, int]:
    blank_open, blank_assign = app_access.forms_for(sp)
    page = render_template(
        "admin/sps_edit.html", sp=sp, info=providers.describe(sp), form=form or _sp_form(sp),
        open_form=open_form or blank_open, assign_form=assign_form or blank_assign,
        holders=app_access.holders(sp), is_ended=app_access.is_ended, assignable=sp.entity_id != AWS_ENTITY_ID,
        refresh_form=FlaskForm(formdata=None))
    return page, status


@bp.route("/sps/<int:sp_id>", methods=["GET", "POST"])
def sp(sp_id: int) -> Page:
    row = providers.get_by_id_or_404(sp_id)
    if request.method == "GET":
        return _sp_page(row)
    form = SpForm()
    rules = _release_map(form) if form.validate_on_submit() else None
    if rules is None:
        return _sp_page(row, form=form, status=UNPROCESSABLE)
    options = providers.SpOptions(
        name=form.name.data.strip(), nameid_format=form.nameid_format.data,
        **{k: bool(form[k].data) for k in ("sign_response", "sign_assertion", "encrypt_assertion",
                                           "require_signed_requests", "allow_sha1")},
        attribute_map=tuple(rules))
    try:
        changed = providers.update(row.entity_id, options, admin_actor())
    except IdpError as exc:
        db.session.rollback()
        place(form, exc)
        return _sp_page(row, form=form, status=UNPROCESSABLE)
    db.session.commit()
    flash(f"Saved {row.name}: changed {', '.join(k.replace('_', ' ') for k in changed)}." if changed
          else "Nothing changed.", "success")
    return redirect(url_for("admin.sp", sp_id=sp_id), 303)


@bp.post("/sps/<int:sp_id>/refresh")
def sp_refresh(sp_id: int) -> Page:
    """Re-read the metadata from the URL (or preset file) it came from; the settings stay."""
    row = providers.get_by_id_or_404(sp_id)  # a form with only its CSRF token, which CSRFProtect has checked
    try:
        changed = providers.refresh(row.entity_id, admin_actor())
    except IdpError as exc:
        db.session.rollback()
        flash(f"The metadata was not re-read: {exc.message}", "error")
    else:
        db.session.commit()
        flash(f"The metadata of {row.name} " + ("was updated." if changed else "has not changed."), "success")
    return redirect(url_for("admin.sp", sp_id=sp_id), 303)


def _app(sp_id: int) -> app_access.App:
    row = providers.get_by_id_or_404(sp_id)
    return app_access.App(row, url_for("admin.sp", sp_id=sp_id), partial(_sp_page, row))


@bp.post("/sps/<int:sp_id>/access")
def sp_open(sp_id: int) -> Page:
    return app_access.open_view(_app(sp_id))


@bp.post("/sps/<int:sp_id>/assign")
def sp_assign(sp_id: int) -> Page:
    return app_access.assign_view(_app(sp_id))


@bp.route("/sps/<int:sp_id>/unassign", methods=["GET", "POST"])
def sp_unassign(sp_id: int) -> Page:
    return app_access.unassign_view(_app(sp_id))


@bp.route("/sps/<int:sp_id>/assignments/<int:assignment_id>", methods=["GET", "POST"])
def sp_until(sp_id: int, assignment_id: int) -> Page:
    return app_access.until_view(_app(sp_id), assignment_id)


@bp.route("/sps/<int:sp_id>/delete", methods=["GET", "POST"])
def sp_delete(sp_id: int) -> Page:
    row = providers.get_by_id_or_404(sp_id)
    form = ConfirmForm()
    form.confirm.label.text = f"Yes, delete {row.name} ({row.entity_id})"

    def act() -> str:
        providers.remove(row.entity_id, admin_actor())
        return f"Deleted {row.name}."

    return confirm_step(
        form, title=f"Delete {row.name}", back=url_for("admin.sp", sp_id=sp_id), act=act, done=url_for("admin.sps"),
        warning="Its users can no longer sign in to it; their persistent NameIDs for it are deleted too.")
