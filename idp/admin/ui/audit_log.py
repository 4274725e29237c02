"""/admin/audit: the audit log, newest first, filtered by user, actor, type, outcome and time, paged. The
same rows as GET /api/v1/audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import render_template, request
from flask_wtf import FlaskForm
from sqlalchemy import select
from werkzeug.wrappers import Response as BaseResponse
from wtforms import Field, SelectField, StringField
from wtforms.validators import Length, Optional

from idp.admin.ui import bp
from idp.admin.ui.forms import choices, refused
from idp.admin.ui.paging import paged
from idp.audit import query as audit_query
from idp.extensions import db
from idp.store import AuditRecord

_TIME_HINT = "A date (2031-05-02) or a time (2031-05-02 09:30), in UTC unless it names a zone."


class AuditFilter(FlaskForm):  # type: ignore[misc]
    class Meta:
        csrf = False  # a GET filter changes nothing

    username = StringField("User", validators=[Optional(), Length(max=255)],
                           description="The user the event is about.")
    actor = StringField("Actor", validators=[Optional(), Length(max=255)],
                        description="Who acted: admin:NAME, token:NAME, cli:NAME ...")
    type = SelectField("Type", validate_choice=False)
    outcome = SelectField("Outcome", choices=choices([("", "Any"), ("success", "Success"), ("failure", "Failure")]),
                          default="")
    # Text, not datetime-local: a bare date must come back as typed, meaning its whole day.
    since = StringField("Since", validators=[Optional(), Length(max=64)], description=_TIME_HINT)
    until = StringField("Until", validators=[Optional(), Length(max=64)],
                        description=_TIME_HINT + " A date includes that whole day.")


def _moment(field: Field, *, end: bool) -> datetime | None:
    """The field's time (UTC when it names no zone), None when empty; a bare date is the start of that day, or as
    an ``end`` the start of the next. A value that is no time goes to the field's errors. The zone is kept:
    0001-01-01T00:00+05:00 has no UTC time, and :func:`idp.audit.query` knows what it stands for."""
    text = (field.data or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
        if end and len(text) == len("2031-05-02"):
            value += timedelta(days=1)
    except ValueError:
        field.errors = [*field.errors, f"Not a date or a time: {_TIME_HINT}"]
        return None
    except OverflowError:  # through 9999-12-31: no end
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@bp.get("/audit")
def audit() -> str | tuple[str, int] | BaseResponse:
    form = AuditFilter(request.args)
    form.type.choices = choices([("", "Any"), *((t, t) for t in db.session.scalars(
        select(AuditRecord.type).distinct().order_by(AuditRecord.type)))])
    form.validate()
    since, until = _moment(form.since, end=False), _moment(form.until, end=True)
    if since is not None and until is not None and until <= since:
        form.until.errors = [*form.until.errors, "Until must be later than since."]
    if form.errors:
        return refused("admin/audit.html", form=form, page=None)
    given = {column: (form[column].data or "").strip() or None for column in ("username", "actor", "type", "outcome")}
    page = paged(audit_query(username=given["username"], actor=given["actor"], type=given["type"],
                             outcome=given["outcome"], since=since, until=until))
    return render_template("admin/audit.html", form=form, page=page)
