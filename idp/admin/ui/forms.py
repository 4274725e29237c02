"""What the admin pages' forms share: choices for select fields, a multi-checkbox field, the confirmation form
every deletion posts, the step that changes when an assignment ends, a service's refusal shown next to the
field it is about, the 422 answer of a form posted in vain, and a textarea's lines. Templates render fields with
the macros of ``admin/_form.html``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from flask import flash, redirect, render_template, request
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import BooleanField, Field, SelectMultipleField, StringField
from wtforms.validators import InputRequired, Length, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from idp import clock
from idp.access.assignments import parse_until
from idp.errors import BadRequest, IdpError
from idp.extensions import db

try:  # WTForms 3.3 deprecates (value, label) tuples for SelectChoice
    from wtforms import SelectChoice
except ImportError:  # pragma: no cover - older WTForms
    SelectChoice = None

# What a page view answers: a page, a page with a status (a refused form), or a redirect.
Page = str | tuple[str, int] | BaseResponse

# A form posted with errors is re-rendered with this status, so that clients and tests can tell it was refused.
UNPROCESSABLE = 422


def choices(pairs: Iterable[tuple[str, str]]) -> list[Any]:
    """(value, label) pairs as the ``choices`` of a select, radio or multi-checkbox field."""
    return [SelectChoice(value, label) if SelectChoice is not None else (value, label) for value, label in pairs]


class MultiCheckboxField(SelectMultipleField):  # type: ignore[misc]
    """Several choices as checkboxes (``_form.html`` renders it as a fieldset)."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class ConfirmForm(FlaskForm):  # type: ignore[misc]
    """The second step of a deletion: the box must be ticked, so a stray click or a replayed POST deletes
    nothing. Views set ``confirm.label.text`` to say what goes."""

    confirm = BooleanField("Yes, delete it", validators=[InputRequired("Tick the box to confirm.")])


def show_error(form: FlaskForm, exc: IdpError, field: Field | None = None) -> None:
    """A service's refusal next to ``field``, or above the form when it is about no one field."""
    if field is None:
        form.form_errors.append(exc.message)
    else:  # a field that was not validated has a tuple
        field.errors = [*field.errors, exc.message]


def refused(template: str, **context: Any) -> tuple[str, int]:
    """The page again, with the form's errors, as the answer to a POST that changed nothing."""
    return render_template(template, **context), UNPROCESSABLE


def lines(text: str | None) -> tuple[str, ...]:
    """A textarea's non-blank lines, stripped (one redirect URI, group or role per line)."""
    return tuple(line.strip() for line in (text or "").splitlines() if line.strip())


def subject(field: Field, arg: str, example: str) -> str:
    """What a confirmation step is about (a group member, an app's assignee): the query argument ``arg`` on GET,
    then the form's hidden ``field`` that carries it. A request naming none is refused: no page could say what
    it would change."""
    if request.method == "GET":
        field.data = request.args.get(arg, "")
    value = str(field.data or "").strip()
    if not value:
        raise BadRequest(f"Say which one: ?{arg}={example}.", f"no {arg} given")
    return value


def confirm_step(form: ConfirmForm, *, title: str, back: str, act: Callable[[], str], done: str,
                 warning: str | None = None, button: str = "Delete") -> Page:
    """A deletion's two steps: the confirmation page, then, once its box is ticked, ``act`` (the service call,
    answering the message to flash) and a redirect to ``done``. A service's refusal shows above the form."""
    if form.validate_on_submit():
        try:
            message = act()
        except IdpError as exc:
            db.session.rollback()
            show_error(form, exc)
        else:
            db.session.commit()
            flash(message, "success")
            return redirect(done, 303)
    page = render_template("admin/app_confirm.html", form=form, back=back, action=request.full_path.rstrip("?"),
                           title=title, button=button, warning=warning)
    return (page, UNPROCESSABLE) if request.method == "POST" else page


class UntilForm(FlaskForm):  # type: ignore[misc]
    until = StringField("Until", validators=[Optional(), Length(max=64)],
                        description="A date (2027-03-31: through that day, UTC) or an ISO time; empty: no end. "
                                    "An ended assignment given a later end runs again.")


def ending(until: datetime | None) -> str:
    """How a flash message says when an assignment ends."""
    return f"until {until:%Y-%m-%d %H:%M} UTC" if until is not None else "with no end"


def until_step(*, current: datetime | None, title: str, back: str, change: Callable[[datetime | None], str]) -> Page:
    """When an assignment (of an app or of a permission set) ends: its form, showing the ``current`` end exactly
    (GET), then ``change`` (the service call with the new end, None for none, answering the message to flash)
    and a redirect to ``back``. A value that is no time, or already past, is refused next to the field."""
    if request.method == "POST":
        form = UntilForm()
    else:
        form = UntilForm(formdata=None, data={"until": current.isoformat() if current is not None else ""})
    if form.validate_on_submit():
        text = (form.until.data or "").strip()
        try:
            message = change(parse_until(text, clock.now()) if text else None)
        except IdpError as exc:
            db.session.rollback()
            show_error(form, exc, form.until)
        else:
            db.session.commit()
            flash(message, "success")
            return redirect(back, 303)
    page = render_template("admin/until.html", form=form, title=title, current=current, back=back,
                           ended=current is not None and current <= clock.now(), action=request.full_path.rstrip("?"))
    return (page, UNPROCESSABLE) if request.method == "POST" else page
