"""Which field of a form a service's refusal is about, told by the words its message uses: the services name
what they refuse ("invalid email address ...", "the session duration is 1 to 12 hours ...")."""

from __future__ import annotations

from collections.abc import Sequence

from flask_wtf import FlaskForm
from wtforms import Field

from idp.admin.ui.forms import show_error
from idp.errors import IdpError


def place(form: FlaskForm, exc: IdpError, fields: Sequence[tuple[str, Field]]) -> None:
    """Show the refusal next to the first field whose key words (lower case) its message has, else above the
    form. An empty key word matches any message: a last field for whatever the others do not claim."""
    message = exc.message.lower()
    show_error(form, exc, next((f for words, f in fields if words in message), None))
