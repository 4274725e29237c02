"""Which field of a form a service's refusal is about: the one the service names (:attr:`IdpError.field`, its
parameter), which is the form's field of that name unless the form calls it otherwise; for a refusal that names
no field (a missing OU, a taken name), the field whose key words its message has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from flask_wtf import FlaskForm
from wtforms import Field

from idp.admin.ui.forms import show_error
from idp.errors import IdpError


def place(form: FlaskForm, exc: IdpError, names: Mapping[str, Field] | None = None,
          words: Sequence[tuple[str, Field]] = ()) -> None:
    """Show the refusal next to its field, else above the form. ``names``: the form's field for each service
    parameter it calls otherwise. ``words``: for a refusal that names no field, the first field whose key words
    (lower case) its message has; an empty key word matches any message: a last field for whatever the others
    do not claim."""
    field: Field | None
    if exc.field is not None:
        field = (names or {}).get(exc.field)
        if field is None and exc.field in form:
            field = form[exc.field]
    else:
        message = exc.message.lower()
        field = next((f for key, f in words if key in message), None)
    show_error(form, exc, field)
